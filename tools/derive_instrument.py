"""Derive the simulator's empirical instrument/noise model from held-in real SDSS spectra.

    python tools/derive_instrument.py [--shared ../shared/data] [--out PATH]

Run from the repository root. Reads the real spec-lite files of ``SHARED/sdss`` (listed in
``MANIFEST.csv``), keeps only the *held-in* spectra (the hold-out rule is
``qsocube.builder.simulate.templates.held_out``: position rounded to 1 arcmin, hashed,
fraction 0.4 held out) and writes ``qsocube/builder/simulate/data/instrument.h5``, which
``qsocube.builder.simulate.instrument.load_data`` reads. Two groups are derived: "boss"
(BOSS/eBOSS, RUN2D v5_*; the default, since the simulated survey writes BOSS-like files)
and "sdss" (SDSS-I/II, RUN2D 26).

What is measured (all on the global frame loglam = 3.5490 + 1e-4 i, i = 0..4680):

- sky: log-sky PCA: mean, K components, the per-spectrum coefficients, pixel noise;
- variance: var_j = A_j e^{tau_j} [ (sky_j + kappa_j m_j+) U + s_j sky_j G + beta_j Us^2 ]
  with U the 1/throughput shape (dichroic, ends, telluric), G the extra variance at sky
  lines (the pipeline's sky-chi2 rescaling), Us^2 the read-noise shape and tau_j a smooth
  per-spectrum variance tilt (Legendre, degree 3 in log lambda); plus the pixel-scale
  scatter of the pipeline variance around that model;
- noise: core scale of chi = (flux - model) sqrt(ivar), lag-1 pixel correlation,
  sky-subtraction residual amplitude eps(lambda) (extra sigma = eps * sky line);
- masks: per and/or bit (and 'ivar = 0' pixels) a per-pixel rate p(lambda) and a
  Gaussian-copula (rho, width) reproducing runs and per-spectrum clustering; BRIGHTSKY
  from the pipeline's rule, thresholds calibrated on the real bits;
- distortion: smooth multiplicative error log(flux/model) (Legendre degree 3) per
  spectrum, plus the mean fine observed-frame pattern (telluric/dichroic residuals);
- wdisp: median curve and per-spectrum scale scatter.

Every random number used here (the mask copula fits) comes from fixed seeds, so the
output is reproducible; arrays are stored as float32 with a 12-bit mantissa (``f32``).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
from astropy.io import fits
from numpy.polynomial import legendre
from scipy.ndimage import median_filter, uniform_filter1d
from scipy.optimize import nnls
from scipy.special import ndtri

from qsocube.builder.simulate.instrument import (
    BAD_BITS,
    BRIGHTSKY,
    DLOGLAM,
    LOGLAM0,
    NPIX,
    WAVE,
    XLEG,
    running_median,
)
from qsocube.builder.simulate.templates import held_out
from qsocube.core.atomic import atomic_path

SCRIPT = "tools/derive_instrument.py"
W = WAVE
BAD_BITS_LIST = tuple(b for b in range(32) if (BAD_BITS >> b) & 1)  # the product's rule
BRIGHTSKY_BIT = BRIGHTSKY.bit_length() - 1  # 23: set by rule, not drawn (brightsky_rule)
COARSE = 20  # coarse grid step (pixels) for smooth curves
ICOARSE = np.arange(0, NPIX, COARSE)
TILT_DEG = 3  # Legendre degree of the per-spectrum variance tilt
DIST_DEG = 3  # Legendre degree of the smooth flux distortion
K_SKY = {"boss": 6, "sdss": 5}  # log-sky principal components kept
VS_EDGES = np.array([3550, 4000, 4500, 5000, 5500, 6000, 6500, 7000, 8000, 9000, 10400])
COLS = ("flux", "ivar", "and_mask", "or_mask", "wdisp", "sky", "model")
NAMES = {0: "NOPLUG", 1: "BADTRACE", 2: "BADFLAT", 3: "BADARC", 4: "MANYBADCOLUMNS",
         5: "MANYREJECTED", 6: "LARGESHIFT", 7: "BADSKYFIBER", 8: "NEARWHOPPER", 9: "WHOPPER",
         10: "SMEARIMAGE", 11: "SMEARHIGHSN", 12: "SMEARMEDSN", 16: "NEARBADPIXEL",
         17: "LOWFLAT", 18: "FULLREJECT", 19: "PARTIALREJECT", 20: "SCATTEREDLIGHT",
         21: "CROSSTALK", 22: "NOSKY", 23: "BRIGHTSKY", 24: "NODATA", 25: "COMBINEREJ",
         26: "BADFLUXFACTOR", 27: "BADSKYCHI", 28: "REDMONSTER"}


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def robust_sd(x: np.ndarray) -> float:
    """1.4826 x the median absolute value (of already centred values)."""
    return 1.4826 * np.median(np.abs(x))


# ------------------------------------------------------------------------------ reading
def load_spectra(sdss: Path) -> dict:
    """Every spectrum of ``sdss/MANIFEST.csv`` on the global frame.

    Returns (S, NPIX) arrays flux, ivar, sky, model, wdisp (float64, 0 outside coverage),
    and_mask, or_mask (int64), in_range (bool), and per-spectrum arrays file, boss,
    held_out, z, sn (SN_MEDIAN_ALL), plate and cls (CLASS), all from the manifest but the
    spectra. Non-finite flux is set to 0 with ivar 0.
    """
    with open(sdss / "MANIFEST.csv") as handle:
        manifest = list(csv.DictReader(handle))
    S = len(manifest)
    out = {c: np.zeros((S, NPIX), np.int64 if "mask" in c else np.float64) for c in COLS}
    out["in_range"] = np.zeros((S, NPIX), bool)
    meta = {k: [] for k in ("file", "boss", "held_out", "z", "sn", "plate", "cls")}
    for j, m in enumerate(manifest):
        with fits.open(sdss / "spectra" / m["file"]) as hdus:
            table = hdus[1].data
            names = {n.lower(): n for n in table.columns.names}
            loglam = np.asarray(table[names["loglam"]], np.float64)
            idx = np.round((loglam - LOGLAM0) / DLOGLAM).astype(int)
            ok = (idx >= 0) & (idx < NPIX)
            for c in COLS:
                out[c][j, idx[ok]] = np.asarray(table[names[c]])[ok]
            out["in_range"][j, idx[ok]] = True
        meta["file"].append(m["file"])
        meta["boss"].append(m["RUN2D"].startswith("v5"))
        meta["held_out"].append(held_out(m["RA"], m["DEC"]))
        meta["z"].append(float(m["Z"]))
        meta["sn"].append(float(m["SN_MEDIAN_ALL"]))
        meta["plate"].append(int(m["PLATE"]))
        meta["cls"].append(m["CLASS"])
    for k, v in meta.items():
        out[k] = np.array(v)
    out["ivar"][~np.isfinite(out["flux"])] = 0.0
    out["flux"][~np.isfinite(out["flux"])] = 0.0
    return out


def good_ivar(d: dict) -> np.ndarray:
    """ivar with the product's bad-bit rule applied (0 on bad bits and outside coverage)."""
    iv = np.where((d["and_mask"] & BAD_BITS) != 0, 0.0, d["ivar"])
    return np.where(d["in_range"], iv, 0.0)


