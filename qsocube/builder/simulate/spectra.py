"""Render a batch of spectra: intrinsic light, absorbers, calibration, instrument and noise.

All spectra of a batch are computed on one global observed frame (B, NGRID); each is later
cut to its own pixel range. Per-pixel randomness (forest field, then everything the
instrument draws) comes from each spectrum's own generator, in a fixed order, so the
output does not depend on the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from . import contaminants, instrument, physics, quasars
from .contaminants import GALAXY, QSO, STAR
from .instrument import LOGLAM, NPIX, WAVE
from .population import BANDS, Population
from .templates import Library

FOREST_SIGMA_LN = 1.2  # lognormal scatter of the forest optical depth per pixel
FOREST_CORR_PIX = 1.2  # Gaussian correlation length of the forest field, pixels
I_BAND = (WAVE > 7300.0) & (WAVE < 7660.0)  # where imag normalises a spectrum
_P1 = (np.log10(WAVE) - 3.8) / 0.2
CALIBRATION_TERMS = np.stack([_P1, 0.5 * (3 * _P1**2 - 1)])  # Legendre 1 and 2


@dataclass
class Batch:
    """Rendered spectra on the global frame; rows follow ``index``."""

    index: np.ndarray
    model: np.ndarray  # noiseless observed flux, spectrophotometric distortion included
    flux: np.ndarray
    ivar: np.ndarray
    sky: np.ndarray
    and_mask: np.ndarray
    or_mask: np.ndarray
    wdisp: np.ndarray
    amplitude: np.ndarray  # noise depth A per spectrum (truth)
    photometry: np.ndarray  # (B, 5) ugriz AB magnitudes of the noiseless light


def forest_field(rngs: list[np.random.Generator]) -> np.ndarray:
    """Unit-variance Gaussian field correlated over ~a resolution element, per spectrum."""
    field = np.stack([rng.standard_normal(NPIX) for rng in rngs])
    field = gaussian_filter1d(field, FOREST_CORR_PIX, axis=1, mode="wrap")
    kernel = gaussian_filter1d(np.eye(1, 41, 20)[0], FOREST_CORR_PIX)
    return field / np.sqrt(np.sum(kernel**2))


def absorption(pop: Population, index: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Transmission (B, N) of BAL troughs, the forest, Lyman limit, LLS and DLAs."""
    z = pop.z[index]
    quasar = pop.objects.object_class[index] == QSO
    transmission = np.ones((len(index), NPIX))
    bal = np.flatnonzero(pop.is_bal[index])
    if bal.size:
        rows = index[bal]
        wave_rest = WAVE[None, :] / (1.0 + pop.z[rows][:, None])
        transmission[bal] = physics.bal_transmission(
            wave_rest, pop.bal_vmin[rows], pop.bal_vmax[rows], pop.bal_depth[rows])
    tau = np.where(quasar[:, None], physics.forest_tau(
        WAVE[None, :], np.maximum(z, 0.0), field, pop.tau_scale[index], FOREST_SIGMA_LN), 0.0)
    lls = np.flatnonzero(np.isfinite(pop.lls_z[index]))
    if lls.size:
        tau[lls] += physics.lls_tau(WAVE[None, :], pop.lls_z[index[lls]], pop.lls_tau[index[lls]])
    for slot in range(pop.z_dla.shape[1]):
        dla = np.flatnonzero(np.isfinite(pop.z_dla[index, slot]))
        if dla.size:
            rows = index[dla]
            tau[dla] += physics.voigt_tau(WAVE[None, :], pop.z_dla[rows, slot],
                                          pop.log_nhi[rows, slot])
    return transmission * np.exp(-tau)


def light(pop: Population, index: np.ndarray, field: np.ndarray, lib: Library) -> np.ndarray:
    """Noiseless observed flux (B, N), 1e-17 erg/s/cm^2/A, scaled to each object's imag:
    quasars (eigenspectra, host, calibration term, absorbers), stars and galaxies."""
    kind = pop.objects.object_class[index]
    out = np.zeros((len(index), NPIX))
    for label, render in (
        (QSO, lambda rows: quasars.intrinsic(pop.shapes, rows, pop.z, LOGLAM, lib)
         * np.exp(pop.distortion[rows] @ CALIBRATION_TERMS)),
        (STAR, lambda rows: contaminants.star_spectra(pop.objects.star_type[rows],
                                                      pop.objects.archetype[rows], lib)),
        (GALAXY, lambda rows: contaminants.galaxy_spectra(pop.objects.archetype[rows],
                                                          pop.z[rows], LOGLAM, lib)),
    ):
        use = kind == label
        if use.any():
            out[use] = render(index[use])
    out = np.maximum(np.nan_to_num(out), 0.0) * absorption(pop, index, field)
    scale = physics.flux_density_i(pop.imag[index]) / np.maximum(
        np.median(out[:, I_BAND], axis=1), 1e-30)
    return out * scale[:, None]


def photometry(model: np.ndarray) -> np.ndarray:
    """ugriz AB magnitudes (B, 5): median flux density within 8% of each band's centre."""
    mags = np.empty((len(model), len(BANDS)))
    for k, centre in enumerate(BANDS):
        window = np.abs(WAVE - centre) < 0.08 * centre
        mags[:, k] = physics.ab_magnitude(np.median(model[:, window], axis=1), centre)
    return mags


def render_batch(pop: Population, index: np.ndarray, seeds: list[np.random.SeedSequence],
                 lib: Library, inst: instrument.InstrumentData) -> Batch:
    """Noisy spectra with ivar and masks whose median S/N matches each target."""
    rngs = [np.random.default_rng(seeds[i]) for i in index]
    field = forest_field(rngs)
    model = light(pop, index, field, lib)
    mags = photometry(model)
    artefact, factor = pop.objects.artefact[index], pop.objects.factor[index]
    model = np.where((artefact == contaminants.DEAD_FIBRE)[:, None],
                     model * contaminants.DEAD_FIBRE_LIGHT, model)
    misfluxed = artefact == contaminants.MISFLUXED
    model[misfluxed] = contaminants.misflux(model[misfluxed], factor[misfluxed], WAVE)
    cols = np.arange(NPIX)[None, :]
    in_range = (cols >= pop.start[index][:, None]) & (cols <= pop.stop[index][:, None])
    seen = instrument.observe(model, in_range, pop.sn_target[index], rngs, inst)
    flux = seen["flux"]
    # a failed sky subtraction leaves part of the sky in (or takes it out twice)
    failed = artefact == contaminants.SKY_FAILURE
    flux[failed] += factor[failed, None] * seen["sky"][failed] * in_range[failed]
    # the pipeline's model follows the distortion its spectrophotometry left in
    return Batch(index, model * seen["distortion"] * in_range, flux, seen["ivar"],
                 seen["sky"], seen["and_mask"], seen["or_mask"], seen["wdisp"],
                 seen["amplitude"], mags)
