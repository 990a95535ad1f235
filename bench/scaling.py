"""Build throughput, peak memory and disk use against survey size.

One survey of the largest size is simulated once; the build then reads the first n
files of it for each size, in a fresh process, on the default path (local processes, one
per core), from a cold page cache where the kernel lets us drop it (root), so that these
rows are what a survey on disk costs. A straight line through (n, seconds) extrapolates
to DR16Q's 750,414 quasars. Each row's bound is the disk: the rate at which the same
files' bytes are read cold (two threads), measured just before its build.

At the smallest size, with the files in the page cache (CPU-bound), the same build also
runs in one process (the reference) and on a two-worker Dask LocalCluster.

Peak memory is measured directly from /proc: the writer's own VmHWM (peak resident set),
and for the worker processes the largest VmHWM any descendant of the build process
reached, sampled while the build runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

SIZES = {"small": (1000, 2000, 4000), "full": (25_000, 50_000, 100_000)}
DR16Q_QUASARS = 750_414
WORKERS = 2
MODES = ("processes", "serial", "dask")

BUILD_SCRIPT = """
import json, os, sys, threading, time
from pathlib import Path
from qsocube.builder.build import BuildConfig, build_cube
from qsocube.core.inputs import by_name, find_inputs


def descendants_peak_kb(root, stop, peak):
    while not stop.is_set():
        parents = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = open(f"/proc/{entry}/stat").read()
                    parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
        for pid in parents:
            ancestor = parents.get(pid)
            while ancestor not in (None, 0, 1, root):
                ancestor = parents.get(ancestor)
            if ancestor != root:
                continue
            try:
                for line in open(f"/proc/{pid}/status"):
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]))
            except OSError:
                pass
        stop.wait(0.25)


if __name__ == "__main__":  # worker processes are spawned and re-import this file
    survey, out = Path(sys.argv[1]), Path(sys.argv[3])
    n, mode, workers = int(sys.argv[2]), sys.argv[4], int(sys.argv[5])
    paths = by_name(find_inputs([survey / "spectra"]))[:n]
    options = {"processes": {"processes": workers}, "serial": {},
               "dask": {"workers": workers}}[mode]
    stop, peak = threading.Event(), [0]
    sampler = threading.Thread(target=descendants_peak_kb, args=(os.getpid(), stop, peak),
                               daemon=True)
    sampler.start()
    start = time.perf_counter()
    summary = build_cube(paths, out, catalog_path=survey / "DR16Q_v4.fits",
                         config=BuildConfig(batch_size=512), report=lambda _: None, **options)
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a process started by a
    # big parent (python -m bench) would report the parent's resident set as its own
    own = next(int(line.split()[1]) for line in open("/proc/self/status")
               if line.startswith("VmHWM:"))
    print(json.dumps({"seconds": seconds, "accepted": summary["accepted"],
                      "writer_peak_rss_mb": own / 1024, "worker_peak_rss_mb": peak[0] / 1024}))
"""


def _drop_page_cache() -> bool:
    """Ask the kernel to drop clean cached pages (needs root); False if not allowed."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
        return True
    except OSError:
        return False


def _read_all(files: list[Path]) -> float:
    """Seconds to read every file's bytes (two threads: the build reads in two processes)."""
    start = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        for _ in pool.map(Path.read_bytes, files, chunksize=64):
            pass
    return time.perf_counter() - start


def _build(scratch: Path, survey: Path, n: int, mode: str) -> tuple[dict, float]:
    out = scratch / f"cube-{n}-{mode}.h5"
    script = scratch / "build_subset.py"
    script.write_text(BUILD_SCRIPT)
    result = subprocess.run([sys.executable, str(script), str(survey), str(n), str(out), mode,
                             str(WORKERS)], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    cube_mb = out.stat().st_size / 1e6
    out.unlink()
    return measured, cube_mb


def run(size: str = "small", work: Path | None = None) -> dict:
    from qsocube.builder.simulate import simulate_survey

    sizes = SIZES[size]
    scratch = Path(work or tempfile.mkdtemp(prefix="qsocube-scaling-"))
    survey = scratch / "survey"
    try:
        start = time.perf_counter()
        if not (survey / "DR16Q_v4.fits").exists():
            simulate_survey(int(max(sizes) * 1.02), 7, survey, overwrite=True,
                            progress=lambda _: None)
        simulate_seconds = time.perf_counter() - start
        files = sorted((survey / "spectra").glob("spec-*.fits"))
        paths = {}
        _read_all(files[:sizes[0]])  # into the page cache: these runs compare CPU paths
        for mode in MODES:
            measured, _ = _build(scratch, survey, sizes[0], mode)
            paths[mode] = {"seconds": round(measured["seconds"], 1),
                           "files_per_s": round(sizes[0] / measured["seconds"]),
                           "worker_peak_rss_mb": round(measured["worker_peak_rss_mb"])}
        cold = _drop_page_cache()
        rows = []
        for n in sizes:  # each row: the same files read cold (the bound), then built cold
            input_bytes = sum(p.stat().st_size for p in files[:n])
            _drop_page_cache()
            disk_mb_per_s = input_bytes / 1e6 / _read_all(files[:n])
            _drop_page_cache()
            measured, cube_mb = _build(scratch, survey, n, MODES[0])
            rows.append({"spectra_files": n, **{k: round(v, 1) for k, v in measured.items()},
                         "files_per_s": round(n / measured["seconds"]),
                         "input_MB": round(input_bytes / 1e6),
                         "input_MB_per_s": round(input_bytes / 1e6 / measured["seconds"]),
                         "disk_read_MB_per_s": round(disk_mb_per_s),
                         "fraction_of_disk_bound": round(
                             input_bytes / 1e6 / measured["seconds"] / disk_mb_per_s, 2),
                         "cube_MB": round(cube_mb, 1)})
        n_files = np.array([r["spectra_files"] for r in rows], float)
        seconds = np.array([r["seconds"] for r in rows])
        slope, intercept = np.polyfit(n_files, seconds, 1)
        dr16q_hours = (intercept + slope * DR16Q_QUASARS) / 3600
        cube_per_spectrum = rows[-1]["cube_MB"] / rows[-1]["accepted"]
        input_per_file = rows[-1]["input_MB"] / rows[-1]["spectra_files"]
        return {
            "stage": "scaling", "processes": WORKERS, "simulate_seconds": round(simulate_seconds),
            "paths_at_smallest_size": paths,
            "ratio_vs_reference": round(paths["serial"]["seconds"]
                                        / paths["processes"]["seconds"], 2),
            "rows_from_cold_cache": cold, "rows": rows,
            "seconds_per_1000_files": round(1000 * slope, 2),
            "extrapolated_DR16Q_build_hours": round(dr16q_hours, 2),
            "extrapolated_DR16Q_build_core_hours": round(WORKERS * dr16q_hours, 2),
            "extrapolated_DR16Q_cube_GB": round(cube_per_spectrum * DR16Q_QUASARS / 1e3, 1),
            "extrapolated_DR16Q_input_GB": round(input_per_file * DR16Q_QUASARS / 1e3, 1),
            "peak_writer_rss_MB": max(r["writer_peak_rss_mb"] for r in rows),
            "peak_worker_rss_MB": max(r["worker_peak_rss_mb"] for r in rows),
        }
    finally:
        if work is None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "small",
                         Path(sys.argv[2]) if len(sys.argv) > 2 else None), indent=1))
