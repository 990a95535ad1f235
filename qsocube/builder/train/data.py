"""Training's view of the cube: model inputs, weights, splits and provenance (read-only).

Everything comes through ``qsocube.core.cube``; nothing here knows how the builder made the cube.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from qsocube.core.anomaly import normal_quasars
from qsocube.core.cube import file_sha256, model_input_from_cube
from qsocube.core.errors import CubeError
from qsocube.core.grid import WavelengthGrid

# Portillo et al. add a floor to the variance so that a few pixels with tiny reported
# errors cannot dominate the fit. Ours is a 2% systematic, relative to the pixel's flux
# but never below 2% of the spectrum's median flux (the normalisation):
#     w_cap = w / (1 + w * (SIGMA_FLOOR * max(|x|, 1))^2),  x = flux / norm
# so w_cap <= 1 / SIGMA_FLOOR^2 = 2500 at the continuum level and falls as 1 / x^2 above
# it. The relative part matters: spectra whose median flux is near zero (z > 5, the
# Lyman-alpha forest covers most of the grid) reach x ~ 1e3 and, with a constant floor,
# held 89% of the training loss of a 4,000-spectrum simulated cube (3% with this floor).
SIGMA_FLOOR = 0.02
# |x| = |flux / norm| beyond this is clipped when a cube is loaded for training: the x^2
# of the loss and of the metrics stays finite in float32 (1e12), far above any real
# spectrum's (~1e3 for a near-zero median flux). The builder's reader already masks
# absurd values (qsocube.core.values); this bounds cubes made elsewhere.
X_LIMIT = 1e6
READ_ROWS = 4096  # spectra per read: bounds the float64 temporaries of model_input
PROVENANCE_ATTRS = ("grid", "grid_sha256", "normalisation", "resampling_method")
TRAIN, VALIDATION, TEST = 0, 1, 2


def cap_weights(w: np.ndarray, x: np.ndarray, sigma_floor: float = SIGMA_FLOOR) -> np.ndarray:
    """Inverse variance with a variance floor: 1 / (1 / w + (sigma_floor * max(|x|, 1))^2).

    0 stays 0 (masked pixels). Computed in float32 row blocks to bound temporaries.
    """
    w = np.asarray(w, dtype=np.float32)
    out = np.empty_like(w)
    for lo in range(0, len(w), READ_ROWS):
        block = slice(lo, lo + READ_ROWS)
        floor = np.float32(sigma_floor) * np.maximum(np.abs(x[block]), np.float32(1))
        out[block] = w[block] / (1 + w[block] * floor * floor)
    return out


@dataclass
class CubeData:
    path: Path
    x: np.ndarray  # (n, n_pix) float32: flux / norm, 0 where masked
    w: np.ndarray  # (n, n_pix) float32: ivar * norm^2, 0 where masked (uncapped)
    split: np.ndarray  # (n,) uint8
    grid: WavelengthGrid
    attrs: dict[str, str] = field(default_factory=dict)  # provenance root attributes
    # (n,) bool: spectra that can stand for normal quasars when anomaly scores are
    # calibrated: all of them, but for the contaminants a simulated cube's truth labels
    normal: np.ndarray | None = None
    # (n,) float64: the catalogue redshift (/catalog/Z), NaN where unknown; the anomaly
    # score's redshift part learns how the codes tell it
    z: np.ndarray | None = None

    @property
    def n_pix(self) -> int:
        return self.x.shape[1]

    def rows(self, part: int) -> np.ndarray:
        return np.flatnonzero(self.split == part)


def load_cube(path: str | Path) -> CubeData:
    """Read model inputs and provenance; raise CubeError (one line) on a cube unfit to train."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such cube")
    try:
        with h5py.File(path, "r") as cube:
            for name in ("flux", "ivar", "mask", "norm", "split", "wavelength"):
                if name not in cube:
                    raise CubeError(f"{path}: not a qsocube cube (no '{name}' variable)")
            attrs = {}
            for key in PROVENANCE_ATTRS:
                if key not in cube.attrs:
                    raise CubeError(f"{path}: root attribute '{key}' is missing")
                attrs[key] = _text(cube.attrs[key])
            for key in ("product_version", "schema_version", "build_config_sha256", "source"):
                if key in cube.attrs:
                    attrs[key] = _text(cube.attrs[key])
            n = cube["flux"].shape[0]
            parts = [model_input_from_cube(cube, slice(lo, min(lo + READ_ROWS, n)))
                     for lo in range(0, n, READ_ROWS)]
            split = cube["split"][...].astype(np.uint8)
            wavelength = cube["wavelength"][...]
            normal = labelled_normal(cube, n)
            z = (cube["catalog/Z"][...].astype(np.float64) if "catalog/Z" in cube
                 else np.full(n, np.nan))
    except OSError as exc:  # h5py: not HDF5, or a damaged chunk (checksum, filter)
        raise damaged(path, exc) from None
    if not parts:
        raise CubeError(f"{path}: the cube holds no spectra")
    x = np.concatenate([p[0] for p in parts])
    w = np.concatenate([p[1] for p in parts])
    grid = WavelengthGrid.from_json(attrs["grid"])
    if grid.sha256 != attrs["grid_sha256"] or not np.allclose(grid.wavelength, wavelength,
                                                              rtol=1e-12, atol=0):
        raise CubeError(f"{path}: the grid attribute does not match the wavelength coordinate")
    bad = ~(np.isfinite(x).all(axis=1) & np.isfinite(w).all(axis=1)) | (w < 0).any(axis=1)
    if bad.any():
        raise CubeError(f"{path}: {int(bad.sum())} spectra have non-finite model inputs "
                         f"(first row {int(np.flatnonzero(bad)[0])}; is norm <= 0 or NaN?)")
    if not (np.abs(x) <= X_LIMIT).all():  # a cube from elsewhere: bound it (see X_LIMIT)
        x = np.clip(x, -X_LIMIT, X_LIMIT)
    for part, label in ((TRAIN, "training"), (VALIDATION, "validation")):
        if not (split == part).any():
            raise CubeError(f"{path}: no {label} spectra (split == {part})")
    return CubeData(path, x, w, split, grid, attrs, normal, z)


