"""Empirical SDSS/BOSS instrument and noise model for the simulated spectra.

Pure numpy (and scipy.special). Turns noiseless model spectra on the global observed frame
(loglam = round(3.5490 + 1e-4 i, 4), i = 0..4680, 3540-10399 A) into spec-lite-like
flux / ivar / and_mask / or_mask / sky / wdisp, using shapes and rates measured on
held-in real SDSS spectra (``data/instrument.h5``, written by
``tools/derive_instrument.py``).

Per simulated spectrum:
  1. draw one real "observing condition" row (sky PCA coefficients, variance tilt,
     object/sky variance ratio kappa, sky-line variance factor s, read term beta);
  2. sky      = exp(mean + coef . comps + 0.028 N(0,1))           (1e-17 erg/s/cm^2/A)
  3. distort  model_d = model * exp(sum_k c_k P_k(x) + fine(lambda)) (spectrophotometry)
  4. variance = A e^tau [ (sky + kappa max(model_d, 0)) U + s sky G + beta Us2 ]
     with U ~ 1/throughput (dichroic, blue/red ends, telluric bands), G the extra
     variance at sky lines, Us2 the read-noise shape; A set so that the median of
     flux * sqrt(ivar) over good pixels equals the target S/N (as SN_MEDIAN_ALL);
  5. flux     = model_d + core(lambda) * sigma * n_corr + eps(lambda) * skyline * xi
     n_corr: unit-variance noise with the measured lag-1 pixel correlation;
     the second term is the sky-subtraction residual, *not* reflected in ivar;
     the stated ivar = 1 / (variance * exp(h)): the pipeline's variance is an estimate,
     with a measured 5-12% pixel log scatter h (correlated with the flux noise, as
     the pipeline estimates it partly from the data);
  6. masks: per bit a measured rate p(lambda) drawn through a Gaussian copula
     (per-spectrum + smoothed per-pixel latent) that reproduces run lengths and
     per-spectrum clustering; BRIGHTSKY from the pipeline rule on the simulated sky;
     ivar = 0 on the measured 'ivar = 0' channel.

Every random number of spectrum k comes from rngs[k], always in the same order and
always for the full frame, so results do not depend on how spectra are batched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import h5py
import numpy as np
from scipy.special import ndtri

LOGLAM0, DLOGLAM, NPIX = 3.5490, 1e-4, 4681
LOGLAM = np.round(LOGLAM0 + DLOGLAM * np.arange(NPIX), 4)
WAVE = 10.0**LOGLAM
XLEG = (LOGLAM - 3.80) / 0.22  # Legendre variable of tilts and distortions
BAD_BITS = sum(1 << b for b in (0, 1, 2, 3, 5, 8, 9, 18, 24, 25, 26))
BRIGHTSKY = 1 << 23


@dataclass(frozen=True)
class InstrumentData:
    """Measured instrument model of one survey ("boss" or "sdss"), full-frame arrays."""

    group: str
    created: str  # when the package data were derived
    sky_logmean: np.ndarray  # (N,) mean log sky
    sky_logcomps: np.ndarray  # (K, N) log-sky principal components
    sky_pixnoise: float  # pixel-to-pixel log scatter of the real sky column
    U: np.ndarray  # (N,) 1/throughput shape, 1 at 5000-6000 A
    G: np.ndarray  # (N,) sky-line variance excess shape
    Us2: np.ndarray  # (N,) read-noise variance shape
    rows: np.ndarray  # (R, C) real observing conditions, see row_cols
    row_cols: tuple[str, ...]
    row_p: np.ndarray  # (R,) sampling probability of each row
    core: np.ndarray  # (N,) true noise sigma / pipeline sigma (off sky lines)
    ivar_sd_sky: np.ndarray  # (N,) log-scatter of the pipeline variance, sky-dominated px
    ivar_sd_obj: np.ndarray  # (N,) same, object-dominated pixels
    ivar_lag1: float  # lag-1 correlation of that scatter
    ivar_corr_chi: np.ndarray  # its correlation with the flux noise at object shares ...
    ivar_corr_share: np.ndarray  # ... 0.15, 0.45, 0.8 of the variance
    rho1: np.ndarray  # (N,) lag-1 correlation of the pixel noise
    eps: np.ndarray  # (N,) sky residual sigma per unit sky-line flux
    dist_coef: np.ndarray  # (D, 3) Legendre coefficients (1..3) of log distortion
    dist_fine: np.ndarray  # (N,) mean fine log distortion (observed frame)
    wdisp: np.ndarray  # (N,) median wdisp, pixels
    wdisp_log_sd: float
    mask_p: np.ndarray  # (C, N) per-pixel rate of each mask channel
    mask_par: np.ndarray  # (C, 6) kind(0 and,1 or,2 ivar0), bit, rho, width, rate, run
    brightsky: tuple[float, float, float, float]  # k_and, f_and, k_or, f_or
    zero_ivar_on_bad_bits: bool

    def col(self, name: str) -> int:
        return self.row_cols.index(name)


def _full(coarse: np.ndarray, step: int) -> np.ndarray:
    """Linear interpolation of a coarse-grid curve (every `step` px) to the full frame."""
    return np.interp(np.arange(NPIX), np.arange(0, NPIX, step), coarse)


@lru_cache(maxsize=2)
def load_data(group: str = "boss") -> InstrumentData:
    """The package data's instrument (group "boss" = BOSS/eBOSS, "sdss" = SDSS-I/II)."""
    source = resources.files("qsocube.builder.simulate").joinpath("data", "instrument.h5")
    with resources.as_file(source) as path, h5py.File(path, "r") as f:
        step = int(f.attrs["coarse_step"])
        g = f[group]
        rows = g["rows"][...].astype(np.float64)
        cols = tuple(c.decode() for c in g["rows"].attrs["columns"])
        w = rows[:, cols.index("weight")]
        return _check(
            InstrumentData(
                group=group,
            created=str(f.attrs["created"]),
                sky_logmean=g["sky_logmean"][...].astype(np.float64),
                sky_logcomps=g["sky_logcomps"][...].astype(np.float64),
                sky_pixnoise=float(g.attrs["sky_pixnoise"]),
                U=g["var_U"][...].astype(np.float64),
                G=g["var_G"][...].astype(np.float64),
                Us2=_full(g["var_Us2"][...].astype(np.float64), step),
                rows=rows,
                row_cols=cols,
                row_p=w / w.sum(),
                core=_full(g["noise_core"][...].astype(np.float64), step),
                ivar_sd_sky=_full(g["ivar_scatter_sky"][...].astype(np.float64), step),
                ivar_sd_obj=_full(g["ivar_scatter_obj"][...].astype(np.float64), step),
                ivar_lag1=float(g.attrs["ivar_scatter_lag1"]),
                ivar_corr_chi=np.asarray(g.attrs["ivar_scatter_corr_chi"], np.float64),
                ivar_corr_share=np.asarray(g.attrs["ivar_scatter_corr_share"], np.float64),
                rho1=_full(g["noise_rho1"][...].astype(np.float64), step),
                eps=_full(g["skyres_eps"][...].astype(np.float64), step),
                dist_coef=g["dist_coef"][...].astype(np.float64),
                dist_fine=g["dist_fine"][...].astype(np.float64),
                wdisp=_full(g["wdisp"][...].astype(np.float64), step),
                wdisp_log_sd=float(g.attrs["wdisp_log_sd"]),
                mask_p=g["mask_p"][...].astype(np.float64),
                mask_par=g["mask_par"][...].astype(np.float64),
                brightsky=(
                    float(g.attrs["brightsky_and_k"]),
                    float(g.attrs["brightsky_and_f"]),
                    float(g.attrs["brightsky_or_k"]),
                    float(g.attrs["brightsky_or_f"]),
                ),
                zero_ivar_on_bad_bits=bool(g.attrs["zero_ivar_on_bad_bits"]),
            )
        )


