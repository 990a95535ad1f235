"""Render a batch of spectra: physics, absorbers, instrument and noise, vectorised.

All spectra of a batch are computed on one global observed grid (B, NGRID); each spectrum
is later cut to its own pixel range. The only per-spectrum Python loop draws that
spectrum's random fields from its own substream, which is what keeps the output
independent of the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from . import noise, physics
from .lines import BUMP_EW, BUMP_SIGMA, BUMP_WAVE, C_KMS, LINE_WAVE
from .population import DLOGLAM, LOGLAM0, NGRID, Population

FOREST_SIGMA_LN = 1.2  # lognormal scatter of the forest optical depth per pixel
FOREST_CORR_PIX = 1.2  # Gaussian correlation length of the forest field, pixels


@dataclass(frozen=True)
class Instrument:
    """Everything about the spectrograph and sky that is the same for all spectra."""

    loglam: np.ndarray  # float64, integer multiples of 1e-4
    wave: np.ndarray
    throughput: np.ndarray
    sky: np.ndarray
    bright: np.ndarray
    wdisp: np.ndarray

    @classmethod
    def build(cls) -> Instrument:
        loglam = np.round(LOGLAM0 + DLOGLAM * np.arange(NGRID), 4)
        wave = 10.0**loglam
        sky = noise.sky_spectrum(wave)
        # Line-spread width in pixels, slightly broader in the blue as in BOSS files.
        wdisp = 1.32 - 0.25 * (wave - wave[0]) / (wave[-1] - wave[0])
        return cls(loglam, wave, noise.throughput(wave), sky, noise.bright_sky_pixels(sky), wdisp)


@dataclass
class Batch:
    """Rendered spectra on the global grid; rows follow ``index``."""

    index: np.ndarray
    model: np.ndarray  # noiseless observed flux
    flux: np.ndarray
    ivar: np.ndarray
    sky: np.ndarray
    and_mask: np.ndarray
    or_mask: np.ndarray
    amplitude: np.ndarray  # noise amplitude A per spectrum (truth)


def _random_fields(index: np.ndarray, pop: Population, seeds: list[np.random.SeedSequence],
                   inst: Instrument) -> tuple[np.ndarray, ...]:
    b = len(index)
    field = np.empty((b, NGRID))
    eps = np.empty((b, NGRID))
    and_mask = np.zeros((b, NGRID), dtype=np.int32)
    or_mask = np.zeros((b, NGRID), dtype=np.int32)
    for k, i in enumerate(index):  # per spectrum: only its own random numbers
        rng = np.random.default_rng(seeds[i])
        field[k] = rng.standard_normal(NGRID)
        eps[k] = rng.standard_normal(NGRID)
        lo, hi = pop.start[i], pop.stop[i] + 1
        a, o = noise.random_masks(rng, hi - lo, inst.bright[lo:hi])
        and_mask[k, lo:hi], or_mask[k, lo:hi] = a, o
    # Correlate the forest field over ~a resolution element, then restore unit variance.
    field = gaussian_filter1d(field, FOREST_CORR_PIX, axis=1, mode="wrap")
    kernel = gaussian_filter1d(np.eye(1, 41, 20)[0], FOREST_CORR_PIX)
    return field / np.sqrt(np.sum(kernel**2)), eps, and_mask, or_mask


def intrinsic_spectrum(pop: Population, index: np.ndarray, wave: np.ndarray) -> np.ndarray:
    """Continuum + pseudo-continuum + emission lines (no absorption), shape (B, N)."""
    z, imag, alpha = pop.z[index], pop.imag[index], pop.alpha[index]
    one_z = 1.0 + z[:, None]
    wave_rest = wave[None, :] / one_z
    flux = physics.continuum(wave[None, :], imag, alpha)
    line_cont = physics.continuum(LINE_WAVE[None, :] * one_z, imag, alpha)
    sigma = LINE_WAVE * pop.sigma_kms[index] / C_KMS
    flux += physics.gaussians(wave_rest, LINE_WAVE, sigma, pop.ew[index], line_cont)
    bump_cont = physics.continuum(BUMP_WAVE[None, :] * one_z, imag, alpha)
    bump_ew = BUMP_EW[None, :] * pop.bump_scale[index][:, None]
    flux += physics.gaussians(wave_rest, BUMP_WAVE, BUMP_SIGMA, bump_ew, bump_cont)
    return flux


def absorbed_spectrum(
    pop: Population, index: np.ndarray, wave: np.ndarray, field: np.ndarray
) -> np.ndarray:
    """Intrinsic spectrum times BAL troughs, forest, Lyman limit, LLS and DLAs."""
    flux = intrinsic_spectrum(pop, index, wave)
    z = pop.z[index]
    bal = np.flatnonzero(pop.is_bal[index])
    if bal.size:
        rows = index[bal]
        wave_rest = wave[None, :] / (1.0 + pop.z[rows][:, None])
        flux[bal] *= physics.bal_transmission(
            wave_rest, pop.bal_vmin[rows], pop.bal_vmax[rows], pop.bal_depth[rows]
        )
    tau = physics.forest_tau(wave[None, :], z, field, pop.tau_scale[index], FOREST_SIGMA_LN)
    lls = np.flatnonzero(np.isfinite(pop.lls_z[index]))
    if lls.size:
        tau[lls] += physics.lls_tau(wave[None, :], pop.lls_z[index[lls]], pop.lls_tau[index[lls]])
    for slot in range(pop.z_dla.shape[1]):
        dla = np.flatnonzero(np.isfinite(pop.z_dla[index, slot]))
        if dla.size:
            rows = index[dla]
            tau[dla] += physics.voigt_tau(wave[None, :], pop.z_dla[rows, slot],
                                          pop.log_nhi[rows, slot])
    return flux * np.exp(-tau)


def render_batch(pop: Population, index: np.ndarray, seeds: list[np.random.SeedSequence],
                 inst: Instrument) -> Batch:
    """Noisy spectra with ivar and masks whose median S/N matches each target."""
    field, eps, and_mask, or_mask = _random_fields(index, pop, seeds, inst)
    model = absorbed_spectrum(pop, index, inst.wave, field)
    sky = inst.sky[None, :] * pop.sky_scale[index][:, None]
    var_shape = (np.maximum(model, 0.0) + sky + noise.READ_NOISE) / inst.throughput[None, :]
    cols = np.arange(NGRID)[None, :]
    in_range = (cols >= pop.start[index][:, None]) & (cols <= pop.stop[index][:, None])
    # BRIGHTSKY flags sky-line cores but, as in real BOSS data, keeps their (sky-inflated)
    # variance: zeroing ivar there would mask the same pixels in every spectrum
    good = in_range & ((and_mask & ~noise.BRIGHTSKY) == 0)
    amplitude = noise.noise_amplitude(model, var_shape, good, pop.sn_target[index])
    sigma = np.sqrt(amplitude[:, None] * var_shape)
    flux = model + sigma * eps
    ivar = np.where(good, 1.0 / sigma**2, 0.0)
    return Batch(index, model, flux, ivar, sky, and_mask, or_mask, amplitude)