def labelled_normal(cube: h5py.File, n: int) -> np.ndarray:
    """True for every spectrum not labelled a contaminant by a simulated cube's /truth
    (OBJECT_CLASS other than QSO, or an ARTEFACT): a real cube has no labels."""
    normal = np.ones(n, bool)
    truth = cube.get("truth")
    if truth is not None and "OBJECT_CLASS" in truth and "ARTEFACT" in truth:
        normal &= normal_quasars(truth["OBJECT_CLASS"].asstr()[...],
                                 truth["ARTEFACT"].asstr()[...])
    return normal


def damaged(path: Path, exc: BaseException) -> CubeError:
    """The one-line error for a cube that cannot be read."""
    text = " ".join(str(exc).split())[:160] or type(exc).__name__
    return CubeError(f"{path}: cannot be read as an HDF5 cube ({text}); run `qsocube validate "
                     f"{path}` to see "
                     "what is damaged")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def trained_on_sha256(path: str | Path) -> str:
    """The sha256 of the cube as the builder wrote it, before any model write-back.

    Write-back changes the file, so a cube that already holds /models groups carries the
    original checksum in their ``trained_on_cube_sha256`` attribute; a cube without them
    is still as built and is hashed directly.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such cube")
    try:
        with h5py.File(path, "r") as cube:
            recorded = sorted({_text(group.attrs["trained_on_cube_sha256"])
                               for group in cube.get("models", {}).values()
                               if "trained_on_cube_sha256" in group.attrs})
    except OSError as exc:
        raise damaged(path, exc) from None
    if len(recorded) > 1:
        raise CubeError(f"{path}: model groups disagree on trained_on_cube_sha256 {recorded}")
    return recorded[0] if recorded else file_sha256(path)


def config_json(config: dict) -> str:
    return json.dumps(config, sort_keys=True, separators=(",", ":"))
