"""Instrument and sky: throughput, sky spectrum, pixel masks, noise scaling, median S/N.

The variance model is that of a photon-limited spectrograph: var = A (object + sky + read)
/ throughput, with one constant A per spectrum chosen so the spectrum reaches its target
median S/N. Throughput is poor at the blue and red ends and dips at the BOSS dichroic
(~6000 A), so the noise is structured the way real BOSS noise is.
"""

from __future__ import annotations

import numpy as np

# SDSS spPixMask bits (idlspec2d) used by the simulation.
FULLREJECT = 1 << 18
PARTIALREJECT = 1 << 19
BRIGHTSKY = 1 << 23
NODATA = 1 << 24
COMBINEREJ = 1 << 25

READ_NOISE = 1.5  # object-flux-equivalent read noise + dark, 1e-17 erg/s/cm^2/A
_OH_SEED = 20010620  # fixed: the sky line list is part of the instrument, not the survey


def _logistic(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def throughput(wave: np.ndarray) -> np.ndarray:
    """Relative end-to-end throughput (peak ~0.3): blue and red cut-offs, dichroic dip."""
    blue = _logistic((wave - 3750.0) / 130.0)
    red = _logistic((10200.0 - wave) / 220.0)
    dichroic = 1.0 - 0.45 * np.exp(-0.5 * ((wave - 6050.0) / 60.0) ** 2)
    return 0.3 * blue * red * dichroic + 0.002


def _sky_lines() -> tuple[np.ndarray, np.ndarray]:
    """Bright atomic lines plus an OH forest redward of ~6800 A (wavelength, peak flux)."""
    atomic_wave = np.array([4047.7, 4359.6, 5462.3, 5578.9, 5891.6, 5897.6, 6302.0, 6365.5])
    atomic_peak = np.array([12.0, 18.0, 20.0, 160.0, 45.0, 40.0, 70.0, 25.0])
    rng = np.random.default_rng(_OH_SEED)
    oh_wave = np.sort(rng.uniform(6800.0, 10400.0, 260))
    # OH bands get brighter towards the near-infrared.
    oh_peak = rng.lognormal(np.log(25.0), 0.8, oh_wave.size) * (oh_wave / 7000.0) ** 2
    return np.concatenate([atomic_wave, oh_wave]), np.concatenate([atomic_peak, oh_peak])


def sky_spectrum(wave: np.ndarray) -> np.ndarray:
    """Dark-time sky in 1e-17 erg/s/cm^2/A: smooth continuum plus resolved emission lines."""
    sky = 1.2 + 2.5 * ((wave - 3500.0) / 7000.0) ** 2
    line_wave, line_peak = _sky_lines()
    sigma = 1.6 * wave / 5000.0  # roughly the BOSS line spread
    for w0, peak in zip(line_wave, line_peak, strict=True):
        near = np.abs(wave - w0) < 8.0 * sigma
        sky[near] += peak * np.exp(-0.5 * ((wave[near] - w0) / sigma[near]) ** 2)
    return sky


def bright_sky_pixels(sky: np.ndarray, threshold: float = 130.0) -> np.ndarray:
    """Cores of the brightest sky lines: ~1.6% of pixels, flagged BRIGHTSKY in and_mask
    with their sky-inflated variance kept, as the BOSS pipeline does."""
    return sky > threshold


def noise_amplitude(
    model: np.ndarray, var_shape: np.ndarray, good: np.ndarray, target_sn: np.ndarray
) -> np.ndarray:
    """Per-spectrum A with median(model / sqrt(A var_shape)) over good pixels = target_sn."""
    ratio = np.where(good, model / np.sqrt(var_shape), np.nan)
    med = np.nanmedian(ratio, axis=1)
    return (np.maximum(med, 1e-6) / target_sn) ** 2


def median_sn(flux: np.ndarray, ivar: np.ndarray) -> float:
    """SDSS median S/N: median of flux * sqrt(ivar) over pixels with ivar > 0.

    Computed in float64 from the stored (float32) arrays, exactly as a reader of the
    spec-lite file would recompute it.
    """
    flux = np.asarray(flux, dtype=np.float64)
    ivar = np.asarray(ivar, dtype=np.float64)
    good = ivar > 0
    if not good.any():
        return 0.0
    return float(np.median(flux[good] * np.sqrt(ivar[good])))


def random_masks(
    rng: np.random.Generator, npix: int, bright: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """and_mask / or_mask for one spectrum; pixels with bad-data bits get ivar = 0.

    BRIGHTSKY on bright sky-line cores, an occasional NODATA stretch (dead columns) and a
    few FULLREJECT pixels; or_mask adds scattered PARTIALREJECT/COMBINEREJ pixels.
    """
    and_mask = np.where(bright, BRIGHTSKY, 0).astype(np.int32)
    if rng.random() < 0.35:
        length = int(rng.integers(5, 60))
        start = int(rng.integers(0, npix - length))
        and_mask[start : start + length] |= NODATA
    rejected = rng.random(npix) < 0.004
    and_mask[rejected] |= FULLREJECT
    or_mask = and_mask.copy()
    partial = rng.random(npix) < 0.01
    or_mask[partial] |= PARTIALREJECT | COMBINEREJ
    return and_mask, or_mask
