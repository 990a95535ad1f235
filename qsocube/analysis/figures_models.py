"""Model-level figures: VAE vs PCA reconstruction error, training curves, the lambda
searches, and the association heatmap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import pyplot as plt

from qsocube.analysis.associations import Associations
from qsocube.analysis.figures_common import (
    CMAP_SIGNED,
    CMAP_STRENGTH,
    MSE_LABEL,
    FigureInfo,
    model_colour,
    note_figure,
    save,
)
from qsocube.analysis.io import Model


def mse_table(models: dict[int, Model], split: np.ndarray) -> tuple[list[dict], str]:
    """Per latent size: VAE and PCA MSE on the test spectra (all spectra if none are test)."""
    test = split == 2
    subset = "test" if test.any() else "all (no test spectra)"
    rows = []
    for size, model in sorted(models.items()):
        row = {"latent_size": size}
        for key, var in (("vae", "recon_mse"), ("pca", "pca_mse")):
            values = np.asarray(model.data[var].values, np.float64)[test if test.any() else
                                                                    slice(None)]
            values = values[np.isfinite(values)]
            q = np.percentile(values, [16, 50, 84]) if values.size else [np.nan] * 3
            row.update({f"{key}_n": int(values.size), f"{key}_p16": q[0],
                        f"{key}_median": q[1], f"{key}_p84": q[2],
                        f"{key}_mean": float(values.mean()) if values.size else np.nan})
        rows.append(row)
    return rows, subset


def mse_vs_latent(rows: list[dict], subset: str, folder: Path) -> FigureInfo:
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.13, top=0.92)
    sizes = np.array([r["latent_size"] for r in rows], float)
    for key, label, shift, colour in (("vae", "InfoVAE", -0.25, "#1f77b4"),
                                      ("pca", "PCA, same size", 0.25, "#ff7f0e")):
        med = np.array([r[f"{key}_median"] for r in rows])
        err = np.array([[r[f"{key}_median"] - r[f"{key}_p16"],
                         r[f"{key}_p84"] - r[f"{key}_median"]] for r in rows])
        ax.errorbar(sizes + shift, med, yerr=err.T, fmt="o-", color=colour, label=label,
                    capsize=3, markersize=4)
    ax.set_yscale("log")
    ax.set_xticks(sizes)
    ax.set_xlabel("latent size L (number of latent dimensions or PCA components)")
    ax.set_ylabel(MSE_LABEL)
    ax.legend()
    ax.set_title(f"Reconstruction error against latent size ({subset} spectra)")
    name = save(fig, folder, "mse_vs_latent.png")
    return FigureInfo(name, "Reconstruction MSE against latent size",
                      f"Median per-spectrum reconstruction MSE over valid pixels of the {subset} "
                      "spectra for the InfoVAE (blue) and the PCA baseline with as many "
                      "components (orange), offset sideways for legibility; bars span the "
                      "16th-84th percentiles. Log scale.", "models")


def training_curves(models: dict[int, Model], folder: Path) -> FigureInfo | None:
    histories = {s: m.history for s, m in models.items() if m.history is not None
                 and m.history.sizes.get("epoch", 0)}
    if not histories:
        return None
    # the median spectrum's MSE where the trainer recorded it: the mean is dominated by a
    # few spectra with near-zero median flux, so train and validation means do not compare
    median = all("train_mse_median" in h and "val_mse_median" in h for h in histories.values())
    mse_key = "mse_median" if median else "mse"
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.92, wspace=0.25)
    for size, history in sorted(histories.items()):
        epoch = history["epoch"].values
        for ax, key in zip(axes, ("loss", mse_key), strict=True):
            for part, style in (("train", "-"), ("val", "--")):
                if f"{part}_{key}" in history:
                    ax.plot(epoch, history[f"{part}_{key}"].values, style,
                            color=model_colour(size), lw=1.2,
                            label=f"L = {size}" if part == "train" else None)
    for ax, what in zip(axes, ("loss per spectrum", MSE_LABEL), strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.set_yscale("log")
    axes[0].set_title("Loss (solid: training, dashed: validation)")
    which = "Median" if median else "Mean"
    axes[1].set_title(f"{which} reconstruction MSE (solid: training, dashed: validation)",
                      fontsize="medium")
    axes[0].legend(ncols=2)
    name = save(fig, folder, "training_curves.png")
    mse_text = ("the median spectrum's reconstruction MSE (the mean is dominated by a few "
                "spectra with near-zero median flux)" if median else
                "the mean reconstruction MSE")
    return FigureInfo(name, "Training curves of the chosen models",
                      f"Training (solid) and validation (dashed) loss and {mse_text} per "
                      "epoch of each chosen model, one colour per latent size. Training "
                      "values are gathered during the epoch with dropout on. Log scale.",
                      "models")


def search_results(models: dict[int, Model], folder: Path) -> FigureInfo | None:
    searches = {s: m for s, m in models.items() if m.search is not None
                and m.search.sizes.get("call", 0)}
    if not searches:
        return None
    k = len(searches)
    width = 2.6 * k + 0.6
    fig, axes = plt.subplots(1, k, figsize=(width, 3.0), squeeze=False)
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.1 / width, bottom=0.16, top=0.9,
                        wspace=0.45)
    for ax, (size, model) in zip(axes[0], sorted(searches.items()), strict=True):
        search = model.search
        ax.plot(search["lambda"].values, search["objective"].values, "o",
                color=model_colour(size), markersize=4)
        chosen = model.attrs.get("lambda")
        if chosen is not None and np.isfinite(float(chosen)):
            ax.axvline(float(chosen), color="0.3", lw=0.8, ls=":", label="chosen")
            ax.legend(loc="best")
        ax.set_xscale("log")
        ax.set_xlabel("MMD weight $\\lambda$")
        ax.set_title(f"L = {size}: {search.sizes['call']} calls")
    axes[0, 0].set_ylabel("validation objective")
    name = save(fig, folder, "search_lambda.png")
    definition = next((str(m.attrs.get("objective_definition")) for m in searches.values()
                       if m.attrs.get("objective_definition")), "the validation objective")
    return FigureInfo(name, "Lambda searches",
                      "Each call of each model's search: the MMD weight lambda (log scale) "
                      f"against the objective ({definition}); the dotted line marks the lambda "
                      "of the chosen model.", "models")


def association_heatmap(table: Associations, folder: Path) -> FigureInfo:
    rho, r_info = table.rho, table.r_info
    n_rows, n_cols = rho.shape
    fig, axes = plt.subplots(1, 2, figsize=(2.0 + 0.55 * n_cols, 1.6 + 0.16 * n_rows),
                             layout="constrained", sharey=True)
    labels = [f"L{s:02d} z{d}" for s, d in table.rows]
    panels = ((rho, CMAP_SIGNED, -1, 1, "Spearman rank correlation $\\rho$"),
              (r_info, CMAP_STRENGTH, 0, 1, "information coefficient $r_I$ (from MI)"))
    for ax, (values, cmap, vmin, vmax, title) in zip(axes, panels, strict=True):
        art = ax.imshow(values, cmap=plt.get_cmap(cmap).with_extremes(bad="0.8"), vmin=vmin,
                        vmax=vmax, aspect="auto",
                        interpolation="nearest")
        ax.set_xticks(range(n_cols), table.columns, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(n_rows), labels, fontsize=6)
        for edge in np.flatnonzero(np.diff([s for s, _ in table.rows])):
            ax.axhline(edge + 0.5, color="k", lw=0.6)
        ax.set_title(title)
        fig.colorbar(art, ax=ax, shrink=0.6)
    if not n_rows:
        note_figure(axes[0], "no models")
    name = save(fig, folder, "associations.png")
    return FigureInfo(name, "Latent dimensions against catalogue columns",
                      "Left: Spearman's rho of each latent dimension (rows, grouped by model "
                      "size L) with each column (grey: fewer than 10 measured spectra). Right: "
                      "the mutual information as r_I = sqrt(1 - exp(-2 I)), which also catches "
                      "non-monotonic relations. Columns prefixed 'truth.' come from the "
                      "simulator's truth table.", "associations")
