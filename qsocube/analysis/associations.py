"""How strongly each latent dimension is associated with each catalogue column (numpy only).

Two measures per (dimension, column), over the spectra where the column is measured:

* Spearman's rank correlation rho (Pearson correlation of average ranks), with a two-sided
  p-value from the t approximation; catches monotonic relations and their sign.
* Mutual information I (nats) from equal-frequency binning of both variables (a copula
  estimate, so invariant under monotonic rescaling), with the Miller-Madow bias correction
  and clipped at 0; catches non-monotonic relations too. It is also given as the
  information coefficient r_I = sqrt(1 - exp(-2 I)), which equals |rho| for a Gaussian
  pair, so both measures read on the same 0..1 scale.

All dimensions are handled at once per column: ranks via one argsort of an (n, d) array,
joint histograms via one bincount over d * B * B cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

MIN_SPECTRA = 10  # fewer measured spectra than this give NaN (reported, not guessed)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n down axis 0, ties sharing their average rank (as Spearman needs).

    Same result as scipy.stats.rankdata(method="average", axis=0) at a third of the cost:
    one argsort, then each run of equal values gets the mean of its first and last rank.
    """
    values = np.asarray(values)
    flat = values.ndim == 1
    a = values[:, None] if flat else values
    n = a.shape[0]
    order = np.argsort(a, axis=0, kind="stable")
    ordered = np.take_along_axis(a, order, axis=0)
    index = np.broadcast_to(np.arange(n)[:, None], a.shape)
    starts = np.ones(a.shape, bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    ends = np.ones(a.shape, bool)
    ends[:-1] = starts[1:]
    first = np.maximum.accumulate(np.where(starts, index, 0), axis=0)
    last = np.minimum.accumulate(np.where(ends, index, n)[::-1], axis=0)[::-1]
    ranks = np.empty(a.shape, np.float64)
    np.put_along_axis(ranks, order, 0.5 * (first + last) + 1.0, axis=0)
    return ranks[:, 0] if flat else ranks


def spearman(latent: np.ndarray, column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rho, p) of each column of ``latent`` (n, d) against ``column`` (n,), no NaN inside."""
    return spearman_from_ranks(average_ranks(latent), average_ranks(column))


def spearman_from_ranks(ranks_x: np.ndarray, ranks_y: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    n = len(ranks_y)
    dx = ranks_x - ranks_x.mean(axis=0)
    dy = ranks_y - ranks_y.mean()
    denom = np.sqrt((dx**2).sum(axis=0) * (dy**2).sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(denom > 0, (dx * dy[:, None]).sum(axis=0) / denom, np.nan)
        rho = np.clip(rho, -1.0, 1.0)
        t = rho * np.sqrt((n - 2) / np.maximum(1.0 - rho**2, 1e-300))
    p = 2.0 * special.stdtr(max(n - 2, 1), -np.abs(t))  # two-sided Student t tail
    return rho, np.where(np.isfinite(rho), p, np.nan)


def n_bins(n: int) -> int:
    """Equal-frequency bins per variable: ~n^(1/3), so cells hold ~n^(1/3) spectra each."""
    return int(np.clip(round(n ** (1 / 3)), 2, 32))


def quantile_bins(ranks: np.ndarray, bins: int) -> np.ndarray:
    """Bin index 0..bins-1 from average ranks (so ties share a bin), down axis 0."""
    return np.minimum(((ranks - 0.5) * bins / len(ranks)).astype(np.int64), bins - 1)


def _entropy(counts: np.ndarray, n: int) -> np.ndarray:
    """Miller-Madow entropy (nats) of count histograms along the last axis."""
    p = counts / n
    with np.errstate(divide="ignore", invalid="ignore"):
        plugin = -np.where(counts > 0, p * np.log(p), 0.0).sum(axis=-1)
    return plugin + ((counts > 0).sum(axis=-1) - 1) / (2.0 * n)


def mutual_information(latent: np.ndarray, column: np.ndarray, bins: int | None = None
                       ) -> np.ndarray:
    """I(latent[:, k]; column) in nats for every k, no NaN inside (see module docstring)."""
    return mi_from_ranks(average_ranks(latent), average_ranks(column), bins)


def mi_from_ranks(ranks_x: np.ndarray, ranks_y: np.ndarray, bins: int | None = None
                  ) -> np.ndarray:
    n, d = ranks_x.shape
    bins = bins or n_bins(n)
    bx = quantile_bins(ranks_x, bins)  # (n, d)
    by = quantile_bins(ranks_y, bins)  # (n,)
    cells = (np.arange(d)[None, :] * bins + bx) * bins + by[:, None]
    joint = np.bincount(cells.ravel(), minlength=d * bins * bins).reshape(d, bins * bins)
    hx = _entropy(joint.reshape(d, bins, bins).sum(axis=2), n)
    hy = _entropy(np.bincount(by, minlength=bins), n)
    return np.maximum(hx + hy - _entropy(joint, n), 0.0)


def information_coefficient(mi: np.ndarray) -> np.ndarray:
    """r_I = sqrt(1 - exp(-2 I)): |rho| of a Gaussian pair with the same information."""
    return np.sqrt(1.0 - np.exp(-2.0 * np.asarray(mi)))


@dataclass(frozen=True)
class Associations:
    """rho, p, mi (nats) and n: arrays (rows, columns); a row is (latent size, dimension)."""

    rows: list[tuple[int, int]]
    columns: list[str]
    n: np.ndarray  # (columns,) spectra used
    rho: np.ndarray
    p: np.ndarray
    mi: np.ndarray

    @property
    def r_info(self) -> np.ndarray:
        return information_coefficient(self.mi)

    def records(self) -> list[dict]:
        """Long format, one dict per (model, dimension, column): the CSV rows."""
        out = []
        r_info = self.r_info
        for i, (size, dim) in enumerate(self.rows):
            for j, column in enumerate(self.columns):
                out.append({"latent_size": size, "dimension": dim, "column": column,
                            "n_spectra": int(self.n[j]), "spearman_rho": self.rho[i, j],
                            "spearman_p": self.p[i, j], "mutual_info_nats": self.mi[i, j],
                            "info_coefficient": r_info[i, j]})
        return out

    def strongest(self, column: str, latent_size: int | None = None) -> tuple[int, int, float]:
        """(latent size, dimension, rho) of the row with the largest |rho| for ``column``."""
        j = self.columns.index(column)
        rows = [i for i, (size, _) in enumerate(self.rows)
                if latent_size is None or size == latent_size]
        strength = np.nan_to_num(np.abs(self.rho[rows, j]), nan=-1.0)
        best = rows[int(np.argmax(strength))]
        return (*self.rows[best], float(self.rho[best, j]))


def association_table(latents: dict[int, np.ndarray], columns: dict[str, np.ndarray]
                      ) -> Associations:
    """Every latent dimension of every model against every column.

    ``latents`` maps latent size to (n, L) means; ``columns`` maps name to (n,) floats with
    NaN where not measured. Spectra with a non-finite latent are left out too.
    """
    sizes = sorted(latents)
    stacked = np.concatenate([np.asarray(latents[s], np.float64) for s in sizes], axis=1)
    rows = [(s, k) for s in sizes for k in range(latents[s].shape[1])]
    finite = np.isfinite(stacked).all(axis=1)
    shape = (len(rows), len(columns))
    rho, p, mi = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    counts = np.zeros(len(columns), np.int64)
    all_ranks = average_ranks(stacked[finite])  # reused by every fully measured column
    for j, values in enumerate(columns.values()):  # a loop over ~30 columns, not spectra
        values = np.asarray(values, np.float64)
        use = finite & np.isfinite(values)
        counts[j] = use.sum()
        if counts[j] < MIN_SPECTRA or np.ptp(values[use]) == 0:
            continue
        ranks_x = all_ranks if counts[j] == finite.sum() else average_ranks(stacked[use])
        ranks_y = average_ranks(values[use])
        rho[:, j], p[:, j] = spearman_from_ranks(ranks_x, ranks_y)
        mi[:, j] = mi_from_ranks(ranks_x, ranks_y)
    return Associations(rows, list(columns), counts, rho, p, mi)
