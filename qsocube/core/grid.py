"""The one wavelength grid of the product.

Pixel centres are log-spaced from ``wave_min`` to ``wave_max`` inclusive (vacuum,
observed frame, Angstrom), like the study's ``np.logspace`` grid. The SDSS spectra live
on a global 1e-4 dex frame (``loglam`` values are integer multiples of 1e-4), which is
what makes the resampling a single fixed linear operator.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np

SDSS_DLOGLAM = 1e-4  # dex per SDSS coadd pixel


@dataclass(frozen=True)
class WavelengthGrid:
    """A log-spaced wavelength grid: ``n_pix`` pixel centres from ``wave_min`` to
    ``wave_max`` inclusive (Angstrom, vacuum, observed frame).

    The field defaults are the product's grid (``DEFAULT_GRID``: 1500 pixels, 3625-9000 A);
    ``loglam``, ``wavelength`` and ``loglam_edges`` are float64 arrays of shape (n_pix,),
    (n_pix,) and (n_pix + 1,); ``sha256`` identifies the grid in every product.
    """

    n_pix: int = 1500
    wave_min: float = 3625.0
    wave_max: float = 9000.0

    def __post_init__(self) -> None:
        if self.n_pix < 2 or not 0 < self.wave_min < self.wave_max:
            raise ValueError(f"invalid wavelength grid {self}")

    @cached_property
    def loglam(self) -> np.ndarray:
        """log10 of the pixel centres."""
        return np.linspace(np.log10(self.wave_min), np.log10(self.wave_max), self.n_pix)

    @cached_property
    def wavelength(self) -> np.ndarray:
        """Pixel centres in Angstrom, (n_pix,) float64."""
        return 10.0**self.loglam

    @property
    def dloglam(self) -> float:
        """Pixel width in dex."""
        return float(self.loglam[1] - self.loglam[0])

    @property
    def sn_per_sdss_pixel(self) -> float:
        """A grid pixel's S/N over that of the SDSS pixels it averages (sqrt of their
        number): divide S/N measured on the grid by it to compare with SN_MEDIAN_ALL."""
        return float(np.sqrt(self.dloglam / SDSS_DLOGLAM))

    @cached_property
    def loglam_edges(self) -> np.ndarray:
        """log10 of the pixel edges, (n_pix + 1,): halfway between centres."""
        half = 0.5 * self.dloglam
        return np.concatenate([self.loglam - half, [self.loglam[-1] + half]])

    @cached_property
    def sha256(self) -> str:
        """Checksum of the float64 little-endian pixel centres: the grid's identity."""
        return hashlib.sha256(self.wavelength.astype("<f8").tobytes()).hexdigest()

    def to_json(self) -> str:
        """The grid as JSON (the ``grid`` attribute of every product)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WavelengthGrid:
        return cls(**json.loads(text))


DEFAULT_GRID = WavelengthGrid()  # the product's grid: the one place it is defined
