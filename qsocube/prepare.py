"""From spec-lite files to model-ready arrays: the path shared by the builder and inference."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qsocube.grid import WavelengthGrid
from qsocube.preprocess import frame_batch, normalisation_factor, resample_chunked
from qsocube.speclite import SpecLite

# Spectra with fewer valid grid pixels are left out of the cube, and flagged by inference:
# below this, the masked part would dominate what the encoder sees.
DEFAULT_MIN_COVERED_FRACTION = 0.8


@dataclass(frozen=True)
class Prepared:
    flux: np.ndarray  # (n, n_pix) float32, physical units, 0 where masked
    ivar: np.ndarray  # (n, n_pix) float32
    mask: np.ndarray  # (n, n_pix) uint8
    covered_fraction: np.ndarray  # (n,) fraction of grid pixels with mask == 0
    norm: np.ndarray  # (n,) float32, NaN where no valid pixel; <= 0 is unusable

    def __len__(self) -> int:
        return self.flux.shape[0]


def prepare(spectra: Sequence[SpecLite], grid: WavelengthGrid, method: str = "rebin"
            ) -> Prepared:
    """Resample spectra onto ``grid`` and compute their normalisation factors."""
    frame = frame_batch([s.start for s in spectra], [s.flux for s in spectra],
                        [s.ivar for s in spectra], grid)
    resampled = resample_chunked(frame, grid, method)
    norm = normalisation_factor(resampled.flux, resampled.mask)
    return Prepared(resampled.flux, resampled.ivar, resampled.mask,
                    resampled.covered_fraction, norm)


def usability(prepared: Prepared, min_covered_fraction: float, full_coverage: bool = False
              ) -> list[str | None]:
    """Per spectrum, None if usable or the one-line reason why not.

    ``full_coverage`` is the seed's rule: the spectrum's wavelength range must span the
    whole grid (masked pixels inside it are still allowed).
    """
    from qsocube.preprocess import NO_COVERAGE

    spanned = ((prepared.mask & NO_COVERAGE) == 0).mean(axis=1)
    reasons: list[str | None] = []
    for span, covered, norm in zip(spanned, prepared.covered_fraction, prepared.norm,
                                   strict=True):
        if full_coverage and span < 1:
            reasons.append(f"does not cover the whole grid ({span:.1%}); coverage policy 'full'")
        elif covered < min_covered_fraction:
            reasons.append(f"covers {covered:.1%} of the grid, below the minimum "
                           f"{min_covered_fraction:.0%}")
        elif not np.isfinite(norm) or norm <= 0:
            reasons.append("median flux over valid pixels is not positive")
        else:
            reasons.append(None)
    return reasons
