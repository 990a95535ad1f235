"""Spectra with their reconstructions: six samples across the range of reconstruction error,
and the outlier gallery (highest anomaly scores). Only the drawn rows are read from disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import pyplot as plt

from qsocube.analysis.figures_common import FLUX_LABEL, WAVE_LABEL, FigureInfo, save
from qsocube.analysis.io import Release
from qsocube.analysis.reconstruct import reconstruct

SAMPLE_QUANTILES = (0.02, 0.2, 0.4, 0.6, 0.8, 0.98)


def pick_across_range(mse: np.ndarray, candidates: np.ndarray,
                      quantiles: tuple[float, ...] = SAMPLE_QUANTILES) -> np.ndarray:
    """Rows at the given quantiles of ``mse`` among ``candidates`` (deterministic: ties are
    broken by row number, so the same release always gives the same spectra)."""
    rows = np.flatnonzero(candidates & np.isfinite(mse))
    if not rows.size:
        return rows
    rows = rows[np.lexsort((rows, mse[rows]))]
    positions = np.round(np.asarray(quantiles) * (rows.size - 1)).astype(int)
    return rows[np.unique(positions)]


def top_anomalies(score: np.ndarray, mse: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` rows with the highest anomaly score (then highest MSE, then lowest row)."""
    rows = np.flatnonzero(np.isfinite(score))
    order = np.lexsort((rows, -np.nan_to_num(mse[rows], nan=-np.inf), -score[rows]))
    return rows[order[:k]]


def _panel(ax: plt.Axes, wave: np.ndarray, flux: np.ndarray, mask: np.ndarray,
           model: np.ndarray | None, colour: str) -> None:
    valid = mask == 0
    ax.fill_between(wave, 0, 1, where=~valid, transform=ax.get_xaxis_transform(),
                    color="0.88", lw=0, step="mid", label="masked")
    ax.plot(wave, np.where(valid, flux, np.nan), color="0.25", lw=0.6, label="data")
    if model is not None:
        ax.plot(wave, model, color=colour, lw=1.0, label="reconstruction")
    shown = flux[valid]
    if shown.size:
        lo, hi = np.percentile(shown, [0.5, 99.5])
        span = max(hi - lo, 1e-3 * max(abs(hi), 1.0))
        ax.set_ylim(lo - 0.15 * span, hi + 0.25 * span)
    ax.set_xlim(wave[0], wave[-1])


def _spectra_figure(release: Release, latent_size: int, rows: np.ndarray, titles: list[str],
                    folder: Path, name: str, ncols: int) -> tuple[str, str]:
    pixels = release.pixels(rows)
    model, note = reconstruct(release, latent_size, rows)
    nrows = int(np.ceil(len(rows) / ncols))
    height = 2.0 * nrows + 0.7
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, height), squeeze=False)
    fig.subplots_adjust(left=0.07, right=0.975, bottom=0.5 / height, top=1 - 0.35 / height,
                        hspace=0.45 * 2.0 / (2.0 - 0.45), wspace=0.14)
    wave = release.wavelength
    for k, ax in enumerate(axes.ravel()):
        if k >= len(rows):
            ax.set_visible(False)
            continue
        _panel(ax, wave, pixels["flux"][k], pixels["mask"][k],
               None if model is None else model[k], "#d62728")
        ax.set_title(titles[k], loc="left", fontsize=8)
        ax.set_ylabel(FLUX_LABEL if k % ncols == 0 else "", fontsize=7)
        if k // ncols == nrows - 1 or k + ncols >= len(rows):
            ax.set_xlabel(WAVE_LABEL)
    axes[0, 0].legend(loc="upper right", ncols=3, fontsize=7)
    save(fig, folder, name)
    return name, ("" if model is not None else f" No reconstruction drawn: {note}.")


def _identity(release: Release, row: int) -> tuple[str, float]:
    spec_id = str(release.spectra["spec_id"].values[row])
    z = float(release.catalog["Z"].values[row]) if "Z" in release.catalog else np.nan
    return spec_id, z


def samples(release: Release, latent_size: int, folder: Path) -> FigureInfo | None:
    model = release.models[latent_size]
    mse = np.asarray(model.data["recon_mse"].values, np.float64)
    split = np.asarray(release.spectra["split"].values)
    test = split == 2
    candidates = test if np.isfinite(mse[test]).sum() >= len(SAMPLE_QUANTILES) else \
        np.ones_like(test)
    rows = pick_across_range(mse, candidates)
    if not rows.size:
        return None
    ranked = np.sort(mse[candidates & np.isfinite(mse)])
    titles = []
    for row in rows:
        spec_id, z = _identity(release, row)
        pct = 100.0 * np.searchsorted(ranked, mse[row]) / max(ranked.size - 1, 1)
        titles.append(f"{spec_id}  z = {z:.3f}  MSE = {mse[row]:.3g} "
                      f"(MSE percentile {pct:.0f})")
    name, missing = _spectra_figure(release, latent_size, rows, titles, folder,
                                    "samples.png", ncols=2)
    which = "test" if candidates is test else "all"
    levels = ", ".join(f"{q:.0%}" for q in SAMPLE_QUANTILES)
    return FigureInfo(name, "Sample spectra and reconstructions",
                      f"Six {which} spectra at the {levels} quantiles of the "
                      f"{latent_size}-dimensional VAE's reconstruction MSE "
                      "(chosen by rank, so reruns pick the same spectra): data (dark grey), "
                      "decoded latent mean in flux units (red), masked pixels shaded."
                      + missing, "spectra")


def outliers(release: Release, latent_size: int, folder: Path, k: int = 8
             ) -> tuple[FigureInfo | None, list[dict]]:
    model = release.models[latent_size]
    score = np.asarray(model.data["anomaly_score"].values, np.float64)
    mse = np.asarray(model.data["recon_mse"].values, np.float64)
    chi2 = np.asarray(model.data["recon_chi2"].values, np.float64)
    parts = {name: (np.asarray(model.data[name].values, np.float64) if name in model.data
                    else np.full(len(score), np.nan)) for name in ("recon_score", "density_score",
                                                                "redshift_score")}
    rows = top_anomalies(score, mse, k)
    if not rows.size:
        return None, []
    names = release.catalog["SDSS_NAME"].values if "SDSS_NAME" in release.catalog else None
    table, titles = [], []
    for rank, row in enumerate(rows, start=1):
        spec_id, z = _identity(release, row)
        sdss = str(names[row]) if names is not None else ""
        table.append({"rank": rank, "spectrum": int(row), "spec_id": spec_id,
                      "SDSS_NAME": sdss, "Z": z, "anomaly_score": score[row],
                      "recon_score": parts["recon_score"][row],
                      "density_score": parts["density_score"][row],
                      "redshift_score": parts["redshift_score"][row],
                      "recon_mse": mse[row], "recon_chi2": chi2[row]})
        titles.append(f"#{rank} {spec_id} {sdss}  z = {z:.3f}  score = {score[row]:.3f}  "
                      f"MSE = {mse[row]:.3g}")
    name, missing = _spectra_figure(release, latent_size, rows, titles, folder,
                                    "outliers.png", ncols=2)
    return FigureInfo(name, "Outlier gallery",
                      f"The {len(rows)} spectra with the highest anomaly score of the "
                      f"{latent_size}-dimensional VAE (the fraction of normal quasars more "
                      "usual than each; its parts in the table), with the reconstruction (red) and "
                      "masked pixels shaded; identifiers in each title and in the table."
                      + missing, "outliers"), table
