"""From spec-lite files to model-ready arrays: the path shared by the builder and inference."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from qsocube.core.errors import Rejection
from qsocube.core.grid import WavelengthGrid
from qsocube.core.preprocess import NO_COVERAGE, frame_batch, normalisation_factor, resample_chunked
from qsocube.core.speclite import SpecLite


@dataclass(frozen=True)
class Prepared:
    """Spectra on the grid with their normalisation: what the cube stores per spectrum.

    ``flux`` (n, n_pix) float32 in 1e-17 erg s-1 cm-2 Angstrom-1, 0 where masked; ``ivar``
    (n, n_pix) float32, its inverse variance, 0 where masked; ``mask`` (n, n_pix) uint8 bits
    (``preprocess.NO_COVERAGE``, ``NO_DATA``; valid iff 0); ``covered_fraction`` (n,)
    float32, the fraction of grid pixels with mask == 0; ``norm`` (n,) float32, the median
    flux over valid pixels in flux units (NaN where there is none; <= 0 is unusable).
    """

    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray
    covered_fraction: np.ndarray
    norm: np.ndarray

    def __len__(self) -> int:
        return self.flux.shape[0]

    def rows(self, keep: np.ndarray) -> Prepared:
        """The spectra where ``keep`` (a boolean or index array) selects them."""
        return Prepared(self.flux[keep], self.ivar[keep], self.mask[keep],
                        self.covered_fraction[keep], self.norm[keep])


def prepare(spectra: Sequence[SpecLite], grid: WavelengthGrid, method: str = "rebin"
            ) -> Prepared:
    """Resample spectra onto ``grid`` (``method``: ``preprocess.METHODS``) and compute their
    normalisation factors."""
    frame = frame_batch([s.start for s in spectra], [s.flux for s in spectra],
                        [s.ivar for s in spectra], grid)
    resampled = resample_chunked(frame, grid, method)
    norm = normalisation_factor(resampled.flux, resampled.mask)
    return Prepared(resampled.flux, resampled.ivar, resampled.mask,
                    resampled.covered_fraction, norm)


def prepare_each(spectra: Sequence[SpecLite], grid: WavelengthGrid, method: str = "rebin"
                 ) -> tuple[Prepared | None, list[int], list[tuple[int, str]]]:
    """``prepare`` as a boundary per spectrum: (prepared rows, the indices they belong to,
    (index, reason) of each spectrum that could not be prepared).

    The batch is prepared in one call; only if that fails is each spectrum prepared alone,
    so one spectrum that breaks the resampler rejects itself, not its batch.
    """
    try:
        return prepare(spectra, grid, method), list(range(len(spectra))), []
    except Exception:  # find the spectrum that fails; the others go on
        pass
    parts, good, failed = [], [], []
    for index, spectrum in enumerate(spectra):
        try:
            parts.append(prepare([spectrum], grid, method))
            good.append(index)
        except Exception as exc:  # this input's failure rejects this input only
            failed.append((index, f"could not be resampled ({type(exc).__name__}: "
                                  f"{' '.join(str(exc).split())[:120]})"))
    if not parts:
        return None, [], failed
    merged = Prepared(*(np.concatenate([getattr(p, f.name) for p in parts])
                        for f in fields(Prepared)))
    return merged, good, failed


@dataclass(frozen=True)
class Verdict:
    """Whether one prepared spectrum is usable: ``code`` (``Rejection.ok`` if it is) and,
    if not, the one-line ``reason`` in words."""

    code: Rejection
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.code == Rejection.ok


OK = Verdict(Rejection.ok)


def usability(prepared: Prepared, min_covered_fraction: float, full_coverage: bool = False
              ) -> list[Verdict]:
    """Per spectrum, whether it is usable, and if not why (the same rule for build and encode).

    ``full_coverage`` is the study's rule (Portillo et al. 2020): the spectrum's wavelength
    range must span the whole grid (masked pixels inside it are still allowed). A spectrum
    with no valid grid pixel at all is ``no_valid_pixels`` whichever check notices it.
    """
    spanned = ((prepared.mask & NO_COVERAGE) == 0).mean(axis=1)
    covered, norm = prepared.covered_fraction, prepared.norm
    with np.errstate(invalid="ignore"):
        partial = (spanned < 1) if full_coverage else np.zeros(len(covered), bool)
        low = ~partial & (covered < min_covered_fraction)
        unnormalised = ~partial & ~low & ~(np.isfinite(norm) & (norm > 0))
    verdicts = [OK] * len(covered)  # the rejected few are written one by one below
    for i in np.flatnonzero(partial):
        verdicts[i] = Verdict(Rejection.partial_coverage,
                              f"does not cover the whole grid ({spanned[i]:.1%}); coverage "
                              "policy 'full'")
    for i in np.flatnonzero(low):
        verdicts[i] = Verdict(Rejection.no_valid_pixels if covered[i] == 0 else
                              Rejection.low_coverage,
                              f"covers {covered[i]:.1%} of the grid, below the minimum "
                              f"{min_covered_fraction:.0%}")
    for i in np.flatnonzero(unnormalised):
        verdicts[i] = Verdict(Rejection.no_valid_pixels if covered[i] == 0 else
                              Rejection.bad_normalisation,
                              "median flux over valid pixels is not positive")
    return verdicts
