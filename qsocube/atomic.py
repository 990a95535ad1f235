"""Atomic file writes: write beside the target, then rename over it.

An interrupted run leaves either the previous file or the new one under the target
name, never a half-written one; stale temporaries carry the ``.partial`` suffix.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

PARTIAL = ".partial"


def temporary_beside(target: Path) -> Path:
    return target.with_name(f".{target.name}.{os.getpid()}{PARTIAL}")


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it into place on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_beside(target)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def copy_on_write(target: str | Path) -> Iterator[Path]:
    """Yield a private copy of ``target`` to modify; it replaces ``target`` on success.

    Readers holding the old file keep a valid (unlinked) file until they close it.
    """
    target = Path(target)
    with atomic_path(target) as tmp:
        shutil.copyfile(target, tmp)
        yield tmp


def write_text_atomic(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def remove_stale_partials(folder: Path) -> list[Path]:
    """Delete temporaries that an interrupted run left behind."""
    stale = sorted(folder.rglob(f".*{PARTIAL}")) if folder.exists() else []
    for path in stale:
        path.unlink()
    return stale
