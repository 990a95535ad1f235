"""Anomaly scores that know about noise (numpy only; shared by training and inference).

``anomaly_score`` of a spectrum is the fraction of normal quasars (the validation split)
that look more usual than it: 0.99 means more unusual than 99% of them, at any S/N. It
combines two parts, each itself such a fraction:

- ``recon_score``: how badly the model reconstructs the spectrum *given its noise*. The
  statistic is a standardised chi-square, t = (chi2 - n) / sqrt(2 n), where chi2 sums
  r^2 / (1/w + s^2) over the n valid pixels: the pixel's noise variance 1/w plus the
  model's own error s^2 = a(lambda)^2 + (b(lambda) x_hat)^2 (an intrinsic scatter per
  pixel, constant plus proportional to the reconstructed flux, learned on validation
  spectra). A faint quasar's noise no longer reads as oddity, and at high S/N the model's
  own error no longer does either.
- ``density_score``: how unusual the encoder's code is among the training spectra's codes:
  minus the log density of a Gaussian mixture fitted to them, each component widened by
  the code's own posterior variance exp(logvar), so a noisy spectrum's uncertain code is
  not an outlier for being uncertain.

The parts combine by Fisher's rule, -2 [ln(1 - recon) + ln(1 - density)], and that too is
turned into a fraction of the reference spectra. Everything needed travels in an
:class:`AnomalyModel`, written as JSON beside each ONNX pair (``schemas/anomaly_model.json``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

N_QUANTILES = 1001
EPS = 1e-6  # keeps Fisher's logarithms finite at a score of exactly 1
DEFINITION = __doc__.split("\n\n", 1)[1].strip()


@dataclass(frozen=True)
class Mixture:
    """A Gaussian mixture in latent space: weights (K,), means (K, L), covariances (K, L, L)."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray


@dataclass(frozen=True)
class AnomalyModel:
    """What turns (x, w, x_hat, mu, logvar) into calibrated scores, for one model."""

    scatter_const: np.ndarray  # (n_pix,) a: model error in normalised flux units
    scatter_frac: np.ndarray  # (n_pix,) b: model error per unit of reconstructed flux
    mixture: Mixture
    recon_quantiles: np.ndarray  # (N_QUANTILES,) of t over the reference spectra
    density_quantiles: np.ndarray  # of minus log density
    combined_quantiles: np.ndarray  # of Fisher's statistic

    def to_json(self) -> str:
        body = {k: np.asarray(v).tolist() for k, v in asdict(self).items() if k != "mixture"}
        body["mixture"] = {k: np.asarray(v).tolist() for k, v in asdict(self.mixture).items()}
        return json.dumps({"definition": DEFINITION, **body})

    @classmethod
    def from_json(cls, text: str) -> AnomalyModel:
        data = json.loads(text)
        mixture = Mixture(*(np.asarray(data["mixture"][k], np.float64)
                            for k in ("weights", "means", "covariances")))
        return cls(np.asarray(data["scatter_const"], np.float32),
                   np.asarray(data["scatter_frac"], np.float32), mixture,
                   *(np.asarray(data[k], np.float64) for k in
                     ("recon_quantiles", "density_quantiles", "combined_quantiles")))

    @classmethod
    def read(cls, path: str | Path) -> AnomalyModel:
        return cls.from_json(Path(path).read_text())


