"""Render a report in headless Chromium: did every image load? (used by the tests).

Runs Debian's ``chromium`` with a throw-away profile and everything that would touch the
network switched off, dumps the DOM after the page's load handler has marked each image
with its natural width, and takes a full-page screenshot.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=10000")


def _chromium(args: list[str], timeout: float) -> str:
    with tempfile.TemporaryDirectory(prefix="qsocube-chromium-") as profile:
        done = subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        tail = " ".join(done.stderr.split())[-300:]
        raise RuntimeError(f"chromium exited with {done.returncode}: {tail}")
    return done.stdout


def render_check(index: Path, screenshot: Path | None = None, height: int = 4000,
                 timeout: float = 90.0) -> dict:
    """{'images': [(src, natural width)], 'loaded': n, 'total': n, 'screenshot': path}."""
    if not CHROMIUM.is_file():
        raise FileNotFoundError(f"{CHROMIUM} not found (Debian package 'chromium')")
    url = index.resolve().as_uri()
    dom = _chromium(["--dump-dom", url], timeout)
    images = [(src, int(width)) for src, width in re.findall(
        r'<img[^>]*?src="([^"]+)"[^>]*?data-natural-width="(\d+)"', dom)]
    marked = re.search(r'data-images="(\d+)/(\d+)"', dom)
    result = {"images": images, "n_img_tags": len(re.findall(r"<img\b", dom)),
              "loaded": int(marked.group(1)) if marked else 0,
              "total": int(marked.group(2)) if marked else -1, "screenshot": None}
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        tmp = screenshot.with_name(f".{screenshot.name}.partial.png")
        _chromium([f"--screenshot={tmp}", f"--window-size=1280,{height}", url], timeout)
        shutil.move(tmp, screenshot)
        result["screenshot"] = screenshot
    return result