def _check(data: InstrumentData) -> InstrumentData:
    for k, v in vars(data).items():
        if isinstance(v, np.ndarray):
            assert np.all(np.isfinite(v)), f"non-finite values in instrument data '{k}'"
    return data


def running_median(x: np.ndarray, width: int = 99, step: int = 10) -> np.ndarray:
    """Running median of each row of x (B, N) over `width` pixels, evaluated every `step`
    pixels and linearly interpolated (cheap, and the sky continuum is smooth)."""
    half = width // 2
    xp = np.pad(x, ((0, 0), (half, half)), mode="edge")
    med = np.median(np.lib.stride_tricks.sliding_window_view(xp, width, axis=1)[:, ::step], axis=-1)
    pos = np.arange(x.shape[1]) / step
    i0 = np.minimum(pos.astype(int), med.shape[1] - 1)
    i1 = np.minimum(i0 + 1, med.shape[1] - 1)
    fr = pos - i0
    return med[:, i0] * (1 - fr) + med[:, i1] * fr


def _legval(x: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """sum_k coef[:, k] P_{k+1}(x) for coef (B, K): Legendre series without P_0, (B, N)."""
    out = np.zeros((coef.shape[0], x.size))
    p_prev, p = np.ones_like(x), x.copy()
    for k in range(coef.shape[1]):  # Bonnet recursion
        out += coef[:, k : k + 1] * p
        n = k + 1
        p_prev, p = p, ((2 * n + 1) * x * p - n * p_prev) / (n + 1)
    return out


def _row_median(v: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Median of each row of v (B, N) over its `good` pixels (NaN if none); vectorised."""
    n = good.sum(1)
    srt = np.sort(np.where(good, v, np.inf), axis=1)
    r = np.arange(v.shape[0])
    lo = srt[r, np.maximum(n - 1, 0) // 2]
    hi = srt[r, np.minimum(n // 2, v.shape[1] - 1)]
    return np.where(n > 0, 0.5 * (lo + hi), np.nan)


def _solve_scale(
    m_over_s: np.ndarray,
    z: np.ndarray,
    r_over_s: np.ndarray,
    w: np.ndarray,
    good: np.ndarray,
    target: np.ndarray,
    n_iter: int = 60,
) -> np.ndarray:
    """t = 1/sqrt(A) per spectrum with median_good(w * (t*(m + r)/sigma0 + z)) = target,
    w = sigma0 / sigma_stated (the pipeline-variance scatter).

    The median is monotone in t when the model is mostly positive. Illinois (regula
    falsi) on the bracket [t0 e^-3, t0 e^3] around the noiseless guess t0; rows whose
    target cannot be reached in the bracket end at its edge. Vectorised over rows."""
    a = w * (m_over_s + r_over_s)
    b = w * z

    def f(t, rows):
        return _row_median(t[:, None] * a[rows] + b[rows], good[rows]) - target[rows]

    all_rows = np.arange(len(target))
    t0 = target / np.maximum(_row_median(w * m_over_s, good), 1e-12)
    t0 = np.where(np.isfinite(t0), t0, 1.0)
    lo, hi = t0 * np.exp(-3.0), t0 * np.exp(3.0)
    flo, fhi = f(lo, all_rows), f(hi, all_rows)
    t = np.where(flo >= 0, lo, np.where(fhi <= 0, hi, t0))
    active = (flo < 0) & (fhi > 0)
    side = np.zeros(len(target))
    tol = 1e-10 * np.abs(target) + 1e-12
    for _ in range(n_iter):
        rows = np.flatnonzero(active)
        if rows.size == 0:
            break
        tc = (lo[rows] * fhi[rows] - hi[rows] * flo[rows]) / (fhi[rows] - flo[rows])
        fc = f(tc, rows)
        t[rows] = tc
        done = np.abs(fc) <= tol[rows]
        up = fc > 0  # root below tc: move hi
        r_up, r_dn = rows[up & ~done], rows[~up & ~done]
        hi[r_up], fhi[r_up] = tc[up & ~done], fc[up & ~done]
        flo[r_up] = np.where(side[r_up] == 1, flo[r_up] / 2, flo[r_up])
        side[r_up] = 1
        lo[r_dn], flo[r_dn] = tc[~up & ~done], fc[~up & ~done]
        fhi[r_dn] = np.where(side[r_dn] == -1, fhi[r_dn] / 2, fhi[r_dn])
        side[r_dn] = -1
        active[rows[done]] = False
    return t


def observe(
    model_flux: np.ndarray,
    in_range: np.ndarray,
    target_sn: np.ndarray,
    rngs: Sequence[np.random.Generator],
    data: InstrumentData,
    row_p: np.ndarray | None = None,
    extra_tilt_sd: float = 0.0,
) -> dict[str, np.ndarray]:
    """Observe noiseless spectra with the empirical instrument.

    model_flux: (B, N) float64, noiseless observed-frame flux, 1e-17 erg/s/cm^2/A, N = 4681.
    in_range:   (B, N) bool, the pixels the spectrum covers (contiguous).
    target_sn:  (B,) median S/N to reach: median(flux * sqrt(ivar)) over good pixels
                (in range, ivar > 0, none of the product's bad bits), like SN_MEDIAN_ALL.
    rngs:       B generators, one per spectrum.
    data:       load_data(...).
    row_p:      optional sampling probabilities of the observing-condition rows
                (default data.row_p, i.e. 1/sqrt(spectra on the same plate)).
    extra_tilt_sd: sd of an extra linear-in-log-lambda log-flux tilt (Legendre P1
                coefficient). The distortion measured against the pipeline model is a
                lower limit (the model's additive polynomial absorbs part of it); ~0.14
                reproduces the BOSS-minus-SDSS spectro-vs-photometric g-r scatter, see
                REPORT.md. Default 0 (only what flux/model shows).

    Returns (B, N) arrays flux, ivar, sky (1e-17 erg/s/cm^2/A), and_mask, or_mask (int32),
    wdisp (pixels), distortion (multiplicative, applied to the model) and per-spectrum
    amplitude (A) and row (index of the real observing-condition row used). Outside
    in_range everything is 0 (distortion 1).
    """
    model_flux = np.asarray(model_flux, np.float64)
    B, N = model_flux.shape
    assert N == NPIX and len(rngs) == B
    D = data
    K = D.sky_logcomps.shape[0]
    chans = [(int(k), int(b), float(rho), int(w)) for k, b, rho, w, *_ in D.mask_par]

    # ---- random numbers: per spectrum, fixed order, full frame (batch independent)
    row = np.empty(B, int)
    drow = np.empty(B, int)
    wd_dev = np.empty(B)
    n_sky = np.empty((B, N))
    n_pix = np.empty((B, N + 2))
    n_res = np.empty((B, N + 2))
    n_var = np.empty((B, N + 2))
    p_rows = D.row_p if row_p is None else np.asarray(row_p) / np.sum(row_p)
    for k, rng in enumerate(rngs):
        row[k] = rng.choice(len(p_rows), p=p_rows)
        drow[k] = rng.integers(len(D.dist_coef))
        wd_dev[k] = rng.standard_normal()
        n_sky[k] = rng.standard_normal(N)
        n_pix[k] = rng.standard_normal(N + 2)
        n_res[k] = rng.standard_normal(N + 2)
        n_var[k] = rng.standard_normal(N + 2)
    # mask latents: eta per spectrum, g = boxcar-smoothed white noise (unit variance)
    mask_hits = []
    for _kind, _bit, rho, width in chans:
        eta = np.empty(B)
        e = np.empty((B, N + width - 1)) if rho < 1 else None
        for k, rng in enumerate(rngs):
            eta[k] = rng.standard_normal()
            if e is not None:
                e[k] = rng.standard_normal(N + width - 1)
        latent = np.sqrt(rho) * eta[:, None]
        if e is not None:
            c = np.concatenate([np.zeros((B, 1)), np.cumsum(e, axis=1)], axis=1)
            latent = latent + np.sqrt(1 - rho) * (c[:, width:] - c[:, :-width]) / np.sqrt(width)
        mask_hits.append(latent)

    # drawn last so that the streams above do not depend on this option
    extra = np.array([rng.standard_normal() for rng in rngs]) * extra_tilt_sd

    rows = D.rows[row]
    cidx = {c: D.col(c) for c in D.row_cols}

    # ---- sky: real log-sky PCA with a real row's coefficients, plus pixel scatter
    coef = rows[:, [cidx[f"sky{i}"] for i in range(K)]]
    sky = np.exp(D.sky_logmean + coef @ D.sky_logcomps + D.sky_pixnoise * n_sky)

    # ---- spectrophotometric distortion: a real spectrum's smooth Legendre-3 curve plus the
    # mean observed-frame pattern (telluric/dichroic residuals, smoothed and shrunk)
    dcoef = D.dist_coef[drow].copy()
    dcoef[:, 0] += extra
    dist = np.exp(_legval(XLEG, dcoef) + D.dist_fine)
    dist = np.where(in_range, dist, 1.0)
    m = model_flux * dist

    # ---- variance shape (A = 1): photons of sky and object / throughput, sky-line
    # excess, read noise; times the row's smooth tilt
    tilt = np.exp(_legval(XLEG, rows[:, [cidx["tilt1"], cidx["tilt2"], cidx["tilt3"]]]))
    obj = tilt * rows[:, [cidx["kappa"]]] * np.clip(m, 0, None) * D.U
    base = obj + tilt * (
        sky * D.U + rows[:, [cidx["s"]]] * sky * D.G + rows[:, [cidx["beta"]]] * D.Us2
    )
    sigma0 = np.sqrt(base)
    share = obj / base  # object fraction of the variance

    # ---- masks
    and_mask = np.zeros((B, N), np.int64)
    or_mask = np.zeros((B, N), np.int64)
    ivar0 = np.zeros((B, N), bool)
    for (kind, bit, _rho, _width), latent, p in zip(chans, mask_hits, D.mask_p, strict=True):
        thr = _ndtri_upper(p)
        hit = (latent > thr) & in_range & (p > 0)
        if kind == 0:
            and_mask |= np.where(hit, 1 << bit, 0)
        elif kind == 1:
            or_mask |= np.where(hit, 1 << bit, 0)
        else:
            ivar0 |= hit
    or_mask |= and_mask  # a bit in every exposure is in some exposure
    bad = (and_mask & BAD_BITS) != 0
    zero = ivar0 | (bad if D.zero_ivar_on_bad_bits else False) | ~in_range
    good = ~zero & ~bad  # pixels entering the median S/N

    # ---- noise: correlated Gaussian core (lag-1 rho1) + sky-subtraction residual
    k0, k1 = _lag1_kernel(D.rho1)
    zn = k0 * n_pix[:, 1:-1] + k1 * (n_pix[:, :-2] + n_pix[:, 2:])  # unit variance
    z = D.core * zn
    xi = (n_res[:, :-2] + 2 * n_res[:, 1:-1] + n_res[:, 2:]) / np.sqrt(6)  # ~3-px coherent
    skyline = np.clip(sky - running_median(sky, 61, 5), 0, None)
    resid = D.eps * skyline * xi  # flux units, independent of the depth A

    # ---- the pipeline variance is itself a noisy estimate: log scatter h, correlated over
    # pixels and, where the object dominates, with the flux noise (ivar from the data)
    j0, j1 = _lag1_kernel(np.full(N, min(D.ivar_lag1, 0.7)))
    nh = j0 * n_var[:, 1:-1] + j1 * (n_var[:, :-2] + n_var[:, 2:])
    c = np.clip(np.interp(share, D.ivar_corr_share, D.ivar_corr_chi), 0, 0.95)
    h = (D.ivar_sd_sky * (1 - share) + D.ivar_sd_obj * share) * (c * zn + np.sqrt(1 - c**2) * nh)
    w = np.exp(-h / 2)  # sigma0 / sigma_stated

    # ---- depth A from the target median S/N, then the noisy flux
    tt = _solve_scale(m / sigma0, z, resid / sigma0, w, good, np.asarray(target_sn, np.float64))
    A = 1 / tt**2
    sig_true = np.sqrt(A)[:, None] * sigma0  # noise sigma is core * sig_true
    flux = m + sig_true * z + resid
    sig = sig_true / w  # the stated (pipeline) sigma
    ivar = np.where(zero, 0.0, 1 / sig**2)

    # ---- BRIGHTSKY: the pipeline rule on the simulated sky (ivar is kept there)
    k_and, f_and, k_or, f_or = D.brightsky
    med = running_median(sky, 99, 10)
    and_mask |= np.where((sky > flux + k_and * sig) & (sky > f_and * med) & in_range, BRIGHTSKY, 0)
    or_mask |= np.where((sky > flux + k_or * sig) & (sky > f_or * med) & in_range, BRIGHTSKY, 0)
    or_mask |= and_mask

    wdisp = np.where(zero, 0.0, D.wdisp * np.exp(D.wdisp_log_sd * wd_dev)[:, None])
    out = dict(flux=flux, ivar=ivar, sky=sky, wdisp=wdisp, distortion=dist)
    for k in ("flux", "sky", "wdisp"):
        out[k] = np.where(in_range, out[k], 0.0)
    out["and_mask"] = np.where(in_range, and_mask, 0).astype(np.int32)
    out["or_mask"] = np.where(in_range, or_mask, 0).astype(np.int32)
    out["amplitude"] = A
    out["row"] = row
    return out


def _lag1_kernel(rho: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights (k0, k1) of n_i = k0 e_i + k1 (e_{i-1} + e_{i+1}) with unit variance
    (k0^2 + 2 k1^2 = 1) and lag-1 correlation 2 k0 k1 = rho (|rho| <= 0.7)."""
    rho = np.clip(rho, -0.7, 0.7)
    t = (1 - np.sqrt(1 - 2 * rho**2)) / np.where(rho == 0, 1, 2 * rho)
    k0 = 1 / np.sqrt(1 + 2 * t**2)
    return k0, t * k0


def _ndtri_upper(p: np.ndarray) -> np.ndarray:
    """Phi^-1(1 - p), the standard normal threshold exceeded with probability p; +inf
    where p <= 0."""
    p = np.asarray(p, np.float64)
    return np.where(p <= 0, np.inf, -ndtri(np.clip(p, 1e-300, 1 - 1e-16)))
