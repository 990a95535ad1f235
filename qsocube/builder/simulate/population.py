"""Draw the survey: every per-object scalar (class, redshift, brightness, spectral shape,
absorbers, plate), at once for the whole survey from one survey-level stream.

So nothing here depends on how the spectra are later batched; only per-pixel randomness
(forest field, noise, masks) comes from per-spectrum substreams (see survey.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.cosmology import FlatLambdaCDM

from . import contaminants, physics, quasars
from .instrument import DLOGLAM, LOGLAM, LOGLAM0
from .instrument import NPIX as NGRID
from .physics import LYA, LYMAN_LIMIT
from .templates import Library

# Share of spectra from the SDSS-I/II spectrograph and its pixel range on the global frame
# (first pixels 3.5800-3.5834 dex, 3802-3832 A; last 3.9630-3.9645 dex, 9183-9214 A, as in
# the legacy spec-lite files of ../shared/data)
LEGACY_FRACTION = 0.15
LEGACY_START, LEGACY_STOP = (310, 345), (4140, 4156)

# DR16Q's cosmology for M_I (Lyke et al. 2020): H0 = 67.6, Om = 0.31, OL = 0.69.
COSMO = FlatLambdaCDM(H0=67.6, Om0=0.31)
BAL_Z_RANGE = (1.57, 5.6)  # C IV BAL search range of DR16Q (Guo & Martini 2019 CNN)
BANDS = np.array([3551.0, 4686.0, 6166.0, 7480.0, 8932.0])  # u g r i z effective, A
N_BANDS = BANDS.size
MJD_RANGE = (55176, 58543)  # first BOSS to last eBOSS plate
PLATE_RANGE = (3586, 11500)
# DR16Q-like redshifts, weighted towards the low-redshift quasars that the S/N >= 10 cut
# favours (they are the bright ones): components (weight, mean, width)
REDSHIFT_MIXTURE = ((0.07, 0.35, 0.2), (0.13, 0.9, 0.3), (0.33, 1.6, 0.45),
                    (0.33, 2.45, 0.4), (0.11, 3.2, 0.45), (0.03, 3.9, 0.6))
# Luminosities of the S/N >= 10 sample: M_I ~ N(-23 - 5 log10(1+z), 0.7), which follows the
# real quasars behind the templates (median M_I -23.1 at z < 0.2, -24.1 at 0.35-0.6) and
# the brighter quasars such a cut keeps at high redshift (-25.4 at z = 2).
M_I_AT_Z0, M_I_PER_LOG1PZ, M_I_SCATTER = -23.0, -5.0, 0.7


@dataclass
class Population:
    """Per catalogue row truth and catalogue inputs; every array has length n (or n x k)."""

    z: np.ndarray  # true redshift
    z_cat: np.ndarray  # catalogue ("pipeline") redshift
    imag: np.ndarray  # i-band AB magnitude of the noiseless spectrum
    m_i: np.ndarray  # absolute i magnitude (K-corrected to z = 2, alpha_nu = -0.5)
    log_l2500: np.ndarray
    shapes: quasars.QuasarShapes  # eigen-coefficients and host (quasars)
    distortion: np.ndarray  # (n, 2) smooth calibration/reddening coefficients
    objects: contaminants.Contaminants
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
    extra: dict[str, np.ndarray]  # catalogue measurement draws (noise of reported values)

    def __len__(self) -> int:
        return len(self.z)


def _redshifts(rng: np.random.Generator, n: int) -> np.ndarray:
    weight, mean, width = map(np.array, zip(*REDSHIFT_MIXTURE, strict=True))
    comp = rng.choice(len(weight), size=n, p=weight / weight.sum())
    z = mean[comp] + width[comp] * rng.standard_normal(n)
    return np.clip(np.abs(z), 0.05, 6.4)


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


def draw_population(rng: np.random.Generator, n: int, missing_fraction: float, lib: Library,
                    fractions: contaminants.ContaminantFractions) -> Population:
    """Draw the whole survey's per-object parameters (vectorised over all n)."""
    objects = contaminants.draw(rng, n, fractions, lib)
    z = _redshifts(rng, n)
    z_cat = z + rng.normal(0.0, 250.0 / physics.C_KMS, n) * (1.0 + z)  # ~250 km/s errors
    stars, galaxies = (objects.object_class == contaminants.STAR,
                       objects.object_class == contaminants.GALAXY)
    z = np.where(stars, rng.normal(0.0, 1e-4, n), np.where(galaxies, objects.galaxy_z, z))
    z_cat = np.where(galaxies, z, z_cat)  # a star keeps the quasar redshift it was given
    wrong = objects.artefact == contaminants.WRONG_Z
    z_cat = np.where(wrong, contaminants.misidentified_redshift(z, rng), z_cat)
    quasar = objects.object_class == contaminants.QSO
    dist_mod = COSMO.distmod(np.maximum(z, 1e-3)).value
    # brightness relative to what is typical at that redshift sets the S/N below
    relative = rng.normal(0.0, M_I_SCATTER, n)
    m_i = M_I_AT_Z0 + M_I_PER_LOG1PZ * np.log10(1 + np.maximum(z, 0.0)) + relative
    imag = m_i + dist_mod - 2.5 * 0.5 * np.log10((1 + z) / 3.0)  # inverse of absolute_mag_i
    # stars and galaxies: apparent magnitudes of faint quasar targets
    imag = np.where(quasar, imag, np.clip(19.5 + relative, 16.0, 22.0))
    m_i = np.where(quasar, m_i, physics.absolute_mag_i(imag, dist_mod, z, -0.5))
    dl_cm = COSMO.luminosity_distance(np.maximum(z, 1e-3)).to_value("cm")
    log_l = physics.log_l2500(imag, np.full(n, -0.5), z, dl_cm)
    shapes = quasars.draw_shapes(rng, np.maximum(z, 0.0), m_i, lib, LOGLAM)
    distortion = np.empty((n, 2))
    normal = rng.standard_normal((n, 2))
    for qset, rows in ((lib.loz, ~shapes.hiz), (lib.hiz, shapes.hiz)):
        chol = np.linalg.cholesky(qset.distortion_cov)
        distortion[rows] = qset.distortion_mean + normal[rows] @ chol.T
    tau_scale = rng.lognormal(0.0, 0.10, n)
    # BALs: 13% of quasars, trough 0-29000 km/s blueward of C IV and Si IV.
    is_bal = quasar & (objects.artefact == 0) & (rng.random(n) < 0.13)
    vmin = rng.uniform(500.0, 14000.0, n)
    vmax = np.minimum(vmin + np.clip(rng.lognormal(np.log(5000.0), 0.6, n), 1200, 20000), 29000)
    depth = np.where(is_bal, rng.uniform(0.25, 0.9, n), 0.0)
    bi, bi_siiv = np.zeros(n), np.zeros(n)
    bi[is_bal] = physics.balnicity(vmin[is_bal], vmax[is_bal], depth[is_bal])
    bi_siiv[is_bal] = physics.balnicity(vmin[is_bal], vmax[is_bal],
                                        physics.SIIV_DEPTH_RATIO * depth[is_bal])
    # Pixel range: almost all spectra start blueward of 3625 A (the study's 3625-9000 A
    # coverage holds for 21,771 of 21,859 files); a few start as late as 3.58 dex. A
    # spectrum also ends where its templates do.
    late = rng.random(n) < 0.005
    start = np.where(late, rng.integers(104, 311, n), rng.integers(0, 100, n))
    stop = rng.integers(4640, NGRID, n)
    # DR16Q also holds spectra from the SDSS-I/II spectrograph, 3800-9200 A: without them
    # a model reads a real legacy spectrum's missing blue end as a Lyman-alpha forest (half
    # of the real quasars in ../shared/data are such spectra; their codes sat at z ~ 2.7).
    legacy = rng.random(n) < LEGACY_FRACTION
    start = np.where(legacy, rng.integers(*LEGACY_START, n), start)
    stop = np.where(legacy, rng.integers(*LEGACY_STOP, n), stop)
    first, last = quasars.coverage(np.maximum(z, 0.0), shapes.hiz, LOGLAM, lib)
    first_gal, last_gal = quasars.coverage_of(lib.galaxy_loglam0, lib.galaxy_basis.shape[1],
                                              np.maximum(z, 0.0), LOGLAM)
    start = np.where(galaxies, np.maximum(start, first_gal),
                     np.where(quasar, np.maximum(start, first), start))
    stop = np.where(galaxies, np.minimum(stop, last_gal),
                    np.where(quasar, np.minimum(stop, last), stop))
    start_wave = 10.0 ** (LOGLAM0 + DLOGLAM * start)
    n_dla, z_dla, log_nhi = _dlas(rng, z, start_wave)
    n_dla, z_dla = np.where(quasar, n_dla, 0), np.where(quasar[:, None], z_dla, np.nan)
    log_nhi = np.where(quasar[:, None], log_nhi, np.nan)
    lls = quasar & (z > 3.05) & (rng.random(n) < 0.25)
    lls_z = rng.uniform(3600.0 / LYMAN_LIMIT - 1, np.maximum(z - 0.1, 3.0), n)
    lls_z = np.where(lls, lls_z, np.nan)
    lls_tau = np.where(lls, rng.uniform(0.3, 2.5, n), 0.0)
    plates = _plates(rng, n)
    # S/N: brighter and on better plates -> higher; ~85% of spectra end up at >= 10.
    sn_target = np.exp(np.log(15.5) - 0.55 * 0.921 * relative
                       + 0.5 * np.log(plates["platesn2"] / 17.0) + rng.normal(0, 0.25, n))
    # a dead fibre's S/N is that of the little light it gets
    sn_target = np.where(objects.artefact == contaminants.DEAD_FIBRE,
                         sn_target * contaminants.DEAD_FIBRE_LIGHT, sn_target)
    has_xray = quasar & (rng.random(n) < 0.03)
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
        z=z, z_cat=z_cat, imag=imag, m_i=m_i, log_l2500=log_l, shapes=shapes,
        distortion=distortion, objects=objects, tau_scale=tau_scale, is_bal=is_bal,
        bal_vmin=vmin, bal_vmax=vmax, bal_depth=depth, bi_civ=bi, bi_siiv=bi_siiv,
        n_dla=n_dla, z_dla=z_dla, log_nhi=log_nhi, lls_z=lls_z, lls_tau=lls_tau,
        sn_target=sn_target, start=start, stop=stop,
        has_spectrum=rng.random(n) >= missing_fraction, has_xray=has_xray,
        alpha_ox=alpha_ox, dist_mod=dist_mod, dl_cm=dl_cm, thing_id=thing_id, extra=extra,
        **plates,
    )