# ---------------------------------------------------------------- reconstruction part
def fit_scatter(x: np.ndarray, w: np.ndarray, x_hat: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel (a, b) with excess variance r^2 - 1/w ~ a^2 + b^2 x_hat^2 over spectra.

    Least squares of the excess on (1, x_hat^2) at each pixel, then clipped at 0: the
    model's own error cannot be negative. Pixels with too few valid spectra get 0.
    """
    valid = w > 0
    excess = np.where(valid, np.square(x - x_hat) - 1 / np.where(valid, w, 1), 0.0)
    q = np.where(valid, np.square(x_hat), 0.0).astype(np.float64)
    n = valid.sum(0).astype(np.float64)
    s_q, s_qq = q.sum(0), np.square(q).sum(0)
    s_e, s_eq = excess.sum(0, dtype=np.float64), (excess * q).sum(0, dtype=np.float64)
    det = n * s_qq - s_q**2
    with np.errstate(divide="ignore", invalid="ignore"):
        a2 = np.where(det > 0, (s_qq * s_e - s_q * s_eq) / det, 0.0)
        b2 = np.where(det > 0, (n * s_eq - s_q * s_e) / det, 0.0)
    # where one coefficient comes out negative, refit the other alone
    only_a = np.where(n > 0, s_e / np.maximum(n, 1), 0.0)
    only_b = np.where(s_qq > 0, s_eq / np.where(s_qq > 0, s_qq, 1), 0.0)
    a2, b2 = (np.where(b2 < 0, np.maximum(only_a, 0), np.where(a2 < 0, 0.0, a2)),
              np.where(a2 < 0, np.maximum(only_b, 0), np.maximum(b2, 0)))
    enough = n >= 10
    return (np.sqrt(np.where(enough, a2, 0.0)).astype(np.float32),
            np.sqrt(np.where(enough, b2, 0.0)).astype(np.float32))


def recon_statistic(x: np.ndarray, w: np.ndarray, x_hat: np.ndarray, a: np.ndarray,
                    b: np.ndarray) -> np.ndarray:
    """t = (chi2 - n) / sqrt(2 n) with the model's error in the variance; NaN if n = 0."""
    valid = w > 0
    variance = (1 / np.where(valid, w, 1) + np.square(a) + np.square(b * x_hat)).astype(
        np.float32)
    chi2 = np.where(valid, np.square(x - x_hat) / variance, 0).sum(1, dtype=np.float64)
    n = valid.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, (chi2 - n) / np.sqrt(2.0 * n), np.nan)


