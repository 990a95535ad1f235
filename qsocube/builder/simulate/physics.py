"""Pure, vectorised physics of the simulated quasars (no I/O, no random draws).

Every function works on a batch: per-quasar parameters are 1-D arrays of length B and
wavelength-dependent quantities are (B, N) arrays on the observed grid, so a batch of
spectra is computed without a per-spectrum Python loop.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.special import expit

C_KMS = 299792.458
LYA, LYB, LYMAN_LIMIT = 1215.67, 1025.72, 911.75  # rest wavelengths, Angstrom (vacuum)
CIV, SIIV = 1549.06, 1396.76

LAMBDA_I = 7480.0  # effective wavelength of the SDSS i band, Angstrom
CGS_C_AA = 2.99792458e18  # speed of light, Angstrom/s
FLUX_UNIT = 1e-17  # spec-lite flux unit, erg/s/cm^2/A


def flux_density_i(imag: np.ndarray) -> np.ndarray:
    """f_lambda at 7480 A (1e-17 erg/s/cm^2/A) of AB magnitude ``imag``."""
    f_nu = 10.0 ** (-0.4 * (np.asarray(imag) + 48.6))  # erg/s/cm^2/Hz
    return f_nu * CGS_C_AA / LAMBDA_I**2 / FLUX_UNIT


def ab_magnitude(f_lambda: np.ndarray, wave: np.ndarray) -> np.ndarray:
    """AB magnitude of a flux density f_lambda (1e-17 erg/s/cm^2/A) at ``wave`` (A)."""
    f_nu = np.maximum(f_lambda, 1e-30) * FLUX_UNIT * wave**2 / CGS_C_AA
    return -2.5 * np.log10(f_nu) - 48.6


def tau_eff(z_abs: np.ndarray) -> np.ndarray:
    """Effective Ly-alpha optical depth, 0.0018 (1+z)^3.92 (Faucher-Giguere et al. 2008)."""
    return 0.0018 * (1.0 + z_abs) ** 3.92


@lru_cache(maxsize=4)
def _lognormal_table(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Multipliers A(tau) with E[exp(-A tau e^(sigma g - sigma^2/2))] = exp(-tau), g ~ N(0,1).

    A lognormal optical depth with mean tau would transmit more than exp(-tau) on average
    (Jensen); A restores the mean transmission to the tau_eff law.
    """
    nodes, weights = np.polynomial.hermite_e.hermegauss(60)
    weights = weights / weights.sum()
    taus = np.geomspace(1e-4, 20.0, 120)
    lo, hi = np.full_like(taus, -3.0), np.full_like(taus, 6.0)  # bisection on log10 A
    lognorm = np.exp(sigma * nodes - 0.5 * sigma**2)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        mean_t = np.exp(-(10.0**mid)[:, None] * taus[:, None] * lognorm) @ weights
        too_transparent = mean_t > np.exp(-taus)
        lo = np.where(too_transparent, mid, lo)
        hi = np.where(too_transparent, hi, mid)
    return np.log(taus), 0.5 * (lo + hi)


def lognormal_tau(tau_mean: np.ndarray, field: np.ndarray, sigma: float) -> np.ndarray:
    """Fluctuating optical depth with <exp(-tau)> = exp(-tau_mean); ``field`` ~ N(0, 1)."""
    log_tau, log_a = _lognormal_table(sigma)
    scale = 10.0 ** np.interp(np.log(np.maximum(tau_mean, 1e-4)), log_tau, log_a)
    return scale * tau_mean * np.exp(sigma * field - 0.5 * sigma**2)


def forest_tau(
    wave_obs: np.ndarray, z: np.ndarray, field: np.ndarray, tau_scale: np.ndarray, sigma: float
) -> np.ndarray:
    """Ly-alpha + Ly-beta forest and Lyman-limit optical depth blueward of Ly-alpha."""
    one_z = 1.0 + z[:, None]
    in_lya = wave_obs < LYA * one_z
    z_a = np.where(in_lya, wave_obs / LYA - 1.0, 0.0)
    tau = np.where(in_lya, lognormal_tau(tau_scale[:, None] * tau_eff(z_a), field, sigma), 0.0)
    in_lyb = wave_obs < LYB * one_z
    z_b = np.where(in_lyb, wave_obs / LYB - 1.0, 0.0)
    # Ly-beta: f*lambda is 0.160 of Ly-alpha's; the field is reused (absorbers differ,
    # but only the one-point statistics matter here).
    tau_b = 0.160 * lognormal_tau(tau_scale[:, None] * tau_eff(z_b), field, sigma)
    tau = tau + np.where(in_lyb, tau_b, 0.0)
    # Below the Lyman limit of the quasar the flux is essentially gone.
    return tau + np.where(wave_obs < LYMAN_LIMIT * one_z, 6.0, 0.0)


def lls_tau(wave_obs: np.ndarray, z_lls: np.ndarray, tau_912: np.ndarray) -> np.ndarray:
    """Partial Lyman-limit system: tau_912 (lambda/lambda_LL)^3 below its limit."""
    edge = LYMAN_LIMIT * (1.0 + z_lls[:, None])
    ratio = wave_obs / edge
    return np.where(ratio < 1.0, tau_912[:, None] * ratio**3, 0.0)


