"""The simulator's package data (``data/templates.h5``): what it holds, and how to read it.

Made by ``tools/derive_simulator_templates.py`` from the redrock templates (desihub,
BSD-3-Clause; ``data/LICENSE-redrock-templates.md``) and real SDSS quasars; its attributes
record the provenance. Spectra are float32 on grids of 1e-4 dex (the SDSS pixel), starting
at ``loglam0`` (log10 Angstrom); rest frame for quasars and galaxies, observed for stars.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import h5py
import numpy as np

DLOGLAM = 1e-4


def held_out(ra: float, dec: float, fraction: float = 0.4) -> bool:
    """The real spectra that no fit behind the package data has seen (and that the fidelity
    benchmark reports on): those whose position, rounded to 1 arcmin, hashes below
    ``fraction``. Rounding keeps repeat observations of one object together."""
    key = f"{round(float(ra) * 60) / 60:.4f}{round(float(dec) * 60) / 60:+.4f}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64 < fraction


@dataclass(frozen=True)
class QuasarSet:
    """A rest-frame quasar basis with the distribution of its coefficients.

    spectrum = mean + theta[:K] @ components (+ theta[K] x a host galaxy, LOZ only),
    theta ~ N(x @ beta, cov) with x = (1, log10(1+z) - 0.2, M_I + 24) clipped to
    [x_min, x_max] (the range of the real quasars it was learned from).
    """

    name: str
    loglam0: float
    mean: np.ndarray  # (n_rest,) unit median redward of 1300 A
    components: np.ndarray  # (K, n_rest) unit RMS: redrock vectors, then residual eigenvectors
    beta: np.ndarray  # (3, K + host), host = 1 for LOZ
    cov: np.ndarray  # (K + host, K + host)
    x_min: np.ndarray  # (3,)
    x_max: np.ndarray  # (3,)
    transmission: np.ndarray | None  # (n_rest,) mean forest transmission inside ``mean``
    distortion_mean: np.ndarray  # (2,) smooth calibration/reddening term exp(a . P(x)),
    distortion_cov: np.ndarray  # (2, 2)  P = Legendre 1, 2 of x = (log10 lambda - 3.8) / 0.2


@dataclass(frozen=True)
class Library:
    """Everything the simulator draws spectra from."""

    loz: QuasarSet  # quasars at z < z_split
    hiz: QuasarSet
    z_split: float
    galaxy_loglam0: float
    galaxy_basis: np.ndarray  # (5, n) rest frame, SDSS resolution
    galaxy_archetypes: np.ndarray  # (750, 5) coefficients; unit median at 5050-5150 A
    host_archetypes: np.ndarray  # indices of weak-Halpha archetypes used as quasar hosts
    star_loglam0: float
    stars: dict[str, tuple[np.ndarray, np.ndarray]]  # type -> (basis (k, n) observed, archetypes)
    attrs: dict[str, str]


def _quasar_set(group: h5py.Group) -> QuasarSet:
    return QuasarSet(
        group.name.strip("/"), float(group.attrs["loglam0"]), group["mean"][...],
        group["components"][...], group["beta"][...], group["cov"][...], group["x_min"][...],
        group["x_max"][...],
        group["embedded_transmission"][...] if "embedded_transmission" in group else None,
        group["distortion_mean"][...], group["distortion_cov"][...])


@lru_cache(maxsize=1)
def library() -> Library:
    """Read the package data once per process."""
    source = resources.files("qsocube.builder.simulate").joinpath("data", "templates.h5")
    with resources.as_file(source) as path, h5py.File(path, "r") as f:
        stars = {kind: (g["basis"][...], g["archetypes"][...]) for kind, g in f["star"].items()}
        return Library(
            _quasar_set(f["loz"]), _quasar_set(f["hiz"]), float(f.attrs["z_split"]),
            float(f["galaxy"].attrs["loglam0"]), f["galaxy/basis"][...],
            f["galaxy/archetypes"][...], f["galaxy/host_archetypes"][...],
            float(f["star"].attrs["loglam0"]), stars,
            {k: str(v) for k, v in f.attrs.items()})
