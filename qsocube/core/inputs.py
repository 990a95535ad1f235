"""Finding input files: the one rule of ``qsocube build`` and ``qsocube encode``.

Each source is a file, a folder or a glob pattern:

* a **file** is taken whatever its name (encode classifies it by its suffix);
* a **folder** is searched recursively for SDSS spec-lite names, ``spec-*.fits``,
  ``spec-*.fits.gz`` and ``spec-*.fit``, so the catalogue and truth table beside a survey's
  spectra are never mistaken for spectra; a folder with none is an error;
* a **pattern** (``*``, ``?``, ``[``; ``**`` recurses) is taken as every regular file it
  matches; a pattern that matches none is an error, as is a path that does not exist.

Folders and patterns expand in path order; a file reached twice (by two sources, or by
two names) is kept once, where it first appeared. The build then sorts by file name
(``by_name``) so the cube's row order does not depend on the file system; encode keeps
this order, which is the order of its output rows.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

from qsocube.core.errors import MissingInputError

SPECTRUM_PATTERNS = ("spec-*.fits", "spec-*.fits.gz", "spec-*.fit")


def _expand(source: str) -> list[Path]:
    path = Path(source)
    if path.is_dir():
        found = sorted({p for pattern in SPECTRUM_PATTERNS for p in path.rglob(pattern)
                        if p.is_file()})
        if not found:
            raise MissingInputError(f"{source}: folder holds no spectrum files "
                                    f"({', '.join(SPECTRUM_PATTERNS)})")
        return found
    if path.exists():
        return [path]
    if glob.has_magic(source):
        found = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
        if not found:
            raise MissingInputError(f"{source}: pattern matches no files")
        return found
    raise MissingInputError(f"{source}: no such file, folder or matching files")


def find_inputs(sources: Iterable[str | Path]) -> list[Path]:
    """Every input file of ``sources`` in the order above, each once."""
    found: dict[Path, Path] = {}
    for source in sources:
        for path in _expand(str(source)):
            found.setdefault(path.resolve(), path)
    return list(found.values())


def by_name(paths: Iterable[Path]) -> list[Path]:
    """Paths sorted by file name, then by full path: the build's row order."""
    return sorted(paths, key=lambda p: (p.name, str(p)))
