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
turned into a fraction of the reference spectra.

Every fraction is taken among reference spectra *of the same S/N*: the reference quasars
are degraded to a ladder of S/N values, each rung keeps its own quantile tables, and a
spectrum is scored against the two rungs around its S/N (linear in log S/N). The S/N that
places a spectrum on the ladder is ``snr(w, x_hat)``, the rms S/N of its reconstruction
over its valid pixels (one pass, and the same in training and inference). So 0.99 means
the same for a faint spectrum as for a bright one even where the statistics themselves
still drift with S/N. Everything needed travels in an
:class:`AnomalyModel`, written as JSON beside each ONNX pair (``schemas/anomaly_model.json``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

N_QUANTILES = 1001
# A simulated cube's truth labels of a normal quasar: the reference population of the scores
NORMAL_CLASS, NO_ARTEFACT = "QSO", "none"
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
    sn_nodes: np.ndarray  # (M,) increasing: the rungs' S/N (median snr of their spectra)
    recon_quantiles: np.ndarray  # (M, N_QUANTILES) of t over each rung's reference spectra
    density_quantiles: np.ndarray  # (M, N_QUANTILES) of minus log density
    combined_quantiles: np.ndarray  # (M, N_QUANTILES) of Fisher's statistic

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
                     ("sn_nodes", "recon_quantiles", "density_quantiles",
                      "combined_quantiles")))

    @classmethod
    def read(cls, path: str | Path) -> AnomalyModel:
        return cls.from_json(Path(path).read_text())


def normal_quasars(object_class: np.ndarray, artefact: np.ndarray) -> np.ndarray:
    """(n,) bool: True where a simulated survey's truth labels (OBJECT_CLASS, ARTEFACT;
    str or bytes, padded or not) say a normal quasar, not a star, galaxy or artefact."""
    def labels(values: np.ndarray) -> np.ndarray:
        return np.char.strip(np.asarray(values).astype(str))

    return (labels(object_class) == NORMAL_CLASS) & (labels(artefact) == NO_ARTEFACT)


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
    return _recon_and_snr(x, w, x_hat, a, b)[0]


