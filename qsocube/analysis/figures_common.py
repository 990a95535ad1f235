"""Shared look of every figure: backend, colour maps, saving, binned statistics.

One colour map per meaning, used everywhere: column values (viridis), densities of spectra
(magma_r: white is empty), signed correlations (RdBu_r, -1..1 fixed), unsigned strengths
(Purples, 0..1 fixed), models (one colour
per latent size from a fixed list, so L = 9 has the same colour in every figure).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from qsocube.core.atomic import atomic_path  # noqa: E402
from qsocube.core.defaults import LATENT_SIZES  # noqa: E402

CMAP_VALUE = "viridis"
CMAP_DENSITY = "magma_r"
CMAP_SIGNED = "RdBu_r"
CMAP_STRENGTH = "Purples"  # unsigned association strength, 0..1 fixed
MODEL_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d")
SIZES = LATENT_SIZES  # one colour per release model
DPI = 90
FLUX_LABEL = r"flux [$10^{-17}$ erg s$^{-1}$ cm$^{-2}$ $\AA^{-1}$]"
WAVE_LABEL = r"observed wavelength [$\AA$]"
MSE_LABEL = "reconstruction MSE (normalised flux$^2$)"

plt.rcParams.update({
    "font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 8,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "figure.dpi": DPI, "savefig.dpi": DPI,
    "image.cmap": CMAP_VALUE, "axes.grid": False, "figure.constrained_layout.use": False,
})


@dataclass(frozen=True)
class FigureInfo:
    """One figure of the report: file (relative to report/), title, caption, section."""

    file: str
    title: str
    caption: str
    section: str


def model_colour(latent_size: int) -> str:
    if latent_size in SIZES:
        return MODEL_COLOURS[SIZES.index(latent_size)]
    return MODEL_COLOURS[(latent_size // 3) % len(MODEL_COLOURS)]


def save(fig: plt.Figure, folder: Path, name: str, close: bool = True) -> str:
    """Write ``folder/name`` atomically and return ``name`` (the report's relative link)."""
    with atomic_path(folder / name) as tmp:
        fig.savefig(tmp, format=Path(name).suffix.lstrip("."), dpi=DPI,
                    metadata={"Software": None})  # no version string: byte-stable reruns
    if close:
        plt.close(fig)
    return name


def robust_limits(values: np.ndarray, low: float = 0.5, high: float = 99.5
                  ) -> tuple[float, float]:
    """Axis limits that keep the bulk visible: percentiles, widened if degenerate."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [low, high])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.02 * (hi - lo)
    return float(lo - pad), float(hi + pad)


def bin_index(values: np.ndarray, limits: tuple[float, float], bins: int) -> np.ndarray:
    """Bin of each value on a regular grid over ``limits``; -1 outside or non-finite."""
    lo, hi = limits
    with np.errstate(invalid="ignore"):
        index = np.floor((values - lo) / (hi - lo) * bins)
    inside = np.isfinite(index) & (index >= 0) & (index < bins)
    return np.where(inside, index, -1).astype(np.int64)


def binned_mean(ix: np.ndarray, iy: np.ndarray, values: np.ndarray, bins: int,
                min_count: int = 1) -> np.ndarray:
    """(bins, bins) mean of ``values`` per cell (row = y), NaN where a cell has too few."""
    use = (ix >= 0) & (iy >= 0) & np.isfinite(values)
    cell = iy[use] * bins + ix[use]
    count = np.bincount(cell, minlength=bins * bins)
    total = np.bincount(cell, weights=values[use], minlength=bins * bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count >= min_count, total / count, np.nan)
    return mean.reshape(bins, bins)


def corner_bins(n: int) -> int:
    """Cells per axis of a corner panel: ~4 spectra per cell on average, 8..40."""
    return int(np.clip(np.sqrt(n) / 2, 8, 40))


def hexbin_density(ax: plt.Axes, x: np.ndarray, y: np.ndarray, n_points: int,
                   **kwargs: object) -> object:
    """Counts of spectra on hexagons (log colour), sized to the number of points."""
    gridsize = int(np.clip(np.sqrt(n_points) / 2, 10, 50))
    return ax.hexbin(x, y, gridsize=gridsize, mincnt=1, bins="log", cmap=CMAP_DENSITY,
                     linewidths=0.0, **kwargs)


def note_figure(ax: plt.Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9,
            color="0.3", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
