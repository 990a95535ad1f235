"""Finding input spectra and accounting for every one of them."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

SPECTRUM_PATTERNS = ("spec-*.fits", "spec-*.fits.gz")


def find_spectra(sources: Iterable[str | Path]) -> list[Path]:
    """Spectrum files from files, folders (searched recursively) and glob patterns, sorted
    by name so that the cube's row order does not depend on the file system."""
    found: dict[str, Path] = {}
    for source in sources:
        text = str(source)
        path = Path(text)
        if path.is_dir():
            matches = [p for pattern in SPECTRUM_PATTERNS for p in path.rglob(pattern)]
        elif path.is_file():
            matches = [path]
        else:
            matches = [Path(p) for p in glob.glob(text, recursive=True)]
            if not matches:
                raise FileNotFoundError(f"{text}: no such file, folder or matching files")
        for match in matches:
            found[str(match.resolve())] = match
    return sorted(found.values(), key=lambda p: (p.name, str(p)))