def _recon_and_snr(x: np.ndarray, w: np.ndarray, x_hat: np.ndarray, a: np.ndarray,
                   b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(recon_statistic, snr) in one pass over the pixels, float32 and in place: a masked
    pixel (w = 0) has variance 1/0 = inf and adds exactly 0."""
    x, w, x_hat = (np.asarray(v, np.float32) for v in (x, w, x_hat))
    square = np.square(x_hat)
    sn = _snr_of_square(w, square)
    square *= np.square(b, dtype=np.float32)
    square += np.square(a, dtype=np.float32)
    with np.errstate(divide="ignore"):
        square += np.divide(np.float32(1), w)  # the variance
    residual = np.subtract(x, x_hat)
    np.square(residual, out=residual)
    residual /= square
    chi2 = residual.sum(1, dtype=np.float64)
    n = np.count_nonzero(w > 0, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, (chi2 - n) / np.sqrt(2.0 * n), np.nan), sn


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
    (code, component) pair has its own covariance, factorised all at once by
    ``_cholesky_quadratic`` (a loop over the latent dimensions, not over the codes).
    """
    dim = codes.shape[1]
    diff = codes[:, None, :] - mixture.means[None, :, :]  # (n, K, L)
    if variance is None:
        chol = np.linalg.cholesky(mixture.covariances)  # (K, L, L)
        sol = np.linalg.solve(chol[None], diff[..., None])[..., 0]
        quad = np.square(sol).sum(-1)
        logdet = 2 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(1)[None, :]
    else:  # laid out (L, L, n, K): every step below is one contiguous operation
        full = np.ascontiguousarray(np.broadcast_to(
            np.transpose(mixture.covariances, (1, 2, 0))[:, :, None, :],
            (dim, dim, len(codes), len(mixture.weights))))
        for j in range(dim):
            full[j, j] += variance[:, j, None]
        quad, logdet = _cholesky_quadratic(full, np.moveaxis(diff, -1, 0))
    return np.log(mixture.weights)[None, :] - 0.5 * (quad + logdet + dim * np.log(2 * np.pi))


def _cholesky_quadratic(cov: np.ndarray, diff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For covariances (L, L, ...) and vectors (L, ...): diff^T cov^-1 diff and log det cov,
    by a Cholesky factorisation and forward substitution vectorised over the trailing axes
    (numpy's batched linalg loops over tiny matrices one by one)."""
    dim = cov.shape[0]
    chol = np.zeros_like(cov)
    y = np.zeros_like(diff)
    for j in range(dim):
        row = chol[j, :j]  # (j, ...)
        pivot = np.sqrt(cov[j, j] - np.square(row).sum(0))
        chol[j, j] = pivot
        chol[j + 1:, j] = (cov[j + 1:, j] - (chol[j + 1:, :j] * row[None]).sum(1)) / pivot
        y[j] = (diff[j] - (row * y[:j]).sum(0)) / pivot
    logdet = 2 * sum(np.log(chol[j, j]) for j in range(dim))
    return np.square(y).sum(0), logdet


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


def snr(w: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
    """rms S/N of the reconstruction over the valid pixels: where a spectrum sits on the
    calibration ladder (NaN without a valid pixel)."""
    w = np.asarray(w, np.float32)
    return _snr_of_square(w, np.square(np.asarray(x_hat, np.float32)))


def _snr_of_square(w: np.ndarray, x_hat_squared: np.ndarray) -> np.ndarray:
    n = np.count_nonzero(w > 0, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(np.einsum("ij,ij->i", w, x_hat_squared, dtype=np.float64) / n)


def ladder_fraction(values: np.ndarray, sn: np.ndarray, nodes: np.ndarray,
                    tables: np.ndarray) -> np.ndarray:
    """fraction_below against the quantile tables (M, Q) of the S/N ladder: each
    spectrum's table is its two neighbouring rungs' quantiles interpolated linearly in
    log S/N (quantiles, not fractions, so a distribution that shifts or widens with S/N is
    followed between rungs); the end rungs hold beyond the ladder. A binary search over
    the Q levels, vectorised over spectra."""
    values = np.asarray(values, np.float64)
    n_q = tables.shape[1]
    if len(nodes) == 1:
        lo, frac = np.zeros(len(values), int), np.zeros(len(values))
        tables = np.vstack([tables, tables])
    else:
        usable = np.isfinite(sn) & (sn > 0)  # rows without one are NaN in ``values`` anyway
        position = np.interp(np.log(np.where(usable, sn, nodes[0])), np.log(nodes),
                             np.arange(len(nodes)))
        lo = np.minimum(position.astype(int), len(nodes) - 2)
        frac = position - lo

    def table(k: np.ndarray) -> np.ndarray:
        return (1 - frac) * tables[lo, k] + frac * tables[lo + 1, k]

    below = np.zeros(len(values), int)  # invariant: table(below) < value <= table(above)
    above = np.full(len(values), n_q - 1)
    for _ in range(int(np.ceil(np.log2(n_q)))):
        middle = (below + above) // 2
        under = table(middle) < values
        below, above = np.where(under, middle, below), np.where(under, above, middle)
    t_lo, t_hi = table(below), table(above)
    with np.errstate(divide="ignore", invalid="ignore"):
        step = np.where(t_hi > t_lo, (values - t_lo) / (t_hi - t_lo), 0.0)
    level = (below + np.clip(step, 0, 1)) / (n_q - 1)
    level = np.where(values <= table(np.zeros_like(below)), 0.0, level)
    level = np.where(values > table(np.full_like(below, n_q - 1)), 1.0, level)
    return np.where(np.isfinite(values), level, np.nan)


@dataclass(frozen=True)
class Scores:
    recon: np.ndarray  # float32 (n,)
    density: np.ndarray
    combined: np.ndarray


def score(model: AnomalyModel, x: np.ndarray, w: np.ndarray, x_hat: np.ndarray,
          mu: np.ndarray, logvar: np.ndarray) -> Scores:
    """The three calibrated scores of each spectrum (NaN where it has no valid pixel)."""
    t, sn = _recon_and_snr(x, w, x_hat, model.scatter_const, model.scatter_frac)
    recon = ladder_fraction(t, sn, model.sn_nodes, model.recon_quantiles)
    density = ladder_fraction(density_statistic(mu, logvar, model.mixture), sn,
                              model.sn_nodes, model.density_quantiles)
    combined = ladder_fraction(fisher(recon, density), sn, model.sn_nodes,
                               model.combined_quantiles)
    combined = np.where(np.isfinite(recon) & np.isfinite(density), combined, np.nan)
    return Scores(*(s.astype(np.float32) for s in (recon, density, combined)))


def median_snr(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Median of x sqrt(w) over each spectrum's valid pixels (NaN without one)."""
    with np.errstate(all="ignore"):
        return np.nanmedian(np.where(w > 0, x * np.sqrt(w), np.nan), axis=1)


def degrade(x: np.ndarray, w: np.ndarray, target_sn: float, rng: np.random.Generator,
            sn: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The same spectra at a lower S/N: noise added in proportion to the existing variance,
    so the noise keeps its shape with wavelength (sky lines, blue end). ``sn`` is each
    spectrum's S/N on the footing of ``target_sn`` (default its ``median_snr``); spectra
    already fainter are left as they are."""
    valid = w > 0
    sn = median_snr(x, w) if sn is None else sn
    factor = np.maximum(np.square(sn / target_sn), 1.0)[:, None]  # variance multiplier
    sigma_add = np.sqrt((factor - 1) / np.where(valid, w, np.inf))
    noisy = np.where(valid, x + sigma_add * rng.standard_normal(x.shape), 0.0)
    return noisy.astype(np.float32), np.where(valid, w / factor, 0.0).astype(np.float32)


Reference = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def calibrate(scatter: tuple[np.ndarray, np.ndarray], mixture: Mixture,
              rungs: list[Reference]) -> AnomalyModel:
    """An AnomalyModel from reference spectra of normal quasars at each rung of an S/N
    ladder: per rung (x, w, x_hat, mu, logvar), the same quasars degraded to that S/N. The
    scatter (a, b) should come from other spectra, so the scores are not calibrated on the
    spectra that set it. Rungs come out ordered by their median ``snr``."""
    a, b = scatter
    nodes, q_recon, q_density, q_combined = [], [], [], []
    for x, w, x_hat, mu, logvar in rungs:
        t = recon_statistic(x, w, x_hat, a, b)
        d = density_statistic(mu, logvar, mixture)
        qr, qd = quantiles(t), quantiles(d)
        nodes.append(float(np.nanmedian(snr(w, x_hat))))
        q_recon.append(qr)
        q_density.append(qd)
        q_combined.append(quantiles(fisher(fraction_below(t, qr), fraction_below(d, qd))))
    order = np.argsort(nodes)
    return AnomalyModel(a, b, mixture, np.asarray(nodes)[order],
                        *(np.asarray(q)[order] for q in (q_recon, q_density, q_combined)))
