"""Finding input files: the one rule of ``qsocube build`` and ``qsocube encode``.

Each source is a file, a folder or a glob pattern:

* a **file** is taken whatever its name (encode classifies it by its suffix);
* a **folder** is searched recursively for SDSS spec-lite names, ``spec-*.fits``,
  ``spec-*.fits.gz`` and ``spec-*.fit``, so the catalogue and truth table beside a survey's
  spectra are never mistaken for spectra; a folder with none is an error. Every entry with
  such a name is an input, even a folder, a FIFO or a broken link: the reader rejects
  what is not a regular file (``not_a_regular_file``), so it is accounted for;
* a **pattern** (``*``, ``?``, ``[``; ``**`` recurses) is taken as everything but folders it
  matches; a pattern that matches none is an error, as is a path that does not exist.

Folders and patterns expand in path order; a file reached twice (by two sources, or by
two names) is kept once, where it first appeared. The build then sorts by file name
(``by_name``) so the cube's row order does not depend on the file system; encode keeps
this order, which is the order of its output rows.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

from qsocube.core.errors import MissingInputError

SPECTRUM_PATTERNS = ("spec-*.fits", "spec-*.fits.gz", "spec-*.fit")


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # e.g. a name too long
        return False


def _expand(source: str) -> list[Path]:
    path = Path(source)
    if _is_dir(path):
        # every entry with a spectrum's name, folders, FIFOs and broken links included: the
        # reader rejects what is not a regular file, so each is accounted for
        found = sorted({p for pattern in SPECTRUM_PATTERNS for p in path.rglob(pattern)})
        if not found:
            raise MissingInputError(f"{printable(source)}: folder holds no spectrum files "
                                    f"({', '.join(SPECTRUM_PATTERNS)})")
        return found
    if os.path.lexists(path):
        return [path]
    if glob.has_magic(source):
        found = sorted(Path(p) for p in glob.glob(source, recursive=True)
                       if not _is_dir(Path(p)))
        if not found:
            raise MissingInputError(f"{printable(source)}: pattern matches no files")
        return found
    raise MissingInputError(f"{printable(source)}: no such file, folder or matching files")


def find_inputs(sources: Iterable[str | Path]) -> list[Path]:
    """Every input file of ``sources`` in the order above, each once."""
    found: dict[str, Path] = {}
    for source in sources:
        for path in _expand(str(source)):
            # realpath, not resolve(): a link that loops must not raise here
            found.setdefault(os.path.realpath(path), path)
    return list(found.values())


def printable(text: object) -> str:
    """``text`` (a path, a name, a message) as valid UTF-8: bytes of a file name that are
    not UTF-8 (Python's surrogate escapes) become ``\\xNN``, so the name can be stored in
    HDF5, FITS or CSV and printed."""
    text = str(text)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def same_file(a: str | Path, b: str | Path) -> bool:
    """True if the two paths name one file (after links), existing or not."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def is_among(target: str | Path, candidates: Iterable[str | Path | None]) -> bool:
    """True if ``target`` is one of ``candidates`` (the same file after links; a target
    that does not exist yet is none of them unless a name resolves to it)."""
    try:
        info = os.stat(target)
    except OSError:
        real = os.path.realpath(target)
        return any(c is not None and os.path.realpath(c) == real for c in candidates
                   if c is not None and os.path.islink(c))
    for candidate in candidates:
        if candidate is None:
            continue
        try:
            other = os.stat(candidate)
        except OSError:
            continue
        if (other.st_dev, other.st_ino) == (info.st_dev, info.st_ino):
            return True
    return False


def by_name(paths: Iterable[Path]) -> list[Path]:
    """Paths sorted by file name, then by full path: the build's row order."""
    return sorted(paths, key=lambda p: (p.name, str(p)))
