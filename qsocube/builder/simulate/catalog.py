"""Catalogue (DR16Q_v4 columns) and truth table of a simulated survey.

The catalogue holds what a survey pipeline would *measure* (catalogue redshift, detected
DLAs with errors, BALnicity where DR16Q searches for BALs, a noisy BAL probability, the
median S/N of the written spectrum); truth.fits holds the parameters the spectra were
made from. Missing values are NaN here; qsocube.builder.dr16q writes them as DR16Q sentinels.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from . import physics
from .contaminants import ARTEFACTS, OBJECT_CLASSES, STAR_WEIGHTS
from .population import BAL_Z_RANGE, COSMO, DLOGLAM, LOGLAM0, Population

SIIV_WINDOW_BLUE = 1281.0  # rest A of Si IV at 25000 km/s: the BI_SIIV window must fit


def sdss_name(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """DR16Q designations ``hhmmss.ss+ddmmss.s`` (truncated, not rounded, like SDSS).

    DR16Q's SDSS_NAME is 18A and holds the designation without the leading "J" (the
    18 characters of hhmmss.ss+ddmmss.s); the full name is "SDSS J" + SDSS_NAME.
    """
    cs = np.floor(ra / 15.0 * 3600.0 * 100.0 + 1e-6).astype(np.int64)  # centi-seconds
    ds = np.floor(np.abs(dec) * 3600.0 * 10.0 + 1e-6).astype(np.int64)  # deci-arcsec
    sign = np.where(dec < 0, "-", "+")
    return np.array(
        [
            f"{c // 360000:02d}{c // 6000 % 60:02d}{c % 6000 // 100:02d}.{c % 100:02d}"
            f"{s}{d // 36000:02d}{d // 600 % 60:02d}{d % 600 // 10:02d}.{d % 10:d}"
            for c, d, s in zip(cs, ds, sign, strict=True)
        ]
    )


def _photometry(mags: np.ndarray, pop: Population) -> dict[str, np.ndarray]:
    """ugriz PSF photometry: the noiseless spectrum's magnitudes plus photometric errors."""
    err = np.clip(0.02 * 10.0 ** (0.4 * (mags - 20.0)), 0.01, 1.5)
    mag = mags + err * pop.extra["mag_err_noise"]
    flux = 10.0 ** (-0.4 * (mag - 22.5))  # nanomaggies
    return {"PSFMAG": mag, "PSFMAGERR": err, "PSFFLUX": flux,
            "PSFFLUX_IVAR": 1.0 / (0.921 * flux * err) ** 2, "EXTINCTION": np.zeros_like(mag)}


def _bi_error(bi: np.ndarray) -> np.ndarray:
    """A plausible BI uncertainty: 10% plus 50 km/s for troughs, 0 without one."""
    return np.where(bi > 0, 0.1 * bi + 50.0, 0.0)


