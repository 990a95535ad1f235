"""Atomic file writes: write beside the target, fsync, then rename over it.

Every file qsocube writes goes through here (the cube, models, state, report, catalogues,
encode outputs and the simulator's FITS files). An interrupted run leaves either the
previous file or the new one under the target name, never a half-written one, and a
renamed file's bytes are on disk first; stale temporaries carry the ``.partial`` suffix
and ``remove_stale_partials`` clears them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

PARTIAL = ".partial"


def temporary_beside(target: Path) -> Path:
    """The temporary name of ``target`` for this process: hidden, ending in ``.partial``."""
    return target.with_name(f".{target.name}.{os.getpid()}{PARTIAL}")


def fsync_and_replace(tmp: Path, target: Path) -> None:
    """Flush ``tmp`` to disk and rename it over ``target`` (for writers that manage their
    own temporary, such as the cube writer)."""
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, target)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it into place on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_beside(target)
    try:
        yield tmp
        fsync_and_replace(tmp, target)
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
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_bytes_atomic(target: str | Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def remove_stale_partials(folder: Path) -> list[Path]:
    """Delete temporaries that an interrupted run left behind."""
    stale = sorted(folder.rglob(f".*{PARTIAL}")) if folder.exists() else []
    for path in stale:
        path.unlink()
    return stale