# ---------------------------------------------------------------- latent-density part
def fit_mixture(codes: np.ndarray, k: int = 8, iterations: int = 200, seed: int = 0,
                ridge: float = 1e-3) -> Mixture:
    """Gaussian mixture by EM (k-means++-style start, full covariances, a small ridge)."""
    codes = np.asarray(codes, np.float64)
    n, dim = codes.shape
    k = max(1, min(k, n // (2 * dim + 2)))
    rng = np.random.default_rng(seed)
    centres = [codes[rng.integers(n)]]
    for _ in range(k - 1):  # spread the starting means
        d2 = np.min([np.square(codes - c).sum(1) for c in centres], axis=0)
        centres.append(codes[rng.choice(n, p=d2 / d2.sum())])
    means = np.array(centres)
    covs = np.repeat(np.cov(codes.T).reshape(1, dim, dim), k, 0) + ridge * np.eye(dim)
    weights = np.full(k, 1 / k)
    previous = -np.inf
    for _ in range(iterations):
        log_r = _component_log_density(codes, Mixture(weights, means, covs), None)
        log_norm = _logsumexp(log_r)
        resp = np.exp(log_r - log_norm[:, None])
        nk = resp.sum(0) + 1e-12
        weights = nk / n
        means = (resp.T @ codes) / nk[:, None]
        centred = codes[None, :, :] - means[:, None, :]
        covs = (np.einsum("nk,kni,knj->kij", resp, centred, centred) / nk[:, None, None]
                + ridge * np.eye(dim))
        total = log_norm.sum()
        if total - previous < 1e-6 * n:
            break
        previous = total
    return Mixture(weights, means, covs)


def _logsumexp(a: np.ndarray) -> np.ndarray:
    top = a.max(axis=1)
    return top + np.log(np.exp(a - top[:, None]).sum(axis=1))


def _component_log_density(codes: np.ndarray, mixture: Mixture, variance: np.ndarray | None
                           ) -> np.ndarray:
    """(n, K) log of weight_k N(code; mean_k, cov_k + diag(variance)).

    Without ``variance`` each component's Cholesky factor is computed once; with it, each
    (code, component) pair has its own covariance, solved in one batched call.
    """
    dim = codes.shape[1]
    out = np.empty((len(codes), len(mixture.weights)))
    for k, (weight, mean, cov) in enumerate(zip(mixture.weights, mixture.means,
                                                mixture.covariances, strict=True)):
        diff = codes - mean
        if variance is None:
            chol = np.linalg.cholesky(cov)
            sol = np.linalg.solve(chol, diff.T)
            quad = np.square(sol).sum(0)
            logdet = 2 * np.log(np.diag(chol)).sum()
        else:
            full = cov[None, :, :] + variance[:, :, None] * np.eye(dim)[None]
            chol = np.linalg.cholesky(full)
            sol = np.linalg.solve(chol, diff[:, :, None])[:, :, 0]
            quad = np.square(sol).sum(1)
            logdet = 2 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(1)
        out[:, k] = np.log(weight) - 0.5 * (quad + logdet + dim * np.log(2 * np.pi))
    return out


def density_statistic(mu: np.ndarray, logvar: np.ndarray, mixture: Mixture) -> np.ndarray:
    """Minus the log density of each code under the mixture widened by its own variance."""
    variance = np.exp(np.clip(np.asarray(logvar, np.float64), -30, 10))
    stat = -_logsumexp(_component_log_density(np.asarray(mu, np.float64), mixture, variance))
    return np.where(np.isfinite(mu).all(1), stat, np.nan)


# ---------------------------------------------------------------- calibration
def quantiles(values: np.ndarray, n: int = N_QUANTILES) -> np.ndarray:
    """Quantiles of a reference distribution."""
    finite = values[np.isfinite(values)]
    return np.quantile(finite, np.linspace(0, 1, n)) if finite.size else np.full(n, np.nan)


def fraction_below(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Fraction of the reference with a smaller value (0.99: more than 99% of it)."""
    levels = np.linspace(0, 1, len(reference))
    scores = np.interp(values, reference, levels, left=0.0, right=1.0)
    return np.where(np.isfinite(values), scores, np.nan)


def fisher(recon: np.ndarray, density: np.ndarray) -> np.ndarray:
    """Fisher's combination of two scores (each the fraction of references below)."""
    return -2 * (np.log(np.clip(1 - recon, EPS, 1)) + np.log(np.clip(1 - density, EPS, 1)))


@dataclass(frozen=True)
class Scores:
    recon: np.ndarray  # float32 (n,)
    density: np.ndarray
    combined: np.ndarray


def score(model: AnomalyModel, x: np.ndarray, w: np.ndarray, x_hat: np.ndarray,
          mu: np.ndarray, logvar: np.ndarray) -> Scores:
    """The three calibrated scores of each spectrum (NaN where it has no valid pixel)."""
    recon = fraction_below(recon_statistic(x, w, x_hat, model.scatter_const,
                                           model.scatter_frac), model.recon_quantiles)
    density = fraction_below(density_statistic(mu, logvar, model.mixture),
                             model.density_quantiles)
    combined = fraction_below(fisher(recon, density), model.combined_quantiles)
    combined = np.where(np.isfinite(recon) & np.isfinite(density), combined, np.nan)
    return Scores(*(s.astype(np.float32) for s in (recon, density, combined)))


def degrade(x: np.ndarray, w: np.ndarray, target_sn: float, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    """The same spectra at a lower median S/N: noise added in proportion to the existing
    variance, so the noise keeps its shape with wavelength (sky lines, blue end)."""
    valid = w > 0
    with np.errstate(all="ignore"):  # rows without a valid pixel stay NaN
        sn = np.nanmedian(np.where(valid, x * np.sqrt(w), np.nan), axis=1)
    factor = np.maximum(np.square(sn / target_sn), 1.0)[:, None]  # variance multiplier
    sigma_add = np.sqrt((factor - 1) / np.where(valid, w, np.inf))
    noisy = np.where(valid, x + sigma_add * rng.standard_normal(x.shape), 0.0)
    return noisy.astype(np.float32), np.where(valid, w / factor, 0.0).astype(np.float32)


def calibrate(x: np.ndarray, w: np.ndarray, x_hat: np.ndarray, mu: np.ndarray,
              logvar: np.ndarray, fit_rows: np.ndarray, mixture: Mixture) -> AnomalyModel:
    """An AnomalyModel from reference spectra of normal quasars (x, w, their
    reconstructions and codes): the scatter is fitted on ``fit_rows``, the quantiles on
    the others, so the scores are not calibrated on the spectra that set the scatter."""
    a, b = fit_scatter(x[fit_rows], w[fit_rows], x_hat[fit_rows])
    rest = np.setdiff1d(np.arange(len(x)), fit_rows)
    t = recon_statistic(x[rest], w[rest], x_hat[rest], a, b)
    d = density_statistic(mu[rest], logvar[rest], mixture)
    q_recon, q_density = quantiles(t), quantiles(d)
    combined = fisher(fraction_below(t, q_recon), fraction_below(d, q_density))
    return AnomalyModel(a, b, mixture, q_recon, q_density, quantiles(combined))
