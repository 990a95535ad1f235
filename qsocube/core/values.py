"""The reader's rule for values no spectrum can have: masked and counted, never passed on.

One rule for every input, FITS spectra (``qsocube.core.speclite``) and arrays on the grid
(``qsocube encode``): among the pixels that carry data (ivar > 0), a pixel is masked
(ivar set to 0) and counted when

* its flux or ivar is NaN or infinite;
* ``|flux| > FLUX_LIMIT`` (1e10 x 1e-17 erg s-1 cm-2 A-1 = 1e-7 erg s-1 cm-2 A-1: a
  thousand times brighter than Vega, far above where SDSS spectra saturate, ~14 mag), or
  ``ivar > IVAR_LIMIT`` (an error below 1e-9 of those units);
* ``|flux| > RELATIVE_LIMIT * (m_f + s)``, with ``m_f`` the median |flux| and ``s`` the
  typical error 1 / sqrt(median ivar) of the spectrum's other pixels with data (the
  median is the lower middle value): a pixel a thousand times brighter than the
  spectrum's level and its noise together (emission lines reach tens of times the
  continuum; the noise term keeps spectra whose median flux is near zero safe);
* ``ivar > IVAR_RELATIVE_LIMIT * median ivar``: an error a thousand times smaller than
  the spectrum's typical one.

Flux values that are non-finite or beyond ``FLUX_LIMIT`` are set to 0 wherever they are,
so no later product of a zero weight and a huge value can make a NaN. The medians come
from the spectrum itself, so one absurd pixel cannot hide another, and a whole spectrum
scaled by 1e30 is caught by the absolute limits. On the 258 real SDSS spectra and the
simulated surveys the rule masks nothing.
"""

from __future__ import annotations

import numpy as np

FLUX_LIMIT = 1e10
IVAR_LIMIT = 1e18
RELATIVE_LIMIT = 1e3
IVAR_RELATIVE_LIMIT = 1e6
RULE = (f"pixels with non-finite flux or ivar, |flux| > {FLUX_LIMIT:g}, ivar > "
        f"{IVAR_LIMIT:g}, |flux| > {RELATIVE_LIMIT:g} x (median |flux| + 1 / sqrt(median "
        f"ivar)) or ivar > {IVAR_RELATIVE_LIMIT:g} x median ivar are masked "
        "(qsocube.core.values)")


def screen(flux: np.ndarray, ivar: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(flux, ivar, n_masked) of one spectrum (1-D, any float dtype) after the rule above.

    ``n_masked`` counts the pixels that had data (ivar != 0) and were masked by the rule;
    the inputs are not modified. Negative ivar is the caller's business (a broken file).
    """
    flux, ivar, counts = screen_rows(np.asarray(flux)[None], np.asarray(ivar)[None])
    return flux[0], ivar[0], int(counts[0])


def screen_rows(flux: np.ndarray, ivar: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                             np.ndarray]:
    """``screen`` for every row of (n, n_pix) arrays: (flux, ivar, n_masked per row).

    The medians are taken only for rows where the relative limits could bite: a row whose
    largest |flux| and ivar stay within the limits computed from lower bounds of its
    medians (its smallest |flux|, the noise of its largest ivar, its smallest ivar) is
    left as it is without sorting. Where the rule changes nothing, the arrays returned are
    the inputs themselves (one pass fewer each on a batch of clean spectra).
    """
    flux, ivar = np.asarray(flux), np.asarray(ivar)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        absolute = np.abs(flux)
        huge = ~(absolute <= FLUX_LIMIT)  # NaN included
        had_data = ivar != 0
        valid = (ivar > 0) & (ivar <= IVAR_LIMIT) & ~huge  # False for a NaN or infinite ivar
        top_ivar = np.max(ivar, axis=1, where=valid, initial=0)
        least_ivar = np.min(ivar, axis=1, where=valid, initial=np.inf)
        least_flux = np.min(absolute, axis=1, where=valid, initial=np.inf)
        top_flux = np.max(absolute, axis=1, where=valid, initial=0)
        safe = ((top_ivar <= IVAR_RELATIVE_LIMIT * least_ivar)
                & (top_flux <= RELATIVE_LIMIT * (least_flux + 1 / np.sqrt(top_ivar))))
        rows = np.flatnonzero(valid.any(axis=1) & ~safe)
        if len(rows):
            level, typical_ivar = _lower_medians(valid[rows], absolute[rows], ivar[rows])
            noise = 1.0 / np.sqrt(typical_ivar)
            valid[rows] &= absolute[rows] <= RELATIVE_LIMIT * (level + noise)[:, None]
            valid[rows] &= ivar[rows] <= IVAR_RELATIVE_LIMIT * typical_ivar[:, None]
    bad = had_data & ~valid
    counts = np.count_nonzero(bad, axis=1).astype(np.int64)
    if huge.any():
        flux = np.where(huge, 0, flux).astype(flux.dtype, copy=False)
    if counts.any():
        ivar = np.where(bad, 0, ivar).astype(ivar.dtype, copy=False)
    return flux, ivar, counts


def _lower_medians(valid: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    """Per row, the lower middle value of each array over the row's valid pixels."""
    middle = (np.count_nonzero(valid, axis=1) - 1) // 2
    index = np.arange(len(valid))
    return [np.sort(np.where(valid, a, np.inf), axis=1)[index, middle] for a in arrays]