# ------------------------------------------------------------------------------ sky
def fit_sky_pca(sky: np.ndarray, ok: np.ndarray, k: int) -> dict:
    """PCA of log(sky) with missing pixels imputed iteratively.

    sky, ok: (S, NPIX). Only columns covered by >= 30% of the spectra are fitted; the
    others take the nearest fitted column. Returns mean (NPIX), comps (k, NPIX),
    coef (S, k), pixnoise (robust sd of the pixel-to-pixel log-sky scatter / sqrt 2,
    4500-5400 A), resid_sd (robust sd of the fit residual) and explained (variance
    fractions of the k components).
    """
    X = np.log(np.clip(sky, 0.05, None))
    cols = ok.mean(0) >= 0.3
    Xc, Mc = X[:, cols], ok[:, cols]
    mu = np.nanmedian(np.where(Mc, Xc, np.nan), 0)
    Xf = np.where(Mc, Xc, mu)
    for _ in range(15):
        mu = Xf.mean(0)
        U, s, Vt = np.linalg.svd(Xf - mu, full_matrices=False)
        R = mu + (U[:, :k] * s[:k]) @ Vt[:k]
        Xf = np.where(Mc, Xc, R)
    coef = U[:, :k] * s[:k]
    res = np.where(Mc, Xc - R, np.nan)
    # extend to the full frame: uncovered columns take the nearest covered column
    idx = np.flatnonzero(cols)
    pix = np.arange(NPIX)
    fill = np.clip(np.searchsorted(idx, pix), 0, idx.size - 1)
    prev = np.clip(fill - 1, 0, None)
    near = np.where(np.abs(idx[fill] - pix) <= np.abs(idx[prev] - pix), fill, prev)
    mean = mu[near]
    mean[cols] = mu
    comps = Vt[:k][:, near].copy()
    comps[:, cols] = Vt[:k]
    d = np.diff(X, axis=1)
    m2 = ok[:, 1:] & ok[:, :-1] & (W[1:] > 4500) & (W[1:] < 5400)
    pixnoise = robust_sd(d[m2]) / np.sqrt(2)
    return dict(mean=mean, comps=comps, coef=coef, pixnoise=pixnoise,
                resid_sd=1.4826 * np.nanmedian(np.abs(res)),
                explained=s[:k] ** 2 / (s**2).sum())


# ------------------------------------------------------------------------------ variance
def _fit_tilts(V, M, covered, B, E, coef, S) -> np.ndarray:
    """Per-spectrum Legendre tilt coefficients (S, TILT_DEG) of log(V / untilted model),
    4-sigma clipped; NaN where the coverage is too small for a tilt."""
    B0 = B / E[..., None]
    p0 = np.einsum("spk,sk->sp", B0, coef)
    with np.errstate(all="ignore"):
        y = np.log(V / p0)
    tcf = np.zeros((S, TILT_DEG))
    for j in range(S):
        m = M[j] & covered & np.isfinite(y[j]) & (p0[j] > 0)
        if m.sum() < 1000 or np.ptp(XLEG[m]) < 1.2:
            tcf[j] = np.nan  # too little coverage for a tilt: none
            continue
        r0 = y[j, m] - np.median(y[j, m])
        m[m] = np.abs(r0) < 4 * 1.4826 * np.median(np.abs(r0)) + 1e-9  # 4 robust sd
        tcf[j] = legendre.legfit(XLEG[m], y[j, m], TILT_DEG)[1:]
    return tcf


