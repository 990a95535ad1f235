"""Find and classify the inputs of ``qsocube encode`` before any of them is read.

Inputs are spec-lite FITS files (or folders and globs of them: found by
``qsocube.core.inputs``, the build's rule), a qsocube cube (its flux), or
arrays already on the model's grid: an HDF5 file with ``flux`` and ``ivar`` (spectrum, pixel)
datasets, or a ``.npy`` file holding ``np.stack([flux, ivar])`` of shape (2, n, n_pix).
Whole-input problems known before any work (a path that does not exist, a cube or array
file on another grid) are ``UsageError``; a spectrum that fails later gets a flagged row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from qsocube.core.errors import UsageError
from qsocube.core.grid import WavelengthGrid
from qsocube.core.inputs import find_inputs, printable

FITS_SUFFIXES = (".fits", ".fits.gz", ".fit")
H5_SUFFIXES = (".h5", ".hdf5", ".nc")


@dataclass
class Source:
    kind: str  # "fits" | "cube" | "arrays_h5" | "npy"
    path: Path
    count: int  # spectra in this input


def is_fits(path: Path) -> bool:
    return path.name.lower().endswith(FITS_SUFFIXES)


def _check_grid_file(path: Path, n: int, n_pix: int, grid: WavelengthGrid,
                     wavelength: np.ndarray | None, grid_sha: str | None) -> None:
    if grid_sha is not None and grid_sha != grid.sha256:
        raise UsageError(f"{path}: grid differs: input grid_sha256 {grid_sha[:12]}, the model's "
                         f"{grid.sha256[:12]} (use a model of the same release)")
    if n_pix != grid.n_pix:
        raise UsageError(f"{path}: {n_pix} pixels per spectrum, the model's grid has "
                         f"{grid.n_pix}")
    if wavelength is not None and not np.allclose(wavelength, grid.wavelength, rtol=1e-6):
        raise UsageError(f"{path}: its 'wavelength' differs from the model's grid")


def _describe_h5(path: Path, grid: WavelengthGrid) -> Source:
    try:
        with h5py.File(path, "r") as h5:
            if "flux" not in h5 or "ivar" not in h5:
                raise UsageError(f"{path}: HDF5 input needs 'flux' and 'ivar' datasets")
            n, n_pix = h5["flux"].shape if h5["flux"].ndim == 2 else (0, -1)
            if h5["ivar"].shape != h5["flux"].shape:
                raise UsageError(f"{path}: 'flux' {h5['flux'].shape} and 'ivar' "
                                 f"{h5['ivar'].shape} differ in shape")
            wave = h5["wavelength"][...] if "wavelength" in h5 else None
            sha = h5.attrs.get("grid_sha256")
            _check_grid_file(path, n, n_pix, grid, wave, None if sha is None else str(sha))
            kind = "cube" if "mask" in h5 and "norm" in h5 else "arrays_h5"
    except OSError as exc:
        raise UsageError(f"{path}: not a readable HDF5 file ({exc})") from None
    return Source(kind, path, n)


def _describe_npy(path: Path, grid: WavelengthGrid) -> Source:
    try:
        stack = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable .npy array ({exc})") from None
    if stack.ndim != 3 or stack.shape[0] != 2:
        raise UsageError(f"{path}: shape {stack.shape}; expected (2, n, n_pix) = "
                         "np.stack([flux, ivar])")
    _check_grid_file(path, stack.shape[1], stack.shape[2], grid, None, None)
    return Source("npy", path, stack.shape[1])


def discover(inputs: Iterable[str], grid: WavelengthGrid) -> list[Source]:
    """Find the inputs (``qsocube.core.inputs``: folders yield spec-lite files) and classify
    every one; raise UsageError on bad ones."""
    sources: list[Source] = []
    for path in find_inputs(inputs):
        name = path.name.lower()
        if not is_fits(path) and not path.is_file():  # never open a FIFO or a device
            raise UsageError(f"{printable(path)}: not a regular file")
        if is_fits(path):
            sources.append(Source("fits", path, 1))
        elif name.endswith(H5_SUFFIXES):
            sources.append(_describe_h5(path, grid))
        elif name.endswith(".npy"):
            sources.append(_describe_npy(path, grid))
        else:
            raise UsageError(f"{path}: unknown input type (expected FITS spec-lite, "
                             ".h5 or .npy)")
    if not sources:
        raise UsageError("no inputs given")
    return sources
