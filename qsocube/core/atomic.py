"""Atomic file writes and the ownership of what qsocube writes.

Every file qsocube writes goes through here (the cube, models, state, report, catalogues,
encode outputs and the simulator's FITS files): it is written to a temporary beside its
target, flushed to disk and renamed into place. An interrupted run leaves either the
previous file or the new one under the target name, never a half-written one.

Ownership. qsocube deletes only what it recognisably created, and says what it removed:

* a **temporary** is named ``.NAME.qsocube-HOST-PID.partial`` (``temporary_beside``): the
  writer's host and process id are in its name, so ``remove_stale_partials`` removes only
  temporaries of qsocube processes on this host that are no longer running, never a
  ``.partial`` file of another program or of a run still in progress;
* a **folder** a tool creates carries a marker, ``.qsocube-owner.json``, written before
  anything else, naming the tool and the file patterns it writes there
  (``claim_folder``); ``remove_owned`` deletes only files of those patterns in a folder
  that carries that tool's marker, and a tool refuses to write into a non-empty folder
  that is not its own.

Publishing refuses to clobber: ``publish`` (and ``atomic_path(..., overwrite=False)``)
links the finished temporary to the target, which fails if anything appeared under the
target name meanwhile, and ``exclusive`` holds a lock per output so that a second writer
to the same output fails at once with a clear message instead of replacing the first's.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from qsocube.core.errors import UsageError

PARTIAL = ".partial"
OWNER_TAG = "qsocube"
LOCK_SUFFIX = f".{OWNER_TAG}.lock"
OWNER_MARKER = ".qsocube-owner.json"
_TEMPORARY = re.compile(rf"^\.(?P<name>.+)\.{OWNER_TAG}-(?P<host>[^/]+)-(?P<pid>\d+)"
                        rf"{re.escape(PARTIAL)}$")

Report = Callable[[str], None]


class BusyError(UsageError):
    """Another qsocube run is writing the same output."""


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "localhost"


def temporary_beside(target: Path) -> Path:
    """The temporary of ``target`` for this process: hidden, tagged with this host and pid."""
    target = Path(target)
    return target.with_name(f".{target.name}.{OWNER_TAG}-{_host()}-{os.getpid()}{PARTIAL}")


def writer_of(path: Path) -> tuple[str, str, int] | None:
    """(target name, host, pid) of a qsocube temporary; None for any other file."""
    match = _TEMPORARY.match(Path(path).name)
    if match is None:
        return None
    return match["name"], match["host"], int(match["pid"])


def process_alive(pid: int) -> bool:
    """True if a process with this id runs on this host (or cannot be told apart from one)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(path: Path) -> bool:
    """A qsocube temporary whose writer, on this host, is no longer running."""
    writer = writer_of(path)
    return writer is not None and writer[1] == _host() and not process_alive(writer[2])