def fit_variance(V, M, sky, mod, n_iter: int = 30) -> dict:
    """Alternating weighted least squares for the variance decomposition.

    V (S, N): real variance 1/ivar (0 where M is False); sky, mod (S, N): real sky and
    pipeline model (clipped at 0). Weights 1/pred^2, i.e. relative errors. Each iteration
    fits (1) per spectrum the non-negative amplitudes (a, a_s, c, b) of
    E [sky U, sky G, mod U, Us^2], (2) from iteration 3 on, the per-spectrum tilt
    tau = log E (zero median over spectra: the typical tilt belongs to U), (3) per pixel
    the shapes U and G (G only on sky-line pixels), then renormalises.

    Returns shapes U, G, Us (N), per-spectrum a, kappa = c/a, s = a_s/a, beta = b/a (S),
    tilt coefficients (S, TILT_DEG), tau (S, N), the prediction pred (S, N), the log
    residual logres (S, N; NaN off M) with its robust sd and median.
    """
    S = V.shape[0]
    mod = np.clip(mod, 0, None)
    band = (W > 5000) & (W < 6000)  # U = 1 here
    with np.errstate(all="ignore"):
        U = np.nan_to_num(np.nanmedian(np.where(M, V / (sky + mod), np.nan), 0), nan=1.0)
    U = U / np.median(U[band])
    Us = median_filter(U, 51, mode="nearest")
    # sky-line pixels: where G may be non-zero (line part > 20% of the sky continuum)
    msky = np.median(sky, 0)
    line_px = msky > 1.2 * median_filter(msky, 61, mode="nearest")
    # start: U = continuum (running median), G = the sky-line spikes of the raw ratio
    G = np.where(line_px, np.clip(U - Us, 0, None), 0.0)
    U = np.where(line_px, Us, U)
    tau = np.zeros((S, NPIX))
    tcf = np.zeros((S, TILT_DEG))
    coef = np.zeros((S, 4))
    covered = M.sum(0) >= 8
    for it in range(n_iter):
        E = np.exp(tau)
        # (1) per spectrum: V = E [a sky U + a_s sky G + c m U + b Us^2]
        B = np.stack([sky * U, sky * G, mod * U, np.broadcast_to(Us**2, V.shape)], -1)
        B = B * E[..., None]
        if it:
            pred = np.einsum("spk,sk->sp", B, coef)
            w = np.where(M & covered, 1.0 / np.maximum(pred, 1e-12) ** 2, 0)
        else:
            w = np.where(M & covered, 1.0 / np.maximum(V, 1e-12) ** 2, 0)
        sw = np.sqrt(w)
        sol = np.zeros((S, 4))
        for j in range(S):  # non-negative weighted least squares per spectrum
            Bj = B[j] * sw[j][:, None]
            nrm = np.sqrt((Bj**2).sum(0))
            nrm[nrm == 0] = 1
            sol[j] = nnls(Bj / nrm, V[j] * sw[j])[0] / nrm
        coef = np.clip(sol, 0, None)
        a, a_s, c, b = coef.T
        # (2) tilt of the whole variance, smooth in log lambda, zero median over spectra
        if it >= 3:
            tcf = _fit_tilts(V, M, covered, B, E, coef, S)
            tcf -= np.nanmedian(tcf, 0)
            tcf = np.clip(np.nan_to_num(tcf), -1.0, 1.0)
            full = np.concatenate([np.zeros((S, 1)), tcf], 1)
            tau = np.clip(legendre.legval(XLEG, full.T), -3, 3)
        E = np.exp(tau)
        # (3) per pixel: (V - E b Us^2) = E [(a sky + c m) U + a_s sky G]
        A1 = E * (a[:, None] * sky + c[:, None] * mod)
        A2 = E * a_s[:, None] * sky
        Y = V - E * b[:, None] * Us**2
        pred = A1 * U + A2 * G + E * b[:, None] * Us**2
        w = np.where(M, 1.0 / np.maximum(pred, 1e-12) ** 2, 0)
        s11 = (w * A1 * A1).sum(0)
        s12 = (w * A1 * A2).sum(0)
        s22 = (w * A2 * A2).sum(0)
        r1 = (w * A1 * Y).sum(0)
        r2 = (w * A2 * Y).sum(0)
        det = s11 * s22 - s12**2
        twop = line_px & covered & (det > 1e-12 * s11 * s22)
        U_new = np.where(covered, r1 / np.maximum(s11, 1e-300), U)
        U2 = (s22 * r1 - s12 * r2) / np.where(twop, det, 1)
        G2 = (s11 * r2 - s12 * r1) / np.where(twop, det, 1)
        okg = twop & (G2 >= 0) & (U2 > 0)
        U = np.clip(np.where(okg, U2, U_new), 1e-6, None)
        G = np.where(okg, G2, 0)
        # poorly constrained pixels (few spectra, or a fit collapsing to ~0): continuum value
        Us_tmp = median_filter(U, 51, mode="nearest")
        weak = (M.sum(0) < 15) | (U < 0.3 * Us_tmp)
        U = np.where(weak, Us_tmp, U)
        G = np.where(weak, 0.0, G)
        # normalisations: U = 1 at 5000-6000 A; median a_s/a = 1 (G is the mean line excess)
        n1 = np.median(U[band])
        U /= n1
        G /= n1
        coef[:, :3] *= n1
        Us_new = median_filter(U, 51, mode="nearest")
        coef[:, 3] *= np.mean((Us / Us_new)[band] ** 2)
        Us = Us_new
        sr = np.median(coef[:, 1] / np.maximum(coef[:, 0], 1e-30))
        if sr > 0:
            G *= sr
            coef[:, 1] /= sr
    # frame ends without (enough) real data: constant extrapolation of the edge level
    i0, i1 = np.flatnonzero(M.sum(0) >= 15)[[0, -1]]
    for arr in (U, Us):
        arr[:i0] = np.median(arr[i0:i0 + 20])
        arr[i1 + 1:] = np.median(arr[i1 - 19:i1 + 1])
    G[:i0] = 0
    G[i1 + 1:] = 0
    E = np.exp(tau)
    a, a_s, c, b = coef.T
    pred = E * ((a[:, None] * sky + c[:, None] * mod) * U + a_s[:, None] * sky * G
                + b[:, None] * Us**2)
    lr = np.where(M, np.log(V / pred), np.nan)
    aa = np.maximum(a, 1e-12)
    kappa, s_, beta = c / aa, a_s / aa, b / aa
    bad = a <= 1e-12  # no sky term fitted (object-dominated): use the median conditions
    for arr in (kappa, s_, beta):
        arr[bad] = np.median(arr[~bad])
    return dict(U=U, G=G, Us=Us, a=a, kappa=kappa, s=s_, beta=beta, tilt=tcf, tau=tau,
                logres=lr, resid_sd=1.4826 * np.nanmedian(np.abs(lr - np.nanmedian(lr))),
                resid_med=np.nanmedian(lr), pred=pred)