def voigt_tau(
    wave_obs: np.ndarray, z_abs: np.ndarray, log_nhi: np.ndarray, b_kms: float = 30.0
) -> np.ndarray:
    """Ly-alpha optical depth of damped absorbers (Voigt profile, Tepper-Garcia 2006)."""
    f_osc, gamma = 0.4164, 6.265e8
    lam0_cm = LYA * 1e-8
    b_cms = b_kms * 1e5
    a = gamma * lam0_cm / (4.0 * np.pi * b_cms)
    x = (C_KMS / b_kms) * (LYA * (1.0 + z_abs[:, None]) / wave_obs - 1.0)
    x2 = np.maximum(x * x, 1e-12)
    h0 = np.exp(-x2)
    q = 1.5 / x2
    wing = a / (np.sqrt(np.pi) * x2) * (h0 * h0 * (4.0 * x2 * x2 + 7.0 * x2 + 4.0 + q) - q - 1.0)
    h = np.where(np.abs(x) < 1e-3, h0, h0 - wing)
    sigma0 = 0.02654 * f_osc / (np.sqrt(np.pi) * b_cms / lam0_cm)  # cm^2 at line centre
    return (10.0 ** log_nhi[:, None]) * sigma0 * h


def outflow_velocity(wave_rest: np.ndarray, line: float) -> np.ndarray:
    """Relativistic blueshift velocity (km/s, positive = towards us) relative to ``line``."""
    r2 = (line / wave_rest) ** 2
    return C_KMS * (r2 - 1.0) / (r2 + 1.0)


def trough(v: np.ndarray, vmin: np.ndarray, vmax: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Normalised flux of a smooth-edged BAL trough: 1 - depth inside [vmin, vmax]."""
    edge = 350.0  # km/s; softens the box like real trough edges
    rise = expit((v - vmin[..., None]) / edge)
    fall = expit((vmax[..., None] - v) / edge)
    return 1.0 - depth[..., None] * rise * fall


SIIV_DEPTH_RATIO = 0.7  # Si IV troughs are shallower than C IV ones at the same velocities


def bal_transmission(
    wave_rest: np.ndarray, vmin: np.ndarray, vmax: np.ndarray, depth: np.ndarray
) -> np.ndarray:
    """C IV and Si IV troughs at the same velocities (Si IV weaker), multiplied."""
    t_civ = trough(outflow_velocity(wave_rest, CIV), vmin, vmax, depth)
    t_siiv = trough(outflow_velocity(wave_rest, SIIV), vmin, vmax, SIIV_DEPTH_RATIO * depth)
    return t_civ * t_siiv



def balnicity(vmin: np.ndarray, vmax: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """BALnicity index (km/s) of the noise-free trough, Weymann et al. (1991) definition.

    BI = integral over 3000-25000 km/s of (1 - f/0.9) C dv, where C = 1 only once the
    flux has stayed below 90% of the continuum for 2000 km/s without interruption.
    """
    dv = 10.0
    v = np.arange(0.0, 25000.0 + dv, dv)
    flux = trough(v, vmin, vmax, depth)
    absorbed = 1.0 - flux / 0.9
    below = absorbed > 0.0
    idx = np.arange(v.size)
    last_gap = np.maximum.accumulate(np.where(below, -1, idx), axis=-1)
    run = (idx - last_gap) * dv  # km/s of uninterrupted absorption up to each pixel
    counted = below & (run > 2000.0) & (v >= 3000.0)
    return np.where(counted, absorbed, 0.0).sum(axis=-1) * dv


def absolute_mag_i(imag: np.ndarray, dist_mod: np.ndarray, z: np.ndarray, alpha: np.ndarray):
    """M_i K-corrected to z = 2 with the quasar's own power law (Richards et al. 2006 style)."""
    return imag - dist_mod + 2.5 * (1.0 + alpha) * np.log10((1.0 + z) / 3.0)


def log_l2500(imag: np.ndarray, alpha: np.ndarray, z: np.ndarray, dl_cm: np.ndarray):
    """log10 of L_nu at rest 2500 A (erg/s/Hz) from the i-band-normalised power law."""
    f_nu_i = 10.0 ** (-0.4 * (imag + 48.6))
    f_nu = f_nu_i * (2500.0 * (1.0 + z) / LAMBDA_I) ** (-alpha)
    return np.log10(4.0 * np.pi * dl_cm**2 * f_nu / (1.0 + z))


def xray_fluxes(log_l2500_nu: np.ndarray, alpha_ox: np.ndarray, z: np.ndarray, dl_cm):
    """Observed 0.2-2, 2-12 and 0.2-12 keV fluxes (erg/s/cm^2) of a Gamma = 1.9 power law.

    L_nu(2 keV) follows from alpha_ox = 0.3838 log(L_2keV / L_2500). An observed band
    [E1, E2] collects the rest-frame band [E1, E2](1+z): F = integral of L_nu / (4 pi d_L^2).
    """
    gamma = 1.9
    l_2kev = 10.0 ** (log_l2500_nu + alpha_ox / 0.3838)  # erg/s/Hz
    nu_2kev = 2.0 * 2.417989e17  # Hz
    p = 2.0 - gamma  # integral of (nu/nu_2keV)^(1-Gamma) d nu = nu_2keV x^p / p

    def band(e_lo: float, e_hi: float) -> np.ndarray:
        x_lo, x_hi = e_lo * (1.0 + z) / 2.0, e_hi * (1.0 + z) / 2.0
        return l_2kev * nu_2kev * (x_hi**p - x_lo**p) / p / (4.0 * np.pi * dl_cm**2)

    soft, hard = band(0.2, 2.0), band(2.0, 12.0)
    return soft, hard, soft + hard
