"""Anomaly scores that know about noise (numpy only; shared by training and inference).

``anomaly_score`` of a spectrum is the fraction of normal quasars (the validation split)
that look more usual than it: 0.99 means more unusual than 99% of them, at any S/N. It
combines up to three parts, each itself such a fraction:

- ``recon_score``: how badly the model reconstructs the spectrum *given its noise*. The
  statistic is a standardised chi-square, t = (chi2 - n) / sqrt(2 n), where chi2 sums
  r^2 / (1/w + s^2) over the n valid pixels: the pixel's noise variance 1/w plus the
  model's own error s^2 = a(lambda)^2 + (b(lambda) x_hat)^2 (an intrinsic scatter per
  pixel, constant plus proportional to the reconstructed flux, learned on training
  spectra). A faint quasar's noise no longer reads as oddity, and at high S/N the model's
  own error no longer does either.
- ``density_score``: how unusual the encoder's code is among the training spectra's codes:
  minus the log density of a Gaussian mixture fitted to them, each component widened by
  the code's own posterior variance exp(logvar), so a noisy spectrum's uncertain code is
  not an outlier for being uncertain.
- ``redshift_score``: how unlikely the catalogue redshift is for a quasar with this code:
  minus the log of p(ln(1 + z) | code), the conditional of the same mixture fitted to the
  training codes joined with their ln(1 + z). A star or galaxy taken for a quasar, or a
  quasar with a misidentified line's redshift, has a code that says one redshift while
  the catalogue says another. NaN where the redshift is unknown.

The parts combine by Fisher's rule, -2 sum ln(1 - part), and that too is turned into a
fraction of the reference spectra (with a table of its own for spectra without a
redshift, whose score combines the other two parts).

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
    """A Gaussian mixture: weights (K,), means (K, D), covariances (K, D, D). D is the
    latent size L, or L + 1 with ln(1 + z) / redshift_scale as the last coordinate."""

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
    combined_quantiles: np.ndarray  # (M, N_QUANTILES) of Fisher's statistic of recon, density
    # The redshift part (None in models from before it): the mixture's last coordinate is
    # ln(1 + z) / redshift_scale, the training quasars' spread of ln(1 + z).
    redshift_scale: float | None = None
    redshift_quantiles: np.ndarray | None = None  # (M, N_QUANTILES) of -ln p(z | code)
    combined_redshift_quantiles: np.ndarray | None = None  # Fisher's of all three parts

    def to_json(self) -> str:
        body = {k: (None if v is None else np.asarray(v).tolist())
                for k, v in asdict(self).items() if k != "mixture"}
        body["mixture"] = {k: np.asarray(v).tolist() for k, v in asdict(self.mixture).items()}
        return json.dumps({"definition": DEFINITION, **body})

    @classmethod
    def from_json(cls, text: str) -> AnomalyModel:
        data = json.loads(text)
        mixture = Mixture(*(np.asarray(data["mixture"][k], np.float64)
                            for k in ("weights", "means", "covariances")))
        scale = data.get("redshift_scale")
        return cls(np.asarray(data["scatter_const"], np.float32),
                   np.asarray(data["scatter_frac"], np.float32), mixture,
                   *(np.asarray(data[k], np.float64) for k in
                     ("sn_nodes", "recon_quantiles", "density_quantiles",
                      "combined_quantiles")),
                   None if scale is None else float(scale),
                   *(None if data.get(k) is None else np.asarray(data[k], np.float64)
                     for k in ("redshift_quantiles", "combined_redshift_quantiles")))

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
        log_r = _component_log_density(codes, Mixture(weights, means, covs))
        log_norm = _logsumexp(log_r)
        resp = np.exp(log_r - log_norm[:, None])
        nk = resp.sum(0) + 1e-12
        weights = nk / n
        means = (resp.T @ codes) / nk[:, None]
        centred = codes[None, :, :] - means[:, None, :]  # (K, n, D)
        weighted = centred * resp.T[:, :, None]
        covs = (np.matmul(weighted.transpose(0, 2, 1), centred) / nk[:, None, None]
                + ridge * np.eye(dim))
        total = log_norm.sum()
        if total - previous < 1e-6 * n:
            break
        previous = total
    return Mixture(weights, means, covs)


def _logsumexp(a: np.ndarray) -> np.ndarray:
    top = a.max(axis=1)
    return top + np.log(np.exp(a - top[:, None]).sum(axis=1))


def _component_log_density(codes: np.ndarray, mixture: Mixture) -> np.ndarray:
    """(n, K) log of weight_k N(code; mean_k, cov_k), each component factorised once."""
    dim = codes.shape[1]
    diff = codes[:, None, :] - mixture.means[None, :, :]  # (n, K, D)
    chol = np.linalg.cholesky(mixture.covariances)  # (K, D, D)
    # one inverse per component, not a solve per (code, component) pair: EM 9x faster
    sol = np.einsum("kij,nkj->nki", np.linalg.inv(chol), diff)
    quad = np.square(sol).sum(-1)
    logdet = 2 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(1)[None, :]
    return np.log(mixture.weights)[None, :] - 0.5 * (quad + logdet + dim * np.log(2 * np.pi))


def _widened_log_densities(codes: np.ndarray, mixture: Mixture, variance: np.ndarray,
                           blocks: tuple[int, ...]) -> list[np.ndarray]:
    """For each d of ``blocks``, the (n, K) log of weight_k N(code[:d]; mean_k[:d], (cov_k
    + diag(variance))[:d, :d]): the marginals of the leading blocks come free with one
    Cholesky factorisation, whose leading blocks are theirs. Each (code, component) pair
    has its own covariance, factorised all at once by ``_cholesky_steps`` (a loop over the
    dimensions, not over the codes)."""
    dim = codes.shape[1]
    diff = codes[:, None, :] - mixture.means[None, :, :]  # (n, K, D)
    # laid out (D, D, n, K): every step below is one contiguous operation
    full = np.ascontiguousarray(np.broadcast_to(
        np.transpose(mixture.covariances, (1, 2, 0))[:, :, None, :],
        (dim, dim, len(codes), len(mixture.weights))))
    for j in range(dim):
        full[j, j] += variance[:, j, None]
    log_weights = np.log(mixture.weights)[None, :]
    steps = _cholesky_steps(full, np.moveaxis(diff, -1, 0))
    return [log_weights - 0.5 * (steps[d - 1][0] + steps[d - 1][1] + d * np.log(2 * np.pi))
            for d in blocks]


def _cholesky_steps(cov: np.ndarray, diff: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """For covariances (D, D, ...) and vectors (D, ...): after each dimension d, the leading
    block's diff^T cov^-1 diff and log det cov, by a Cholesky factorisation and forward
    substitution vectorised over the trailing axes (numpy's batched linalg loops over tiny
    matrices one by one)."""
    dim = cov.shape[0]
    chol = np.zeros_like(cov)
    y = np.zeros_like(diff)
    quad, logdet, steps = 0.0, 0.0, []
    for j in range(dim):
        row = chol[j, :j]  # (j, ...)
        pivot = np.sqrt(cov[j, j] - np.square(row).sum(0))
        chol[j, j] = pivot
        chol[j + 1:, j] = (cov[j + 1:, j] - (chol[j + 1:, :j] * row[None]).sum(1)) / pivot
        y[j] = (diff[j] - (row * y[:j]).sum(0)) / pivot
        quad, logdet = quad + np.square(y[j]), logdet + 2 * np.log(pivot)
        steps.append((quad, logdet))
    return steps


def density_statistic(mu: np.ndarray, logvar: np.ndarray, mixture: Mixture) -> np.ndarray:
    """Minus the log density of each code under the mixture widened by its own variance
    (the mixture's marginal over the code, if it also holds the redshift)."""
    return latent_statistics(mu, logvar, None, mixture, None)[0]


def redshift_coordinate(z: np.ndarray, scale: float) -> np.ndarray:
    """The mixture's redshift coordinate, ln(1 + z) / scale (NaN for an unknown or
    unphysical redshift)."""
    z = np.asarray(z, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.isfinite(z) & (z > -1), np.log1p(np.where(z > -1, z, 0)) / scale,
                        np.nan)


def latent_statistics(mu: np.ndarray, logvar: np.ndarray, z: np.ndarray | None,
                      mixture: Mixture, redshift_scale: float | None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(density, redshift) statistics of each code, in one factorisation: minus the log
    density of the code, and minus the log conditional density of its redshift given the
    code, p(code, z) / p(code) (NaN where z is unknown or the mixture has no redshift)."""
    mu = np.asarray(mu, np.float64)
    n, size = mu.shape
    variance = np.exp(np.clip(np.asarray(logvar, np.float64), -30, 10))
    with_z = mixture.means.shape[1] == size + 1  # its code marginal ignores the coordinate
    coordinate = (np.full(n, np.nan) if z is None or redshift_scale is None
                  else redshift_coordinate(z, redshift_scale))
    if with_z:  # the catalogue's redshift error (~0.001) is far below the mixture's ridge
        codes = np.column_stack([mu, np.nan_to_num(coordinate)])
        variance = np.column_stack([variance, np.zeros(n)])
    else:
        codes = mu
    logs = _widened_log_densities(codes, mixture, variance, (size, size + 1) if with_z
                                  else (size,))
    density = -_logsumexp(logs[0])
    redshift = (-_logsumexp(logs[1]) - density) if with_z else np.full(n, np.nan)
    known = np.isfinite(mu).all(1)
    return (np.where(known, density, np.nan),
            np.where(known & np.isfinite(coordinate), redshift, np.nan))


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


def fisher(*parts: np.ndarray) -> np.ndarray:
    """Fisher's combination of scores (each the fraction of references below)."""
    return -2 * sum(np.log(np.clip(1 - part, EPS, 1)) for part in parts)


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
    redshift: np.ndarray  # NaN where the redshift is unknown
    combined: np.ndarray


def score(model: AnomalyModel, x: np.ndarray, w: np.ndarray, x_hat: np.ndarray,
          mu: np.ndarray, logvar: np.ndarray, z: np.ndarray | None = None) -> Scores:
    """The calibrated scores of each spectrum (NaN where it has no valid pixel). ``z`` is
    its catalogue redshift (NaN or None where unknown: the score then combines the other
    two parts)."""
    t, sn = _recon_and_snr(x, w, x_hat, model.scatter_const, model.scatter_frac)
    recon = ladder_fraction(t, sn, model.sn_nodes, model.recon_quantiles)
    d, r = latent_statistics(mu, logvar, z, model.mixture, model.redshift_scale)
    density = ladder_fraction(d, sn, model.sn_nodes, model.density_quantiles)
    both = np.isfinite(recon) & np.isfinite(density)
    combined = ladder_fraction(fisher(recon, density), sn, model.sn_nodes,
                               model.combined_quantiles)
    redshift = np.full(len(recon), np.nan)
    if model.redshift_quantiles is not None and np.isfinite(r).any():
        redshift = ladder_fraction(r, sn, model.sn_nodes, model.redshift_quantiles)
        all_three = ladder_fraction(fisher(recon, density, redshift), sn, model.sn_nodes,
                                    model.combined_redshift_quantiles)
        combined = np.where(np.isfinite(redshift), all_three, combined)
    combined = np.where(both, combined, np.nan)
    return Scores(*(s.astype(np.float32) for s in (recon, density, redshift, combined)))


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


Reference = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def redshift_scale(z: np.ndarray) -> float:
    """The spread of ln(1 + z) among the training quasars: the redshift coordinate's unit,
    so that it weighs in the mixture like a latent dimension."""
    return float(np.nanstd(np.log1p(np.asarray(z, np.float64))))


def fit_latent_mixture(mu: np.ndarray, z: np.ndarray | None, k: int, seed: int = 0
                       ) -> tuple[Mixture, float | None]:
    """The mixture of the training quasars' codes joined with their redshift coordinate
    (those with a known redshift), and its scale; without redshifts, of the codes alone."""
    known = np.zeros(len(mu), bool) if z is None else np.isfinite(np.asarray(z, float))
    if known.sum() < 2:
        return fit_mixture(mu, k=k, seed=seed), None
    scale = redshift_scale(np.asarray(z)[known])
    joined = np.column_stack([mu[known], redshift_coordinate(np.asarray(z)[known], scale)])
    return fit_mixture(joined, k=k, seed=seed), scale


def calibrate(scatter: tuple[np.ndarray, np.ndarray], mixture: Mixture,
              rungs: list[Reference], scale: float | None = None) -> AnomalyModel:
    """An AnomalyModel from reference spectra of normal quasars at each rung of an S/N
    ladder: per rung (x, w, x_hat, mu, logvar, z), the same quasars degraded to that S/N
    (z their catalogue redshifts, or None). ``scale`` is the mixture's redshift unit if it
    holds one (``fit_latent_mixture``). The scatter (a, b) should come from other
    spectra, so the scores are not calibrated on the spectra that set it. Rungs come out
    ordered by their median ``snr``."""
    a, b = scatter
    nodes: list[float] = []
    tables: dict[str, list[np.ndarray]] = {k: [] for k in (
        "recon", "density", "combined", "redshift", "combined_redshift")}
    for x, w, x_hat, mu, logvar, z in rungs:
        t = recon_statistic(x, w, x_hat, a, b)
        d, r = latent_statistics(mu, logvar, z, mixture, scale)
        nodes.append(float(np.nanmedian(snr(w, x_hat))))
        parts = []
        for name, statistic in (("recon", t), ("density", d), ("redshift", r)):
            tables[name].append(quantiles(statistic))
            parts.append(fraction_below(statistic, tables[name][-1]))
        tables["combined"].append(quantiles(fisher(*parts[:2])))
        tables["combined_redshift"].append(quantiles(fisher(*parts)))
    order = np.argsort(nodes)
    ordered = {k: np.asarray(v)[order] for k, v in tables.items()}
    has_redshift = scale is not None and bool(np.isfinite(ordered["redshift"]).all())
    return AnomalyModel(a, b, mixture, np.asarray(nodes)[order], ordered["recon"],
                        ordered["density"], ordered["combined"],
                        scale if has_redshift else None,
                        ordered["redshift"] if has_redshift else None,
                        ordered["combined_redshift"] if has_redshift else None)