def measure_var_scatter(fit: dict, M: np.ndarray, share: np.ndarray, chi: np.ndarray) -> dict:
    """Pixel-scale scatter of the pipeline variance around the smooth model.

    The pipeline ivar is itself an estimate (partly from the noisy data): log(var/pred)
    high-passed over 31 px has a robust sd of 5-12% that grows to the red, is larger in
    sky-dominated pixels, is correlated over ~2 pixels and, where the object dominates,
    correlates with the flux noise chi. Returns per wavelength bin (VS_EDGES, and
    interpolated to the coarse grid) the robust sd for sky-dominated (share < 0.3) and
    object-dominated (share > 0.6) pixels, the lag-1 correlation, and corr(logvar, chi)
    in three bins of object share.
    """
    lr = fit["logres"]
    hp = lr - median_filter(np.nan_to_num(lr), size=(1, 31), mode="nearest")
    hp = np.where(M, hp, np.nan) / np.sqrt(1 - 1 / 31)
    s_sky, s_obj = [], []
    for lo, hi in zip(VS_EDGES[:-1], VS_EDGES[1:], strict=True):
        m = np.isfinite(hp) & (W >= lo) & (W < hi)
        for out, sm in ((s_sky, share < 0.3), (s_obj, share > 0.6)):
            mm = m & sm
            out.append(robust_sd(hp[mm]) if mm.sum() > 200 else robust_sd(hp[m]))
    a, b = hp[:, :-1], hp[:, 1:]
    m = np.isfinite(a) & np.isfinite(b) & (np.abs(a) < 0.5) & (np.abs(b) < 0.5)
    lag1 = float(np.corrcoef(a[m], b[m])[0, 1])
    corr = []
    for lo, hi in ((0, 0.3), (0.3, 0.6), (0.6, 1.01)):
        mm = (np.isfinite(hp) & np.isfinite(chi) & (share >= lo) & (share < hi)
              & (np.abs(hp) < 0.5))
        corr.append(float(np.corrcoef(hp[mm], np.clip(chi[mm], -5, 5))[0, 1])
                    if mm.sum() > 200 else np.nan)
    cen = 0.5 * (VS_EDGES[:-1] + VS_EDGES[1:])
    return dict(sd_sky=np.interp(W[ICOARSE], cen, s_sky), sd_obj=np.interp(W[ICOARSE], cen, s_obj),
                sd_sky_bins=np.array(s_sky), sd_obj_bins=np.array(s_obj), lag1=lag1,
                corr_chi=np.array(corr))


# ------------------------------------------------------------------------------ noise
def measure_noise(d: dict, sel: np.ndarray, iv: np.ndarray) -> dict:
    """Chi statistics of the spectra ``sel`` redward of Lyman alpha (1260 A rest).

    chi = (flux - model) sqrt(ivar), high-passed by a 41-px running median (its effect on
    variance and lag-1 correlation is corrected). Returns the core scale s_core_rms (and
    s_core_mad, s_raw_rms) off sky lines at low S/N, its wavelength dependence ``core`` and
    the lag-1 correlation ``rho1`` (coarse grid, from 14 bins), and the sky-residual
    amplitude ``eps`` (coarse grid): E[chi_hp^2] = s0^2 + eps^2 q^2 with q the sky-line
    flux (sky minus its 61-px running median, as the generator computes it) in sigma.
    """
    z = d["z"][sel]
    M = (iv[sel] > 0) & (W[None, :] > 1260 * (1 + z[:, None]))
    chi = (d["flux"][sel] - d["model"][sel]) * np.sqrt(iv[sel])
    hp = chi - median_filter(np.where(M, chi, 0), size=(1, 41), mode="nearest")
    sky = d["sky"][sel]
    line = np.clip(sky - running_median(sky, 61, 5), 0, None)
    q = line * np.sqrt(iv[sel])
    snpix = np.abs(d["model"][sel]) * np.sqrt(iv[sel])
    low = M & (snpix < 3)
    core = low & (q < 0.5)
    # core scale of the noise relative to the pipeline sigma, from the high-passed chi
    # (the 41-px running-median subtraction removes ~1/41 of the variance: corrected)
    c = hp[core]
    s_core_mad = robust_sd(c - np.median(c)) / np.sqrt(1 - 1 / 41)
    s_core_rms = np.sqrt(np.mean(np.clip(c, -5, 5) ** 2) / (1 - 1 / 41))
    s_raw_rms = np.sqrt(np.mean(np.clip(chi[core], -5, 5) ** 2))
    # lag-1 correlation of the high-passed chi (the 41-px median adds ~ +1/41: removed)
    a_, b_ = hp[:, :-1], hp[:, 1:]
    m2 = M[:, :-1] & M[:, 1:] & (snpix[:, :-1] < 10) & (np.abs(a_) < 4) & (np.abs(b_) < 4)
    edges = np.linspace(3550, 10400, 15)
    cen = 0.5 * (edges[:-1] + edges[1:])
    rho_c = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = m2 & (W[:-1] >= lo) & (W[:-1] < hi)
        rho_c.append(np.corrcoef(a_[m], b_[m])[0, 1] - 1 / 41 if m.sum() > 500 else np.nan)
    rho_c = np.array(rho_c)
    # core scale per wavelength bin (off sky lines, low S/N)
    core_c = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = core & (W >= lo) & (W < hi)
        core_c.append(np.sqrt(np.mean(np.clip(hp[m], -5, 5) ** 2) / (1 - 1 / 41))
                      if m.sum() > 300 else np.nan)
    core_c = np.array(core_c)
    okc = np.isfinite(core_c)
    core_lam = np.interp(W[ICOARSE], cen[okc], core_c[okc])
    ok = np.isfinite(rho_c)
    rho1 = np.interp(W[ICOARSE], cen[ok], rho_c[ok])
    # sky residual: E[chi_hp^2] = s0^2 + eps^2 q^2 on low-S/N pixels, per wavelength bin
    s0sq = np.mean(np.clip(hp[core], -10, 10) ** 2)
    edges_e = np.array([3550, 4500, 5500, 6200, 7000, 7600, 8200, 8800, 9400, 10400])
    eps_c = []
    lowq = M & (snpix < 5)
    for lo, hi in zip(edges_e[:-1], edges_e[1:], strict=True):
        m = lowq & (W >= lo) & (W < hi)
        if m.sum() < 300:  # too few low-S/N pixels in this bin (SDSS red end): no estimate
            eps_c.append(np.nan)
            continue
        y = np.clip(hp[m], -10, 10) ** 2 - s0sq
        x = q[m] ** 2
        wt = 1.0 / (1 + x * 0.03**2) ** 2
        eps_c.append(np.sqrt(max(np.sum(wt * x * y) / np.sum(wt * x * x), 0.0)))
    eps_c = np.array(eps_c)
    oke = np.isfinite(eps_c)
    eps = np.interp(W[ICOARSE], 0.5 * (edges_e[:-1] + edges_e[1:])[oke], eps_c[oke])
    return dict(s_core_mad=s_core_mad, s_core_rms=s_core_rms, s_raw_rms=s_raw_rms,
                n_core=int(core.sum()), core=core_lam, core_bins=core_c, rho1=rho1,
                rho_bins=rho_c, eps=eps, eps_bins=eps_c)