def remove_stale_partials(folder: Path, report: Report | None = None, *,
                          target: Path | None = None, recursive: bool = True) -> list[Path]:
    """Delete the temporaries that dead qsocube runs on this host left in ``folder`` (only
    those of ``target`` if given; below ``folder`` too if ``recursive``); each removal is
    reported. Other ``.partial`` files, and those of live runs or other hosts, stay."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pattern = f".*.{OWNER_TAG}-*{PARTIAL}"
    candidates = folder.rglob(pattern) if recursive else folder.glob(pattern)
    removed = []
    for path in sorted(candidates):
        writer = writer_of(path)
        if writer is None or (target is not None and writer[0] != Path(target).name):
            continue
        if is_stale(path) and (path.is_file() or path.is_symlink()):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
                if report:
                    report(f"removed {path}: a temporary left by an interrupted qsocube run "
                           f"(pid {writer[2]})")
    return removed


def fsync_and_replace(tmp: Path, target: Path) -> None:
    """Flush ``tmp`` to disk and rename it over ``target`` (for writers that manage their
    own temporary, such as the cube writer)."""
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, target)


def publish(tmp: Path, target: Path, overwrite: bool = True) -> None:
    """Flush ``tmp`` and put it in place as ``target``: replacing whatever is there with
    ``overwrite``, else only if nothing is there (BusyError otherwise; ``tmp`` is kept
    for the caller to remove)."""
    if overwrite:
        fsync_and_replace(tmp, target)
        return
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    try:
        os.link(tmp, target)  # atomic, and fails if the name is taken
    except FileExistsError:
        raise BusyError(f"{target}: was created by someone else while this run was writing "
                        "it; it is left as it is (pass --overwrite to replace it)") from None
    except OSError as exc:  # a file system without hard links
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(target):
            raise BusyError(f"{target}: was created by someone else while this run was "
                            "writing it; it is left as it is") from None
        os.rename(tmp, target)
        return
    os.unlink(tmp)


@contextlib.contextmanager
def atomic_path(target: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; put it in place on success (``publish``)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_beside(target)
    try:
        yield tmp
        publish(tmp, target, overwrite)
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


# ---------------------------------------------------------------- one writer per output

_HELD: dict[str, list] = {}  # lock path -> [fd, depth]: re-entrant within a process


def lock_path(target: Path) -> Path:
    """The lock of an output: ``.NAME.qsocube.lock`` beside a file, ``.qsocube.lock`` in a
    folder."""
    target = Path(target)
    if target.is_dir():
        return target / f".{OWNER_TAG}.lock"
    return target.with_name(f".{target.name}{LOCK_SUFFIX}")


@contextlib.contextmanager
def exclusive(target: str | Path, what: str = "") -> Iterator[None]:
    """Hold the one-writer lock of ``target`` (an output file or folder) while writing it.

    A second qsocube run asking for the same lock fails at once with ``BusyError`` naming
    the holder. The lock is an advisory ``flock`` on ``.NAME.qsocube.lock`` beside the
    target: the kernel releases it when its holder dies (even by SIGKILL), and the file is
    removed on exit. Re-entrant within one process.
    """
    path = lock_path(Path(target))
    key = str(path.resolve()) if path.parent.exists() else str(path)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another run"
            os.close(fd)
            raise BusyError(f"{target}: another qsocube run ({holder}) is writing "
                            f"{what or 'it'}; wait for it to finish or choose another "
                            "output") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else the holder we waited for removed it: lock the new file
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {_host()}".encode())
    _HELD[key] = [fd, 1]
    try:
        yield
    finally:
        _HELD.pop(key, None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


# ---------------------------------------------------------------- folders a tool owns

def _marker(folder: Path) -> dict | None:
    try:
        record = json.loads((Path(folder) / OWNER_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def owner_of(folder: str | Path) -> str | None:
    """The tool whose marker the folder carries, or None."""
    record = _marker(Path(folder))
    return str(record.get("tool")) if record else None


def claim_folder(folder: str | Path, tool: str, patterns: Iterable[str], *,
                 legacy: Iterable[str] = ()) -> bool:
    """Make ``folder`` ``tool``'s before writing anything into it.

    A folder that does not exist or is empty is created and marked (``OWNER_MARKER``:
    the tool and the ``patterns``, relative globs of the files it writes there); a folder
    marked by the same tool is accepted, as is one holding any of the ``legacy`` files
    (what an older version left as its sign, such as a release's ``.state/stages.json``),
    which is then marked. Any other folder is refused with a UsageError, so nothing in it
    is replaced or deleted. Returns True if the folder already belonged to the tool.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder}: exists and is not a folder")
    record = _marker(folder)
    owned = record is not None and record.get("tool") == tool
    if record is not None and not owned:
        raise UsageError(f"{folder}: belongs to 'qsocube {record.get('tool')}', not to "
                         f"'qsocube {tool}'; choose another folder")
    if not owned and folder.is_dir() and any(folder.iterdir()):
        if not any((folder / name).exists() for name in legacy):
            raise UsageError(f"{folder}: is not empty and was not created by 'qsocube {tool}'"
                             "; choose a new or empty folder (nothing in it was changed)")
        owned = True
    patterns = list(patterns)
    if record is None or record.get("patterns") != patterns:
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / OWNER_MARKER, json.dumps(
            {"tool": tool, "patterns": patterns, "software": "qsocube",
             "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1) + "\n")
    return owned


def remove_owned(folder: str | Path, tool: str, report: Report | None = None) -> list[Path]:
    """Delete the files ``tool`` writes in ``folder`` (the patterns of its marker), only if
    the folder carries that tool's marker; report what was removed. Returns the paths."""
    folder = Path(folder)
    record = _marker(folder)
    if record is None or record.get("tool") != tool:
        raise UsageError(f"{folder}: not created by 'qsocube {tool}'; refusing to delete "
                         "anything in it")
    removed: list[Path] = []
    for pattern in record.get("patterns", []):  # in the order given to claim_folder
        if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
            continue  # a marker edited by hand: never outside the folder
        matched = sorted(p for p in folder.glob(pattern) if p.is_file() or p.is_symlink())
        for path in matched:
            path.unlink()
        removed += matched
        if report and matched:
            names = ", ".join(str(p.relative_to(folder)) for p in matched[:3])
            more = f" and {len(matched) - 3} more" if len(matched) > 3 else ""
            report(f"removed {len(matched)} file(s) that 'qsocube {tool}' wrote in {folder} "
                   f"earlier: {names}{more}")
    return removed
