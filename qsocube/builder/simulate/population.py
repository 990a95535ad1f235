"""Draw the survey: every per-quasar scalar (redshift, brightness, lines, absorbers, plate).

All of it is drawn at once for the whole survey from one survey-level stream, so it does
not depend on how the spectra are later batched; only per-pixel randomness (forest field,
noise, masks) comes from per-spectrum substreams (see survey.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.cosmology import FlatLambdaCDM

from . import physics
from .lines import LINE_BALDWIN, LINE_BROAD, LINE_EW, LINE_SIGMA_KMS, LYA, LYMAN_LIMIT

# DR16Q's cosmology for M_I (Lyke et al. 2020): H0 = 67.6, Om = 0.31, OL = 0.69.
COSMO = FlatLambdaCDM(H0=67.6, Om0=0.31)
BAL_Z_RANGE = (1.57, 5.6)  # C IV BAL search range of DR16Q (Guo & Martini 2019 CNN)
LOGLAM0, DLOGLAM = 3.5490, 1e-4  # first pixel of the global observed grid; SDSS step
NGRID = 4681  # global grid 3.5490 .. 4.0170
BANDS = np.array([3551.0, 4686.0, 6166.0, 7480.0, 8932.0])  # u g r i z effective, A
N_BANDS = BANDS.size
MJD_RANGE = (55176, 58543)  # first BOSS to last eBOSS plate
PLATE_RANGE = (3586, 11500)


@dataclass
class Population:
    """Per-quasar truth and catalogue inputs; every array has length n (or n x k)."""

    z: np.ndarray  # true redshift
    z_cat: np.ndarray  # catalogue ("pipeline") redshift
    imag: np.ndarray
    alpha: np.ndarray
    ew: np.ndarray  # (n, L) rest EW, Angstrom
    sigma_kms: np.ndarray  # (n, L)
    bump_scale: np.ndarray
    tau_scale: np.ndarray
    is_bal: np.ndarray
    bal_vmin: np.ndarray
    bal_vmax: np.ndarray
    bal_depth: np.ndarray
    bi_civ: np.ndarray
    bi_siiv: np.ndarray
    n_dla: np.ndarray
    z_dla: np.ndarray  # (n, 5), NaN in empty slots
    log_nhi: np.ndarray  # (n, 5)
    lls_z: np.ndarray  # NaN when no partial LLS
    lls_tau: np.ndarray
    sn_target: np.ndarray
    sky_scale: np.ndarray
    start: np.ndarray  # first and last pixel index on the global grid
    stop: np.ndarray
    plate: np.ndarray
    mjd: np.ndarray
    fiberid: np.ndarray
    tile: np.ndarray
    platesn2: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    thing_id: np.ndarray
    has_spectrum: np.ndarray
    has_xray: np.ndarray
    alpha_ox: np.ndarray
    dist_mod: np.ndarray
    dl_cm: np.ndarray
    m_i: np.ndarray
    log_l2500: np.ndarray
    extra: dict[str, np.ndarray]  # catalogue measurement draws (noise of reported values)

    def __len__(self) -> int:
        return len(self.z)


def _redshifts(rng: np.random.Generator, n: int) -> np.ndarray:
    """DR16Q-like: broad, peaked at 1.5-2.5, tail beyond 4, a few per cent below 0.5."""
    comp = rng.choice(5, size=n, p=[0.06, 0.40, 0.40, 0.11, 0.03])
    mean = np.array([0.75, 1.55, 2.45, 3.2, 3.9])[comp]
    width = np.array([0.35, 0.45, 0.40, 0.45, 0.6])[comp]
    z = mean + width * rng.standard_normal(n)
    return np.clip(np.abs(z), 0.08, 6.4)


def _plates(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    n_plates = max(1, int(np.ceil(n / 140)))
    ids = np.sort(rng.choice(np.arange(*PLATE_RANGE), size=n_plates, replace=False))
    frac = (ids - PLATE_RANGE[0]) / (PLATE_RANGE[1] - PLATE_RANGE[0])
    mjd = (MJD_RANGE[0] + frac * np.diff(MJD_RANGE)[0] + rng.normal(0, 40, n_plates)).astype(int)
    mjd = np.clip(mjd, *MJD_RANGE)
    ngc = rng.random(n_plates) < 0.7  # NGC and SGC caps of the BOSS/eBOSS footprint
    ra_c = np.where(ngc, rng.uniform(120, 250, n_plates), rng.uniform(-40, 45, n_plates) % 360)
    sin_dec = np.where(ngc, rng.uniform(-0.05, 0.9, n_plates), rng.uniform(-0.15, 0.55, n_plates))
    dec_c = np.degrees(np.arcsin(sin_dec))
    platesn2 = np.clip(rng.normal(17.0, 4.0, n_plates), 8.0, 40.0)
    which = rng.integers(0, n_plates, n)
    fiber = np.zeros(n, dtype=np.int64)
    for p in range(n_plates):  # per plate, not per spectrum: distinct fibres 1..1000
        rows = np.flatnonzero(which == p)
        fiber[rows] = rng.choice(1000, size=rows.size, replace=False) + 1
    r = 1.49 * np.sqrt(rng.random(n))  # uniform on the 1.49-deg plate radius
    phi = rng.uniform(0, 2 * np.pi, n)
    dec = np.clip(dec_c[which] + r * np.sin(phi), -89.9, 89.9)
    ra = (ra_c[which] + r * np.cos(phi) / np.cos(np.radians(dec))) % 360.0
    return {
        "plate": ids[which].astype(np.int64), "mjd": mjd[which].astype(np.int64),
        "fiberid": fiber, "tile": (10000 + ids[which] // 2).astype(np.int64),
        "platesn2": platesn2[which], "ra": ra, "dec": dec,
    }


def _dlas(rng: np.random.Generator, z: np.ndarray, start_wave: np.ndarray):
    n = len(z)
    z_lo = np.maximum((start_wave + 30.0) / LYA - 1.0, (1 + z) * (LYMAN_LIMIT + 40) / LYA - 1)
    z_hi = z - 0.015 * (1.0 + z)  # avoid proximate absorbers
    has = (z > 2.0) & (z_hi > z_lo + 0.05) & (rng.random(n) < 0.07)
    count = np.where(has, 1 + (rng.random(n) < 0.12), 0)
    u = rng.random((n, 5))
    drawn = z_lo[:, None] + u * (z_hi - z_lo)[:, None]
    z_dla = np.where(np.arange(5) < count[:, None], drawn, np.nan)
    # f(N_HI) ~ N^-2 above 10^20.3: log N exponential with scale 1/ln 10.
    log_nhi = 20.3 + rng.exponential(1.0 / np.log(10.0), (n, 5))
    log_nhi = np.where(np.isnan(z_dla), np.nan, np.minimum(log_nhi, 22.3))
    return count, z_dla, log_nhi


def draw_population(rng: np.random.Generator, n: int, missing_fraction: float) -> Population:
    """Draw the whole survey's per-quasar parameters (vectorised over all n)."""
    z = _redshifts(rng, n)
    z_cat = z + rng.normal(0.0, 250.0 / physics.C_KMS, n) * (1.0 + z)  # ~250 km/s errors
    imag = np.clip(rng.normal(20.1, 0.6, n), 17.5, 22.3)
    alpha = rng.normal(-0.44, 0.3, n)  # Vanden Berk et al. 2001 slope, scattered
    dl_cm = COSMO.luminosity_distance(z).to_value("cm")
    dist_mod = COSMO.distmod(z).value
    m_i = physics.absolute_mag_i(imag, dist_mod, z, alpha)
    log_l = physics.log_l2500(imag, alpha, z, dl_cm)
    # Lines: Baldwin effect around the median luminosity, a shared strength factor and
    # a shared broad-line velocity factor (a proxy for black-hole mass), plus own scatter.
    n_lines = LINE_EW.size
    common = rng.normal(0.0, 0.10, n)[:, None]
    log_ew = (np.log10(LINE_EW) + LINE_BALDWIN * (log_l - np.median(log_l))[:, None]
              + common + rng.normal(0.0, 0.10, (n, n_lines)))
    velocity = rng.normal(0.0, 0.10, n)[:, None]
    log_sigma = (np.log10(LINE_SIGMA_KMS) + np.where(LINE_BROAD, velocity, 0.0)
                 + rng.normal(0.0, 0.04, (n, n_lines)))
    bump_scale = rng.lognormal(0.0, 0.25, n)
    tau_scale = rng.lognormal(0.0, 0.10, n)
    # BALs: 13% of quasars, trough 0-29000 km/s blueward of C IV and Si IV.
    is_bal = rng.random(n) < 0.13
    vmin = rng.uniform(500.0, 14000.0, n)
    vmax = np.minimum(vmin + np.clip(rng.lognormal(np.log(5000.0), 0.6, n), 1200, 20000), 29000)
    depth = np.where(is_bal, rng.uniform(0.25, 0.9, n), 0.0)
    bi, bi_siiv = np.zeros(n), np.zeros(n)
    bi[is_bal] = physics.balnicity(vmin[is_bal], vmax[is_bal], depth[is_bal])
    bi_siiv[is_bal] = physics.balnicity(vmin[is_bal], vmax[is_bal],
                                        physics.SIIV_DEPTH_RATIO * depth[is_bal])
    # Pixel range: almost all spectra start blueward of 3625 A (the study's 3625-9000 A
    # coverage holds for 21,771 of 21,859 files); a few start as late as 3.58 dex.
    late = rng.random(n) < 0.005
    start = np.where(late, rng.integers(104, 311, n), rng.integers(0, 100, n))
    stop = rng.integers(4640, NGRID, n)
    start_wave = 10.0 ** (LOGLAM0 + DLOGLAM * start)
    n_dla, z_dla, log_nhi = _dlas(rng, z, start_wave)
    lls = (z > 3.05) & (rng.random(n) < 0.25)
    lls_z = rng.uniform(3600.0 / LYMAN_LIMIT - 1, np.maximum(z - 0.1, 3.0), n)
    lls_z = np.where(lls, lls_z, np.nan)
    lls_tau = np.where(lls, rng.uniform(0.3, 2.5, n), 0.0)
    plates = _plates(rng, n)
    # S/N: brighter and on better plates -> higher; ~85-88% of spectra end up at >= 10.
    sn_target = np.exp(np.log(15.5) - 0.55 * 0.921 * (imag - 20.1)
                       + 0.5 * np.log(plates["platesn2"] / 17.0) + rng.normal(0, 0.25, n))
    has_xray = rng.random(n) < 0.03
    # Steffen et al. (2006): alpha_ox = -0.137 log L2500 + 2.638 (~ -1.5), 0.1 scatter.
    alpha_ox = -0.137 * log_l + 2.638 + rng.normal(0.0, 0.1, n)
    thing_id = rng.permutation(100_000_000 + np.cumsum(rng.integers(1, 20_000, n)))
    extra = {
        "dla_nhi_err": rng.normal(0.0, 0.12, (n, 5)),
        "dla_z_err": rng.normal(0.0, 0.003, (n, 5)),
        "dla_conf_noise": rng.normal(0.0, 0.06, (n, 5)),
        "bal_score_noise": rng.standard_normal(n),
        "xray_err": rng.uniform(0.08, 0.3, (n, 3)),
        "xray_noise": rng.standard_normal((n, 3)),
        "mag_err_noise": rng.normal(0.0, 1.0, (n, N_BANDS)),
    }
    return Population(
        z=z, z_cat=z_cat, imag=imag, alpha=alpha, ew=10.0**log_ew, sigma_kms=10.0**log_sigma,
        bump_scale=bump_scale, tau_scale=tau_scale, is_bal=is_bal, bal_vmin=vmin,
        bal_vmax=vmax, bal_depth=depth, bi_civ=bi, bi_siiv=bi_siiv, n_dla=n_dla, z_dla=z_dla,
        log_nhi=log_nhi, lls_z=lls_z, lls_tau=lls_tau, sn_target=sn_target,
        sky_scale=rng.lognormal(0.0, 0.2, n), start=start, stop=stop,
        has_spectrum=rng.random(n) >= missing_fraction, has_xray=has_xray,
        alpha_ox=alpha_ox, dist_mod=dist_mod, dl_cm=dl_cm, m_i=m_i, log_l2500=log_l,
        thing_id=thing_id, extra=extra, **plates,
    )