def catalogue_columns(pop: Population, sn: np.ndarray, mags: np.ndarray
                      ) -> dict[str, np.ndarray]:
    """DR16Q_v4 columns of the simulated survey (NaN = not measured); ``mags`` (n, 5) are
    the ugriz magnitudes of each noiseless spectrum."""
    n, x = len(pop), pop.extra
    zc = pop.z_cat
    phot = _photometry(mags, pop)
    # M_I as DR16Q computes it: catalogue redshift, i-band PSF magnitude, K-correction of
    # an alpha_nu = -0.5 power law normalised at z = 2 (Richards et al. 2006 continuum).
    m_i = physics.absolute_mag_i(
        phot["PSFMAG"][:, 3] - phot["EXTINCTION"][:, 3], COSMO.distmod(zc).value, zc, -0.5
    )
    # DLAs: a noisy detector; confidence rises with N_HI and S/N, weak ones are missed.
    conf = np.clip(0.2 + 0.25 * (pop.log_nhi - 20.3) + 0.6 * (1 - np.exp(-sn / 10))[:, None]
                   + x["dla_conf_noise"], 0.0, 0.99)
    found = np.isfinite(pop.z_dla) & (conf > 0.5)
    order = np.argsort(~found, axis=1, kind="stable")  # detected absorbers first

    def take(a: np.ndarray) -> np.ndarray:
        return np.take_along_axis(a, order, axis=1)

    found_s = take(found)
    z_dla = np.where(found_s, take(pop.z_dla + x["dla_z_err"]), np.nan)
    nhi = np.where(found_s, take(pop.log_nhi + x["dla_nhi_err"]), np.nan)
    conf = np.where(found_s, take(conf), np.nan)
    # BALs: DR16Q searches 1.57 <= z <= 5.6; BI_SIIV also needs its window on the spectrum.
    searched = (zc >= BAL_Z_RANGE[0]) & (zc <= BAL_Z_RANGE[1])
    start_wave = 10.0 ** (LOGLAM0 + DLOGLAM * pop.start)
    siiv_ok = searched & (SIIV_WINDOW_BLUE * (1 + zc) >= start_wave)
    score = (-3.0 + 6.0 * (pop.bi_civ > 0) + 2.5 * (pop.is_bal & (pop.bi_civ == 0))
             + (0.8 + 8.0 / np.maximum(sn, 1.0)) * x["bal_score_noise"])
    bal_prob = np.where(searched, 1.0 / (1.0 + np.exp(-score)), np.nan)
    # X-rays for the few per cent in XMM fields, from L2500 and alpha_ox.
    soft, hard, _ = physics.xray_fluxes(pop.log_l2500, pop.alpha_ox, pop.z, pop.dl_cm)
    rel_err, noise = x["xray_err"].T, x["xray_noise"].T
    measured = [np.where(pop.has_xray, f * np.maximum(1 + e * w, 0.05), np.nan)
                for f, e, w in zip((soft, hard), rel_err[:2], noise[:2], strict=True)]
    fx = [*measured, measured[0] + measured[1]]  # total = soft + hard, as 0.2-12 keV
    errors = [f * e for f, e in zip(measured, rel_err[:2], strict=True)]
    fx_err = [*errors, np.hypot(errors[0], errors[1])]
    return {
        "SDSS_NAME": sdss_name(pop.ra, pop.dec), "RA": pop.ra, "DEC": pop.dec,
        "PLATE": pop.plate, "MJD": pop.mjd, "FIBERID": pop.fiberid,
        "AUTOCLASS_PQN": np.full(n, "QSO"), "AUTOCLASS_DR14Q": np.full(n, "QSO"),
        "IS_QSO_QN": np.ones(n), "Z_QN": zc, "THING_ID": pop.thing_id,
        "IS_QSO_FINAL": np.ones(n), "Z": zc, "SOURCE_Z": np.full(n, "PIPE"), "Z_PIPE": zc,
        "ZWARNING": np.zeros(n), "Z_PCA": zc, "ZWARN_PCA": np.zeros(n),
        "Z_DLA": z_dla, "NHI_DLA": nhi, "CONF_DLA": conf, "BAL_PROB": bal_prob,
        "BI_CIV": np.where(searched, pop.bi_civ, np.nan),
        "ERR_BI_CIV": np.where(searched, _bi_error(pop.bi_civ), np.nan),
        "BI_SIIV": np.where(siiv_ok, pop.bi_siiv, np.nan),
        "ERR_BI_SIIV": np.where(siiv_ok, _bi_error(pop.bi_siiv), np.nan),
        "NSPEC_SDSS": np.zeros(n), "NSPEC_BOSS": np.zeros(n), "NSPEC": np.zeros(n),
        "RERUN_NUMBER": np.full(n, "301"), "LAMBDA_EFF": np.full(n, 4000.0),
        "CHUNK": np.where(pop.plate >= 7566, "eboss", "boss"), "TILE": pop.tile,
        "PLATESN2": pop.platesn2, **phot, "M_I": m_i, "SN_MEDIAN_ALL": sn,
        "XMM_SOFT_FLUX": fx[0], "XMM_SOFT_FLUX_ERR": fx_err[0],
        "XMM_HARD_FLUX": fx[1], "XMM_HARD_FLUX_ERR": fx_err[1],
        "XMM_TOTAL_FLUX": fx[2], "XMM_TOTAL_FLUX_ERR": fx_err[2],
    }


