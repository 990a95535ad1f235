"""Figures per catalogue column: histogram, density against reconstruction MSE, and the
latent corner plot coloured by the column; plus the corner plot of five catalogue columns.

Corner plots show binned means (colour) or binned counts (density) instead of scatter, so
20,000 spectra do not overplot. The latent corner figure is built once per model and only
its images are refilled per column: building 81 axes costs more than drawing them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.ticker import MaxNLocator

from qsocube.analysis.columns import Column
from qsocube.analysis.figures_common import (
    CMAP_DENSITY,
    CMAP_VALUE,
    MSE_LABEL,
    FigureInfo,
    bin_index,
    binned_mean,
    corner_bins,
    hexbin_density,
    robust_limits,
    save,
)


def _edge_ticks(ax: plt.Axes, bottom: bool, left: bool) -> None:
    """Ticks only on the outer panels of a corner plot: inner ticks carry no extra
    information and cost most of the drawing time."""
    ax.tick_params(labelsize=6, length=2)
    if bottom:
        ax.xaxis.set_major_locator(MaxNLocator(3, prune="both"))
    else:
        ax.set_xticks([])
    if left:
        ax.yaxis.set_major_locator(MaxNLocator(3, prune="both"))
    else:
        ax.set_yticks([])


def histogram(column: Column, folder: Path) -> FigureInfo | None:
    if not column.n_measured:
        return None
    values = column.values[column.measured]
    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    fig.subplots_adjust(left=0.15, right=0.96, bottom=0.16, top=0.9)
    distinct = np.unique(values).size
    bins = min(distinct, 60) if distinct < 60 else "auto"
    ax.hist(values, bins=bins, color="#4c72b0", edgecolor="none")
    ax.set_xlabel(column.label)
    ax.set_ylabel("number of spectra")
    ax.set_title(f"{column.name}: {column.n_measured:,} measured")
    name = save(fig, folder, f"hist_{column.name}.png")
    return FigureInfo(name, f"Distribution of {column.name}",
                      f"Histogram of {column.name} ({column.long_name}). "
                      + column.exclusion_text(), "columns")


def density_vs_mse(column: Column, mse: np.ndarray, latent_size: int, folder: Path
                   ) -> FigureInfo | None:
    with np.errstate(divide="ignore", invalid="ignore"):
        log_mse = np.log10(mse)
    use = column.measured & np.isfinite(log_mse)
    if not use.any():
        return None
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.15, top=0.9)
    x, y = column.values[use], log_mse[use]
    extent = (*robust_limits(x, 0, 100), *robust_limits(y, 0, 100))
    art = hexbin_density(ax, x, y, int(use.sum()), extent=extent)
    fig.colorbar(art, ax=ax, label="spectra per cell")
    ax.set_xlabel(column.label)
    ax.set_ylabel(f"log$_{{10}}$ {MSE_LABEL}")
    ax.set_title(f"{column.name} vs reconstruction error, L = {latent_size}")
    name = save(fig, folder, f"mse_{column.name}.png")
    return FigureInfo(name, f"{column.name} against reconstruction MSE",
                      f"Number of spectra per hexagonal cell (log colour scale) of {column.name} "
                      f"against the {latent_size}-dimensional VAE's per-spectrum reconstruction "
                      f"MSE (all splits, {int(use.sum()):,} spectra). "
                      + column.exclusion_text(), "columns")


class LatentCorner:
    """Every pair of latent dimensions of one model, cells coloured by a column's mean."""

    def __init__(self, latent: np.ndarray, latent_size: int) -> None:
        self.latent_size = latent_size
        self.n, dims = latent.shape
        self.bins = corner_bins(self.n)
        limits = [robust_limits(latent[:, k]) for k in range(dims)]
        self.index = [bin_index(latent[:, k], limits[k], self.bins) for k in range(dims)]
        size = min(1.15 * dims + 1.5, 14.0)
        self.fig, axes = plt.subplots(dims, dims, figsize=(size, size), squeeze=False)
        self.fig.subplots_adjust(left=0.07, right=0.88, bottom=0.07, top=0.93, wspace=0.05,
                                 hspace=0.05)
        self.images = {}
        for i in range(dims):
            for j in range(dims):
                ax = axes[i, j]
                if j > i:
                    ax.set_visible(False)
                    continue
                if i == j:
                    ax.hist(latent[:, i], bins=self.bins, range=limits[i], color="0.55")
                else:
                    self.images[i, j] = ax.imshow(
                        np.full((self.bins, self.bins), np.nan), origin="lower", aspect="auto",
                        extent=(*limits[j], *limits[i]), cmap=CMAP_VALUE,
                        interpolation="nearest")
                    ax.set_ylim(limits[i])
                ax.set_xlim(limits[j])
                _edge_ticks(ax, bottom=i == dims - 1, left=j == 0 and i > 0)
                if i == dims - 1:
                    ax.set_xlabel(f"z$_{{{j}}}$")
                if j == 0 and i > 0:
                    ax.set_ylabel(f"z$_{{{i}}}$")
        cax = self.fig.add_axes((0.90, 0.35, 0.02, 0.5))
        first = next(iter(self.images.values())) if self.images else None
        self.colorbar = self.fig.colorbar(first, cax=cax) if first is not None else None

    def draw(self, column: Column, folder: Path) -> FigureInfo | None:
        if not column.n_measured or not self.images:
            return None
        values = np.where(column.measured, column.values, np.nan)
        vmin, vmax = robust_limits(values, 2, 98)
        for (i, j), image in self.images.items():
            image.set_data(binned_mean(self.index[j], self.index[i], values, self.bins))
            image.set_clim(vmin, vmax)
        self.colorbar.set_label(f"mean {column.label} per cell")
        self.fig.suptitle(f"Latent means of the {self.latent_size}-dimensional VAE, "
                          f"coloured by {column.name}")
        name = save(self.fig, folder, f"corner_{column.name}.png", close=False)
        return FigureInfo(name, f"Latent space coloured by {column.name}",
                          f"Every pair of latent dimensions (z_i = encoder mean) of the "
                          f"{self.latent_size}-dimensional model on a {self.bins}x{self.bins} "
                          f"grid; colour is the mean {column.name} of the spectra in a cell "
                          f"(colour range: 2nd-98th percentile; empty cells white). Diagonal: "
                          f"histogram of each dimension over all {self.n:,} spectra. "
                          + column.exclusion_text(), "columns")

    def close(self) -> None:
        plt.close(self.fig)


