"""Labelled contaminants: stars, galaxies and instrument artefacts among the quasars.

Real surveys have them and the anomaly scores need them. Each is written exactly like a
quasar's file; only the truth table (``OBJECT_CLASS``, ``ARTEFACT``) says which it is.

- **Stars**: a DESI/BOSS stellar archetype of a type drawn by ``STAR_WEIGHTS``, seen at
  redshift ~0; the catalogue gives it a quasar redshift (a misidentification).
- **Galaxies**: a DESI galaxy archetype (emission lines included) at 0.03 <= z <= 0.6,
  catalogued at its own redshift.
- **Artefacts** on a quasar: ``dead_fibre`` (2% of the light reaches the spectrograph),
  ``misfluxed_fibre`` (the red camera's flux scale off by a factor 0.4-0.7 or 1.4-2.5),
  ``sky_subtraction_failure`` (5-25% of the sky spectrum left in or taken out twice) and
  ``wrong_redshift`` (the catalogue's redshift from a line misidentified as another).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import physics
from .quasars import shift_to_frame
from .templates import Library

OBJECT_CLASSES = ("QSO", "STAR", "GALAXY")
QSO, STAR, GALAXY = range(3)
ARTEFACTS = ("none", "dead_fibre", "misfluxed_fibre", "sky_subtraction_failure",
             "wrong_redshift")
NO_ARTEFACT, DEAD_FIBRE, MISFLUXED, SKY_FAILURE, WRONG_Z = range(5)
# stars that quasar target selection lets in: mostly F/G/K/M, some A, white dwarfs and CVs
STAR_WEIGHTS = {"F": 0.22, "G": 0.2, "K": 0.18, "M": 0.15, "A": 0.1, "WD": 0.1, "CV": 0.05}
DEAD_FIBRE_LIGHT = 0.02
DICHROIC = 6000.0  # A: where the blue and red cameras meet


@dataclass(frozen=True)
class ContaminantFractions:
    """Fractions of the catalogue rows that are not (normal) quasars."""

    star: float = 0.01
    galaxy: float = 0.005
    artefact: float = 0.01  # shared equally by the four kinds of artefact

    def __post_init__(self) -> None:
        if min(self.star, self.galaxy, self.artefact) < 0 or \
                self.star + self.galaxy + self.artefact >= 1:
            raise ValueError(f"contaminant fractions must be >= 0 and sum below 1: {self}")


@dataclass(frozen=True)
class Contaminants:
    """Per catalogue row (drawn once for the survey)."""

    object_class: np.ndarray  # (n,) QSO, STAR or GALAXY
    artefact: np.ndarray  # (n,) one of ARTEFACTS (quasars only)
    star_type: np.ndarray  # (n,) index into STAR_WEIGHTS, -1 if not a star
    archetype: np.ndarray  # (n,) star or galaxy archetype index, -1 otherwise
    galaxy_z: np.ndarray  # (n,) true redshift of galaxies, NaN otherwise
    factor: np.ndarray  # (n,) red-camera scale (misfluxed) or sky fraction (sky failure)


def draw(rng: np.random.Generator, n: int, fractions: ContaminantFractions, lib: Library
         ) -> Contaminants:
    u = rng.random(n)
    object_class = np.where(u < fractions.star, STAR,
                            np.where(u < fractions.star + fractions.galaxy, GALAXY, QSO))
    artefact_u = rng.random(n)
    artefact = np.where((object_class == QSO) & (artefact_u < fractions.artefact),
                        1 + (artefact_u / max(fractions.artefact, 1e-12) * 4).astype(int), 0)
    types = list(STAR_WEIGHTS)
    weights = np.array(list(STAR_WEIGHTS.values()))
    star_type = np.where(object_class == STAR,
                         rng.choice(len(types), size=n, p=weights / weights.sum()), -1)
    pick = rng.random(n)
    n_arche = np.array([len(lib.stars[t][1]) for t in types])
    archetype = np.full(n, -1)
    stars = object_class == STAR
    archetype[stars] = (pick[stars] * n_arche[star_type[stars]]).astype(int)
    galaxies = object_class == GALAXY
    archetype[galaxies] = (pick[galaxies] * len(lib.galaxy_archetypes)).astype(int)
    galaxy_z = np.where(galaxies, rng.uniform(0.03, 0.6, n), np.nan)
    scale = np.where(rng.random(n) < 0.5, rng.uniform(0.4, 0.7, n), rng.uniform(1.4, 2.5, n))
    sky = rng.uniform(0.05, 0.25, n) * np.where(rng.random(n) < 0.5, -1.0, 1.0)
    factor = np.select([artefact == MISFLUXED, artefact == SKY_FAILURE], [scale, sky], 0.0)
    return Contaminants(object_class, artefact, star_type, archetype, galaxy_z, factor)


def misidentified_redshift(z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A redshift from a line taken for another (Mg II for C IV and the reverse, or H-beta
    for Mg II), as pipelines and catalogues get it wrong."""
    ratios = np.array([2798.75 / physics.CIV, physics.CIV / 2798.75, 4862.68 / 2798.75,
                       2798.75 / 4862.68])
    wrong = (1 + z) * ratios[rng.integers(len(ratios), size=len(z))] - 1
    return np.where(wrong > 0.02, wrong, z + 0.5)


def star_spectra(kind: np.ndarray, archetype: np.ndarray, lib: Library) -> np.ndarray:
    """Observed-frame stars (B, N), unit median over 7300-7660 A."""
    types = list(STAR_WEIGHTS)
    out = np.empty((len(kind), lib.stars[types[0]][0].shape[1]))
    for k, name in enumerate(types):
        rows = np.flatnonzero(kind == k)
        if rows.size:
            basis, arche = lib.stars[name]
            out[rows] = arche[archetype[rows]] @ basis
    return out


def galaxy_spectra(archetype: np.ndarray, z: np.ndarray, frame_loglam: np.ndarray,
                   lib: Library) -> np.ndarray:
    """Galaxies (B, N) at redshift z on the observed frame; NaN outside their basis."""
    rest = lib.galaxy_archetypes[archetype] @ lib.galaxy_basis
    return shift_to_frame(rest, lib.galaxy_loglam0, z, frame_loglam)


def misflux(model: np.ndarray, factor: np.ndarray, wave: np.ndarray) -> np.ndarray:
    """The red camera's flux scaled by ``factor`` (B,), blended over 40 A at the dichroic."""
    red = 1.0 / (1.0 + np.exp(-(wave - DICHROIC) / 10.0))
    return model * (1.0 + (factor[:, None] - 1.0) * red[None, :])