def truth_columns(pop: Population, sn: np.ndarray, amplitude: np.ndarray) -> list[fits.Column]:
    """What each spectrum was made from, keyed by PLATE, MJD, FIBERID.

    ``OBJECT_CLASS`` and ``ARTEFACT`` label the contaminants; ``THETA`` are the eigenspectrum
    coefficients of the quasar set ``QSO_SET`` (LOZ: the last is the host galaxy's light).
    """
    def col(name, fmt, array, unit=None):
        return fits.Column(name=name, format=fmt, array=array, unit=unit)

    objects, shapes = pop.objects, pop.shapes
    npix = pop.stop - pop.start + 1
    star_types = np.array(["", *STAR_WEIGHTS])[objects.star_type + 1]
    k = shapes.theta.shape[1]
    return [
        col("PLATE", "J", pop.plate), col("MJD", "J", pop.mjd), col("FIBERID", "J", pop.fiberid),
        col("THING_ID", "K", pop.thing_id), col("HAS_SPECTRUM", "B", pop.has_spectrum),
        col("OBJECT_CLASS", "6A", np.array(OBJECT_CLASSES)[objects.object_class]),
        col("ARTEFACT", "23A", np.array(ARTEFACTS)[objects.artefact]),
        col("STAR_TYPE", "2A", star_types), col("ARCHETYPE", "J", objects.archetype),
        col("ARTEFACT_FACTOR", "E", objects.factor),
        col("Z", "D", pop.z), col("Z_CAT", "D", pop.z_cat),
        col("IMAG", "D", pop.imag, "mag"), col("M_I_TRUE", "D", pop.m_i, "mag"),
        col("LOG_L2500", "D", pop.log_l2500),
        col("QSO_SET", "3A", np.where(shapes.hiz, "HIZ", "LOZ")),
        col("THETA", f"{k}E", shapes.theta), col("HOST_ARCHETYPE", "J", shapes.host_archetype),
        col("CALIBRATION", "2E", pop.distortion),
        col("TAU_SCALE", "E", pop.tau_scale),
        col("IS_BAL", "B", pop.is_bal), col("BAL_VMIN", "E", pop.bal_vmin, "km s-1"),
        col("BAL_VMAX", "E", pop.bal_vmax, "km s-1"), col("BAL_DEPTH", "E", pop.bal_depth),
        col("BI_CIV", "D", pop.bi_civ, "km s-1"), col("BI_SIIV", "D", pop.bi_siiv, "km s-1"),
        col("N_DLA", "I", pop.n_dla), col("Z_DLA", "5D", pop.z_dla),
        col("LOG_NHI", "5D", pop.log_nhi),
        col("LLS_Z", "D", pop.lls_z), col("LLS_TAU912", "E", pop.lls_tau),
        col("HAS_XRAY", "B", pop.has_xray), col("ALPHA_OX", "E", pop.alpha_ox),
        col("SN_TARGET", "E", pop.sn_target), col("SN_MEDIAN_ALL", "D", sn),
        # float32, like the spectra it describes: it is solved in float64 from model flux
        # made by matrix products whose BLAS kernel depends on the rows at hand (a single
        # row takes another path), so its last bits (a few ULP) differ between batch
        # sizes, and the files must not
        col("NOISE_AMPLITUDE", "E", amplitude),
        col("LOGLAM_START", "D", np.round(LOGLAM0 + DLOGLAM * pop.start, 4)),
        col("NPIX", "J", npix),
    ]