# ------------------------------------------------------------------------------ masks
def _runs(x: np.ndarray) -> tuple[int, int]:
    """(number of set pixels, number of runs) of a boolean (S, N) array."""
    starts = x & ~np.concatenate([np.zeros((x.shape[0], 1), bool), x[:, :-1]], 1)
    return int(x.sum()), int(starts.sum())


def box_noise(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    """Unit-variance white noise smoothed by a boxcar of `width` pixels (1 = white)."""
    if width <= 1:
        return rng.standard_normal(n)
    e = rng.standard_normal(n + width - 1)
    c = np.concatenate([[0.0], np.cumsum(e)])
    return (c[width:] - c[:-width]) / np.sqrt(width)


def copula_draw(p: np.ndarray, in_range: np.ndarray, rho: float, width: int,
                rngs: list[np.random.Generator]) -> np.ndarray:
    """Bits set where sqrt(rho) eta + sqrt(1-rho) g(lambda) > Phi^-1(1 - p(lambda)):
    eta ~ N(0, 1) per spectrum, g = box_noise (the generator's mask model)."""
    thr = ndtri(1 - np.clip(p, 1e-12, 1 - 1e-12))
    out = np.zeros(in_range.shape, bool)
    for k, rng in enumerate(rngs):
        eta = rng.standard_normal()
        g = box_noise(rng, NPIX, width) if rho < 1 else 0.0
        out[k] = (np.sqrt(rho) * eta + np.sqrt(1 - rho) * g > thr) & in_range[k] & (p > 0)
    return out


def fit_masks(d: dict, sel: np.ndarray) -> list[dict]:
    """Per channel (and_mask or or_mask bit, or 'ivar0': ivar = 0 off the bad bits) the
    per-pixel rate p(lambda) and the copula (rho, width), chosen on a small grid to match
    the mean run length, the fraction of spectra with any pixel set and the dispersion of
    the per-spectrum rate. BRIGHTSKY is left to brightsky_rule."""
    R = d["in_range"][sel]
    S = len(sel)
    chans = []
    bad = (d["and_mask"][sel] & BAD_BITS) != 0
    for mk in ("and_mask", "or_mask", "ivar0"):
        for b in (range(32) if mk != "ivar0" else [-1]):
            if b == BRIGHTSKY_BIT:
                continue
            if mk == "ivar0":
                x = (d["ivar"][sel] == 0) & R & ~bad
            else:
                x = (((d[mk][sel] >> b) & 1) == 1) & R
            n, nr = _runs(x)
            if n == 0:
                continue
            p = x.sum(0) / np.maximum(R.sum(0), 1)
            p = uniform_filter1d(p, 5, mode="nearest")  # de-noise the per-pixel rate
            mean_run = n / nr
            any_frac = x.any(1).mean()
            per = x.sum(1) / R.sum(1)
            best = None
            for rho in (0.0, 0.3, 0.6, 0.8, 0.9, 0.95, 0.99, 1.0):
                for width in ((1, 2, 4, 8, 16, 32, 64, 128) if rho < 1 else (1,)):
                    rngs = [np.random.default_rng([b + 7, int(rho * 100), width, k])
                            for k in range(S)]
                    sim = copula_draw(p, R, rho, width, rngs)
                    ns, nrs = _runs(sim)
                    if ns == 0:
                        continue
                    per_s = sim.sum(1) / R.sum(1)
                    loss = ((np.log((ns / nrs) / mean_run)) ** 2
                            + 10 * (sim.any(1).mean() - any_frac) ** 2
                            + (np.log((per_s.std() + 1e-5) / (per.std() + 1e-5))) ** 2 / 10)
                    if best is None or loss < best[0]:
                        best = (loss, rho, width, ns / nrs, sim.any(1).mean())
            chans.append(dict(mask=mk, bit=b, name=NAMES.get(b, "IVAR0" if b < 0 else "?"),
                              p=p, rho=best[1], width=best[2], rate=n / R.sum(),
                              mean_run=mean_run))
            log(f"    {mk:8s} {chans[-1]['name']:14s} rate {n / R.sum():.5f} run "
                f"{mean_run:7.1f} any {any_frac:.2f} -> rho {best[1]:.2f} width {best[2]:3d}"
                f" (sim run {best[3]:.1f} any {best[4]:.2f})")
    return chans


def brightsky_rule(d: dict, sel: np.ndarray) -> dict:
    """Calibrate the pipeline rule 'sky > flux + k sigma and sky > f median99(sky)' on the
    real BRIGHTSKY bits (and_mask and or_mask separately): best F1 score, penalised by the
    log ratio of predicted to real rates."""
    R = d["in_range"][sel] & (d["ivar"][sel] > 0)
    sky, fl, ivr = d["sky"][sel], d["flux"][sel], d["ivar"][sel]
    err = 1 / np.sqrt(np.where(ivr > 0, ivr, 1e-9))
    med = running_median(sky)
    out = {}
    for nm, mk in (("and", "and_mask"), ("or", "or_mask")):
        true = (((d[mk][sel] >> BRIGHTSKY_BIT) & 1) == 1) & R
        best = None
        for k in (0, 5, 10, 20, 30, 40):
            for f in (1.1, 1.25, 1.5, 2, 2.5, 3, 4):
                pred = (sky > fl + k * err) & (sky > f * med) & R
                tp = (pred & true).sum()
                rec = tp / max(true.sum(), 1)
                pre = tp / max(pred.sum(), 1)
                f1 = 2 * rec * pre / (rec + pre + 1e-9)
                score = f1 - abs(np.log(max(pred.sum(), 1) / max(true.sum(), 1))) / 4
                if best is None or score > best[0]:
                    best = (score, k, f, rec, pre, pred.sum() / R.sum(), true.sum() / R.sum())
        out[nm] = dict(k=best[1], f=best[2])
        log(f"    BRIGHTSKY {nm}: k={best[1]} f={best[2]} recall {best[3]:.2f} precision "
            f"{best[4]:.2f} rate {best[5]:.4f} vs real {best[6]:.4f}")
    return out


# ------------------------------------------------------------------------------ distortion
def measure_distortion(d: dict, sel: np.ndarray, iv: np.ndarray) -> dict:
    """Smooth log(flux/model) per spectrum (Legendre in log lambda, 3-sigma clipped, on
    pixels with model S/N > 2 redward of 1260 A rest) and the mean fine observed-frame
    pattern. Only spectra whose usable pixels span >= 80% of their coverage in log lambda
    enter the coefficient table (no extrapolation)."""
    cf_rows, rms, fine = [], [], []
    for j in sel:
        m = ((iv[j] > 0) & (d["model"][j] * np.sqrt(iv[j]) > 2) & (d["flux"][j] > 0)
             & (d["model"][j] > 0) & (W > 1260 * (1 + d["z"][j])))
        if m.sum() < 300:
            continue
        x = XLEG[m]
        y = np.log(d["flux"][j, m] / d["model"][j, m])
        wt = np.ones(m.sum())
        for _ in range(5):
            cf = legendre.legfit(x, y, DIST_DEG, w=wt)
            r = y - legendre.legval(x, cf)
            wt = (np.abs(r) < 3 * robust_sd(r[wt > 0])).astype(float)
        xr = XLEG[d["in_range"][j]]
        if (x.max() - x.min()) / (xr.max() - xr.min()) >= 0.8:
            cf[0] = 0.0
            cf_rows.append(cf[1:])
            rms.append(np.std(legendre.legval(xr, cf)))
        resid = np.full(NPIX, np.nan)
        resid[m] = np.where(wt > 0, r, np.nan)
        fine.append(resid)
    fine = np.array(fine)

    def pattern(f: np.ndarray) -> np.ndarray:
        pat = np.nanmedian(f, 0)
        pat = np.where(np.sum(np.isfinite(f), 0) >= 5, pat, 0.0)
        return uniform_filter1d(np.nan_to_num(pat), 25, mode="nearest")

    # the mean pattern is only partly reproducible with ~50-80 spectra: smooth it over
    # 25 px and shrink it by its split-half reliability 2r/(1+r) (Spearman-Brown)
    pa, pb = pattern(fine[0::2]), pattern(fine[1::2])
    m = (pa != 0) & (pb != 0)
    r = max(float(np.corrcoef(pa[m], pb[m])[0, 1]), 0.0)
    shrink = 2 * r / (1 + r)
    return dict(coef=np.array(cf_rows), rms=np.array(rms), fine=shrink * pattern(fine),
                fine_split_r=r, fine_shrink=shrink)


# ------------------------------------------------------------------------------ wdisp
def measure_wdisp(d: dict, sel: np.ndarray) -> dict:
    """Median wdisp curve (gaps interpolated) and the sd of the per-spectrum log scale."""
    wd = np.where(d["in_range"][sel] & (d["wdisp"][sel] > 0), d["wdisp"][sel], np.nan)
    curve = np.nanmedian(wd, 0)
    okc = np.isfinite(curve)
    curve = np.interp(np.arange(NPIX), np.flatnonzero(okc), curve[okc])
    scale = np.nanmedian(np.log(wd / curve), 1)
    return dict(curve=curve, log_sd=float(np.nanstd(scale)))


# ------------------------------------------------------------------------------ one survey
def derive_group(d: dict, group: str) -> dict:
    """Everything the generator needs for one survey ("boss" or "sdss").

    Sky, masks, BRIGHTSKY and wdisp use every held-in spectrum of the survey; the
    variance, noise and distortion fits (and the table of observing-condition rows) use
    the held-in quasars with more than half of their pixels good.
    """
    boss = group == "boss"
    iv = good_ivar(d)
    ok_spec = (iv > 0).sum(1) > 0.5 * d["in_range"].sum(1)
    held = ~d["held_out"] & (d["boss"] == boss)
    sel_all = np.flatnonzero(held)
    sel = np.flatnonzero(held & (d["cls"] == "QSO") & ok_spec)
    log(f"[{group}] held-in spectra {len(sel_all)}, QSO with >50% good pixels {len(sel)}")
    out = {"files_all": d["file"][sel_all], "files_rows": d["file"][sel]}

    log("  sky PCA")
    ok_sky = d["in_range"][sel_all] & (d["sky"][sel_all] > 0.05)
    sk = fit_sky_pca(d["sky"][sel_all], ok_sky, K_SKY[group])
    out["sky"] = sk
    log(f"    explained {np.round(sk['explained'], 3)}, log residual robust sd "
        f"{sk['resid_sd']:.3f}, pixel noise {sk['pixnoise']:.3f}")

    log("  variance decomposition")
    M = (iv[sel] > 0) & (d["sky"][sel] > 0)
    V = np.where(M, 1 / np.where(M, iv[sel], 1), 0.0)
    sky, mod = d["sky"][sel], np.clip(d["model"][sel], 0, None)
    fit = fit_variance(V, M, sky, mod)
    out["var"] = fit
    log(f"    log(var/pred) median {fit['resid_med']:.3f} robust sd {fit['resid_sd']:.3f};"
        f" kappa p50 {np.median(fit['kappa']):.2f} s p50 {np.median(fit['s']):.2f}"
        f" beta p50 {np.median(fit['beta']):.3f}; tilt rms p50 "
        f"{np.median(fit['tau'].std(1)):.3f}")
    objv = np.exp(fit["tau"]) * fit["a"][:, None] * fit["kappa"][:, None] * mod * fit["U"]
    chi_r = np.where(M, (d["flux"][sel] - d["model"][sel]) * np.sqrt(iv[sel]), np.nan)
    vsc = measure_var_scatter(fit, M, objv / fit["pred"], chi_r)
    out["vscat"] = vsc
    log(f"    ivar pixel scatter (robust sd of log var): sky-dominated "
        f"{np.round(vsc['sd_sky_bins'], 3)}, object-dominated {np.round(vsc['sd_obj_bins'], 3)};"
        f" lag-1 {vsc['lag1']:.2f}; corr with chi by object share "
        f"{np.round(vsc['corr_chi'], 2)}")

    log("  noise / chi statistics")
    nz = measure_noise(d, sel, iv)
    out["noise"] = nz
    log(f"    core scale (n={nz['n_core']}): MAD {nz['s_core_mad']:.3f}, clipped rms "
        f"{nz['s_core_rms']:.3f} (raw chi {nz['s_raw_rms']:.3f}); core by bin "
        f"{np.round(nz['core_bins'], 3)}; lag-1 corr bins {np.round(nz['rho_bins'], 3)};"
        f" eps bins {np.round(nz['eps_bins'], 4)}")

    log("  masks")
    out["masks"] = fit_masks(d, sel_all)
    out["brightsky"] = brightsky_rule(d, sel_all)
    R = d["in_range"][sel_all]
    badr = ((d["and_mask"][sel_all] & BAD_BITS) != 0) & R
    out["bad_ivar0_frac"] = float(np.mean(d["ivar"][sel_all][badr] == 0)) if badr.any() else 0.0
    log(f"    bad-rule pixel rate {badr.sum() / R.sum():.4f}; of those with ivar = 0 in the "
        f"file: {out['bad_ivar0_frac']:.3f}")

    log("  distortion")
    ds = measure_distortion(d, sel, iv)
    out["dist"] = ds
    fine_rms = np.std(ds["fine"][d["in_range"][sel].mean(0) > 0.5])
    log(f"    {len(ds['coef'])} spectra with full coverage; rms of smooth distortion "
        f"p10/50/90 {np.round(np.percentile(ds['rms'], [10, 50, 90]), 3)}; fine pattern rms "
        f"{fine_rms:.4f} (split-half r {ds['fine_split_r']:.2f}, shrink {ds['fine_shrink']:.2f})")

    log("  wdisp")
    out["wdisp"] = measure_wdisp(d, sel_all)
    # observing-condition rows: sampling weight 1/sqrt(number of rows on the same plate)
    pl = d["plate"][sel]
    out["row_weight"] = 1 / np.sqrt(np.array([np.sum(pl == p) for p in pl]))
    out["row_sn"] = d["sn"][sel]
    out["row_sky_coef"] = sk["coef"][np.searchsorted(sel_all, sel)]
    return out


# ------------------------------------------------------------------------------ output
def f32(x) -> np.ndarray:
    """float32 with the mantissa truncated to 12 bits (relative precision 2.4e-4): far below
    every measurement error here, and it lets gzip compress the arrays ~2x better."""
    a = np.ascontiguousarray(np.asarray(x, np.float32))
    return (a.view(np.uint32) & np.uint32(0xFFFFF800)).view(np.float32)


def git_commit() -> str:
    """HEAD of the checkout, marked if this script or the modules it imports differ."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", SCRIPT, "qsocube/builder/simulate/instrument.py",
         "qsocube/builder/simulate/templates.py"], capture_output=True, text=True)
    commit = head.stdout.strip() or "unknown"
    return commit + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def write_group(G: h5py.Group, r: dict) -> None:
    """One survey's datasets and attributes (names as load_data reads them)."""
    G.attrs["n_spectra_held_in"] = len(r["files_all"])
    G.attrs["n_rows"] = len(r["files_rows"])
    kw = dict(compression="gzip", compression_opts=9, shuffle=True)
    # sky
    sk = r["sky"]
    G.create_dataset("sky_logmean", data=f32(sk["mean"]), **kw)
    G.create_dataset("sky_logcomps", data=f32(sk["comps"]), **kw)
    G["sky_logmean"].attrs["doc"] = ("sky = exp(sky_logmean + coef @ sky_logcomps + pixnoise"
                                     " * N(0,1))")
    G.attrs["sky_pixnoise"] = sk["pixnoise"]
    # variance shapes (U, G on the full frame, Us2 on the coarse grid)
    v = r["var"]
    G.create_dataset("var_U", data=f32(v["U"]), **kw)
    G.create_dataset("var_G", data=f32(v["G"]), **kw)
    G.create_dataset("var_Us2", data=f32(v["Us"][ICOARSE] ** 2), **kw)
    G["var_U"].attrs["doc"] = (
        "var = A exp(tau) [ (sky + kappa max(model,0)) U + s sky G + beta Us2 ] (Us2 on the"
        " coarse grid); U ~ 1/throughput (=1 at 5000-6000 A), G sky-line variance excess,"
        " Us2 read-noise shape")
    # per-row table (one row per held-in QSO spectrum): conditions to resample jointly
    cols = (["sn", "weight", "kappa", "s", "beta"] + [f"tilt{k + 1}" for k in range(TILT_DEG)]
            + [f"sky{k}" for k in range(sk["comps"].shape[0])])
    tab = np.column_stack([r["row_sn"], r["row_weight"], v["kappa"], v["s"], v["beta"],
                           v["tilt"], r["row_sky_coef"]])
    G.create_dataset("rows", data=f32(tab), **kw)
    G["rows"].attrs["columns"] = np.array(cols, dtype="S")
    G["rows"].attrs["doc"] = (
        "one row per held-in real QSO spectrum; the generator draws one row per simulated"
        " spectrum (probability ~ weight) and uses its kappa, s, beta, variance tilt"
        " (Legendre coefs 1..3) and sky PCA coefficients")
    # noise
    nz = r["noise"]
    G.attrs["noise_core_scale"] = nz["s_core_rms"]
    G.create_dataset("noise_core", data=f32(nz["core"]), **kw)
    G["noise_core"].attrs["doc"] = "true noise sigma / pipeline sigma off sky lines, coarse grid"
    vs = r["vscat"]
    G.create_dataset("ivar_scatter_sky", data=f32(vs["sd_sky"]), **kw)
    G.create_dataset("ivar_scatter_obj", data=f32(vs["sd_obj"]), **kw)
    G["ivar_scatter_sky"].attrs["doc"] = (
        "robust sd of the pixel-scale log scatter of the pipeline variance (sky-dominated"
        " pixels; _obj: object-dominated), coarse grid")
    G.attrs["ivar_scatter_lag1"] = vs["lag1"]
    cc = vs["corr_chi"]
    G.attrs["ivar_scatter_corr_chi"] = np.where(np.isfinite(cc), cc,
                                                np.nanmean(cc)).astype(np.float32)
    G.attrs["ivar_scatter_corr_share"] = np.array([0.15, 0.45, 0.8], np.float32)
    G.attrs["zero_ivar_on_bad_bits"] = int(r["bad_ivar0_frac"] > 0.5)
    G.create_dataset("noise_rho1", data=f32(nz["rho1"]), **kw)
    G.create_dataset("skyres_eps", data=f32(nz["eps"]), **kw)
    G["noise_rho1"].attrs["doc"] = "lag-1 correlation of the pixel noise, coarse grid"
    G["skyres_eps"].attrs["doc"] = ("sky-subtraction residual sigma = eps * (sky - running"
                                    " median sky), coarse grid; noise not reflected in ivar")
    # distortion
    ds = r["dist"]
    G.create_dataset("dist_coef", data=f32(ds["coef"]), **kw)
    G["dist_coef"].attrs["doc"] = ("log distortion = sum_k coef_k P_k(x), k = 1..3; one row"
                                   " per spectrum")
    G.create_dataset("dist_fine", data=f32(ds["fine"]), **kw)
    G["dist_fine"].attrs["doc"] = (
        "mean observed-frame log(flux/model) pattern (median over spectra of the residual of"
        " the Legendre fit; 25-px smoothed, shrunk by its split-half reliability)")
    # wdisp
    wd = r["wdisp"]
    G.create_dataset("wdisp", data=f32(wd["curve"][ICOARSE]), **kw)
    G.attrs["wdisp_log_sd"] = wd["log_sd"]
    # masks (channels rarer than 1e-5 per pixel are dropped)
    chans = [c for c in r["masks"] if c["rate"] >= 1e-5]
    G.create_dataset("mask_p", data=f32(np.array([c["p"] for c in chans])), **kw)
    kind = {"and_mask": 0, "or_mask": 1, "ivar0": 2}
    par = [[kind[c["mask"]], c["bit"], c["rho"], c["width"], c["rate"], c["mean_run"]]
           for c in chans]
    G.create_dataset("mask_par", data=np.array(par, np.float32))
    G["mask_par"].attrs["columns"] = np.array(
        ["kind(0=and,1=or,2=ivar0)", "bit", "rho", "width", "rate", "mean_run"], dtype="S")
    G["mask_p"].attrs["doc"] = (
        "per channel (row of mask_par): bit set where sqrt(rho) eta + sqrt(1-rho) g >"
        " Phi^-1(1-p(lambda)); eta ~ N(0,1) per spectrum, g = white noise boxcar-smoothed"
        " over `width` px and renormalised; kind 2 = ivar set to 0")
    b = r["brightsky"]
    G.attrs["brightsky_and_k"], G.attrs["brightsky_and_f"] = b["and"]["k"], b["and"]["f"]
    G.attrs["brightsky_or_k"], G.attrs["brightsky_or_f"] = b["or"]["k"], b["or"]["f"]
    G.attrs["brightsky_doc"] = ("BRIGHTSKY (bit 23) set where sky > flux + k sigma and"
                                " sky > f * running median(sky, 99 px), and/or thresholds")


def write_h5(path: Path, res: dict, source: str) -> None:
    """The package data file, written atomically, with provenance in the root attributes."""
    used = sorted(f for r in res.values() for f in r["files_all"])
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["title"] = ("qsocube empirical instrument/noise model (derived from held-in"
                            " real SDSS spectra)")
        f.attrs["created"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        f.attrs["script"] = SCRIPT
        f.attrs["git_commit"] = git_commit()
        f.attrs["source"] = source
        f.attrs["holdout_rule"] = (
            "qsocube.builder.simulate.templates.held_out(ra, dec, fraction=0.4): key ="
            " f'{round(ra*60)/60:.4f}{round(dec*60)/60:+.4f}'; sha256(key)[:8] big-endian"
            " / 2**64 < 0.4; RA/DEC from MANIFEST.csv; only held_out == False spectra used")
        f.attrs["frame"] = ("loglam = round(3.5490 + 1e-4*i, 4), i = 0..4680; coarse arrays"
                            " use i = 0, 20, 40, ...")
        f.attrs["coarse_step"] = COARSE
        f.attrs["bad_bits"] = np.array(BAD_BITS_LIST, np.int32)
        f.attrs["legendre_x"] = "x = (loglam - 3.80) / 0.22"
        f.attrs["units"] = ("flux, sky: 1e-17 erg/s/cm^2/A; variance: (1e-17 erg/s/cm^2/A)^2;"
                            " wdisp: pixels")
        f["files_used"] = np.array(used, dtype="S")
        for name, r in res.items():
            write_group(f.create_group(name), r)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"),
                        help="the shared data folder (holds sdss/MANIFEST.csv and "
                             "sdss/spectra); default ../shared/data")
    parser.add_argument("--out", type=Path,
                        default=Path("qsocube/builder/simulate/data/instrument.h5"))
    args = parser.parse_args(argv)
    sdss = args.shared / "sdss"
    if not (sdss / "MANIFEST.csv").is_file():
        print(f"derive_instrument: {sdss}/MANIFEST.csv not found (needs --shared, default "
              "../shared/data, run from the repository root)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    d = load_spectra(sdss)
    res = {g: derive_group(d, g) for g in ("boss", "sdss")}
    write_h5(args.out, res, f"{sdss}/spectra (MANIFEST.csv)")
    log(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} kB) in "
        f"{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