def catalog_corner(columns: list[Column], folder: Path) -> FigureInfo | None:
    """Pairwise densities of a few catalogue columns (spectra measured in both)."""
    columns = [c for c in columns if c.n_measured]
    if len(columns) < 2:
        return None
    k = len(columns)
    fig, axes = plt.subplots(k, k, figsize=(1.9 * k + 1, 1.9 * k + 0.6), squeeze=False)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.09, top=0.93, wspace=0.08, hspace=0.08)
    limits = [robust_limits(c.values) for c in columns]
    bins = corner_bins(max(c.n_measured for c in columns))
    for i, cy in enumerate(columns):
        for j, cx in enumerate(columns):
            ax = axes[i, j]
            if j > i:
                ax.set_visible(False)
                continue
            if i == j:
                ax.hist(cx.values[cx.measured], bins=bins, range=limits[j], color="0.55")
            else:
                both = cx.measured & cy.measured
                counts, _, _ = np.histogram2d(cy.values[both], cx.values[both], bins=bins,
                                              range=(limits[i], limits[j]))
                ax.imshow(np.where(counts > 0, counts, np.nan), origin="lower", aspect="auto",
                          extent=(*limits[j], *limits[i]), cmap=CMAP_DENSITY,
                          interpolation="nearest")
            ax.set_xlim(limits[j])
            _edge_ticks(ax, bottom=i == k - 1, left=j == 0 and i > 0)
            ax.set_xlabel(cx.label if i == k - 1 else "")
            ax.set_ylabel(cy.label if j == 0 and i > 0 else "")
    fig.suptitle("Catalogue columns against each other (spectra per cell)")
    name = save(fig, folder, "corner_catalog.png")
    excluded = "; ".join(f"{c.name}: {c.n_missing:,} not measured" for c in columns
                         if c.n_missing)
    return FigureInfo(name, "Catalogue corner plot",
                      "Pairs of " + ", ".join(c.name for c in columns) + " as the number of "
                      f"spectra per cell of a {bins}x{bins} grid (darker = more; white = none), "
                      "each panel using the spectra measured in both columns; diagonal: "
                      "histograms. " + (f"Excluded: {excluded}." if excluded else ""), "catalog")
