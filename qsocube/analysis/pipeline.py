"""The whole analysis of one release: figures, association table, report, catalogue.

Reads only the release (cube through qsocube.analysis.io, decoders through onnxruntime) and writes
only RELEASE/report/ and RELEASE/catalog/, every file atomically, so a rerun after an
interruption simply rewrites them.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from qsocube.analysis import figures_anomaly as fa
from qsocube.analysis import figures_columns as fc
from qsocube.analysis import figures_models as fm
from qsocube.analysis import figures_spectra as fs
from qsocube.analysis.associations import association_table
from qsocube.analysis.columns import CORNER_COLUMNS, catalog_columns, truth_columns
from qsocube.analysis.figures_common import FigureInfo
from qsocube.analysis.io import Release, open_release
from qsocube.analysis.report import (
    Html,
    association_section,
    esc,
    figure,
    simulation_section,
    table,
    write_associations_csv,
    write_report,
)
from qsocube.analysis.vac import vac_columns, write_vac
from qsocube.core import layout
from qsocube.core.cube import SPLIT_NAMES, file_sha256
from qsocube.core.errors import Rejection, UsageError
from qsocube.core.layout import VAC_CSV, VAC_FITS


def rejection_kinds(codes: np.ndarray | None, reasons: list[str]) -> list[tuple[str, int]]:
    """(kind, count), most common first: by rejection code (``Rejection`` names), or by the
    reason's text in a cube without codes (written before they were)."""
    kinds = [Rejection(int(c)).name for c in codes] if codes is not None else reasons
    return Counter(kinds).most_common()


def release_summary(release: Release, cube_sha256: str) -> dict:
    split = np.asarray(release.spectra["split"].values)
    grid = release.grid
    grid_sha = str(release.attrs.get("grid_sha256", ""))[:12]
    grid_text = (f"{grid.get('n_pix')} log-spaced pixels, {grid.get('wave_min')}-"
                 f"{grid.get('wave_max')} Angstrom (sha256 {grid_sha}...)" if grid else "unknown")
    rejected = release.rejected
    reasons = [str(r) for r in rejected["reason"].values] if "reason" in rejected else []
    files = [str(f) for f in rejected["file"].values] if "file" in rejected else []
    codes = rejected["reason_code"].values if "reason_code" in rejected else None
    get = release.attrs.get
    return {"product_version": get("product_version", "?"), "source": get("source", "?"),
            "created": get("created", "?"), "n_spectra": release.n_spectra,
            "cube": f"{release.cube_path.name} (sha256 {cube_sha256[:16]}...)",
            "split_counts": [int((split == k).sum()) for k in range(len(SPLIT_NAMES))],
            "rejected_reasons": reasons, "rejected_files": files,
            "rejected_kinds": rejection_kinds(codes, reasons), "grid_text": grid_text,
            "normalisation": get("normalisation", "?"),
            "resampling": get("resampling_method", "?"),
            "latent_sizes": sorted(release.models),
            "software_version": get("software_version", "?"), "git_commit": get("git_commit", "?")}


def _models_section(release: Release, figs: list[FigureInfo]) -> str:
    rows = []
    for size, model in sorted(release.models.items()):
        search, history = model.search, model.history
        calls = int(search.sizes.get("call", 0)) if search is not None else 0
        best = float(np.nanmin(search["objective"].values)) if calls else np.nan
        epochs = int(history.sizes.get("epoch", 0)) if history is not None else 0
        decoder = Path(str(model.attrs.get("decoder_onnx", ""))).name
        rows.append([size, float(model.attrs.get("lambda", np.nan)),
                     float(model.attrs.get("alpha", np.nan)),
                     float(model.attrs.get("objective", np.nan)), calls, best, epochs,
                     Html(f"<a href='../{layout.MODELS_DIR}/{esc(decoder)}'>{esc(decoder)}</a>")])
    return (table(["latent size", "chosen &lambda;", "&alpha;", "objective", "search calls",
                   "best objective", "epochs", "decoder"], rows, left=0)
            + "".join(figure(f) for f in figs))


def _mse_section(rows: list[dict], subset: str, fig: FigureInfo) -> str:
    body = [[r["latent_size"], r["vae_n"], r["vae_median"], r["pca_median"],
             r["vae_median"] / r["pca_median"] if r["pca_median"] else np.nan, r["vae_mean"],
             r["pca_mean"]] for r in rows]
    return (f"<p>Per-spectrum reconstruction MSE over valid pixels, {esc(subset)} spectra.</p>"
            + table(["latent size", "spectra", "VAE median", "PCA median", "VAE / PCA",
                     "VAE mean", "PCA mean"], body, left=0) + figure(fig))


ANOMALY_TEXT = (
    "The anomaly score is the fraction of normal quasars that look more usual than a "
    "spectrum: 0.99 means more unusual than 99% of them, at any S/N. It combines three "
    "parts, each such a fraction: the reconstruction part, a chi-square of the "
    "reconstruction in which the model's own error (learned per pixel on training spectra) "
    "adds to the noise; the latent-density part, how rare the spectrum's code is among the "
    "training codes (a Gaussian mixture widened by the code's own uncertainty); and the "
    "redshift part, how unlikely the catalogue redshift is for a quasar with that code (a "
    "star, a galaxy or a misidentified line). Without a known redshift it combines the "
    "first two.")


def _outlier_section(fig: FigureInfo | None, rows: list[dict],
                     calibration: list[dict], calibration_fig: FigureInfo | None) -> str:
    if fig is None:
        return "<p class='note'>No anomaly scores in this release.</p>"
    body = [[r["rank"], r["spec_id"], r["SDSS_NAME"], r["spectrum"], r["Z"],
             r["anomaly_score"], r["recon_score"], r["density_score"], r["redshift_score"],
             r["recon_mse"], r["recon_chi2"]] for r in rows]
    html = (f"<p>{esc(ANOMALY_TEXT)}</p>" + figure(fig)
            + table(["rank", "spec_id", "SDSS_NAME", "cube row", "Z", "anomaly score",
                     "reconstruction part", "latent-density part", "redshift part", "MSE",
                     "reduced &chi;&sup2;"], body, left=3))
    if calibration_fig is not None:
        html += figure(calibration_fig) + table(
            ["S/N", "test quasars", "scored (with noise draws)", "share above 0.99"],
            [[c["sn"], c["n_spectra"], c["n_scored"], f"{100 * c['share_above_099']:.2f}%"]
             for c in calibration], left=0)
    return html


def run_analysis(release_dir: Path, corner_model: int = 9, quick: bool = False,
                 progress: Callable[[str], None] = print) -> dict:
    start = time.perf_counter()
    release_dir = Path(release_dir)
    with open_release(release_dir) as release:
        if not release.models:
            raise UsageError(f"{release.cube_path}: no /models groups; train before analyze")
        if corner_model not in release.models:
            raise UsageError(f"--corner-model {corner_model}: the cube has latent sizes "
                             f"{', '.join(map(str, sorted(release.models)))}")
        paths = layout.Release(release.folder)
        report_dir, catalog_dir = paths.report, paths.catalog
        report_dir.mkdir(exist_ok=True)
        progress(f"analyze: {release.n_spectra:,} spectra, models "
                 f"{sorted(release.models)}, writing {report_dir}")
        cube_sha256 = file_sha256(release.cube_path)
        summary = release_summary(release, cube_sha256)
        columns = catalog_columns(release.catalog)
        truth = truth_columns(release.truth)
        latents = {s: np.asarray(m.data["latent_mean"].values) for s, m in release.models.items()}
        assoc = association_table(latents, {c.key: c.values for c in
                                            [*columns.values(), *truth.values()]})
        write_associations_csv(assoc, report_dir / layout.ASSOCIATIONS_CSV)
        progress(f"analyze: association table {len(assoc.rows)} dimensions x "
                 f"{len(assoc.columns)} columns")
        models = release.models
        split = np.asarray(release.spectra["split"].values)
        mse_rows, subset = fm.mse_table(models, split)
        model_figs = [f for f in (fm.search_results(models, report_dir),
                                  fm.training_curves(models, report_dir)) if f]
        mse_fig = fm.mse_vs_latent(mse_rows, subset, report_dir)
        sample_fig = fs.samples(release, corner_model, report_dir)
        outlier_fig, outlier_rows = fs.outliers(release, corner_model, report_dir)
        calibration = fa.calibration_table(release, corner_model)
        calibration_fig = fa.calibration_figure(calibration, corner_model, report_dir)
        assoc_fig = fm.association_heatmap(assoc, report_dir)
        progress("analyze: model, spectra and association figures done")
        column_html, column_figs = _column_figures(release, columns, corner_model, quick,
                                                     report_dir, progress)
        cat_fig = fc.catalog_corner([columns[c] for c in CORNER_COLUMNS if c in columns],
                                    report_dir)
        vac = write_vac(release, catalog_dir, cube_sha256)
        progress(f"analyze: value-added catalogue {vac['fits'].name} + {vac['csv'].name}")
        vac_cols = vac_columns(None, sorted(models))
        survey_record = layout.Survey(paths.input).record
        simulated = (json.loads(survey_record.read_text()) if survey_record.is_file()
                     else None)
        sections = [
            ("input", "Simulated input and its fidelity", simulation_section(simulated)),
            ("models", "Lambda searches and training",
             _models_section(release, model_figs)),
            ("vae-pca", "VAE against PCA", _mse_section(mse_rows, subset, mse_fig)),
            ("spectra", "Sample spectra",
             figure(sample_fig) if sample_fig else "<p class='note'>No spectra.</p>"),
            ("outliers", "Outlier gallery",
             _outlier_section(outlier_fig, outlier_rows, calibration, calibration_fig)),
            ("associations", "Latent dimensions and catalogue columns",
             association_section(assoc, corner_model, [figure(assoc_fig)])),
            ("columns", "Catalogue columns", column_html),
            ("catalog", "Catalogue corner plot",
             figure(cat_fig) if cat_fig else "<p class='note'>Too few columns.</p>"),
            ("vac", "Value-added catalogue",
             f"<p><a href='../{layout.CATALOG_DIR}/{VAC_FITS}'>{VAC_FITS}</a> (FITS binary "
             f"table) and <a href='../{layout.CATALOG_DIR}/{VAC_CSV}'>{VAC_CSV}</a>: one "
             "row per spectrum.</p>"
             + table(["column", "FITS format", "unit", "description"],
                     [[c.name, c.tform, c.unit, c.description]
                      for c in vac_cols], left=4)),
        ]
        index = write_report(report_dir, summary, sections)
        written = [f for f in (*model_figs, mse_fig, sample_fig, outlier_fig, calibration_fig,
                               assoc_fig,
                               *column_figs, cat_fig) if f]
        _remove_stale(report_dir, {f.file for f in written})
        result = {"report": index, "associations_csv": report_dir / layout.ASSOCIATIONS_CSV,
                  "vac_fits": vac["fits"], "vac_csv": vac["csv"],
                  "figures": [report_dir / f.file for f in written],
                  "n_spectra": release.n_spectra,
                  "association_shape": assoc.rho.shape, "seconds": 0.0}
        for key in ("Z", "truth.Z"):
            if key in assoc.columns and np.isfinite(assoc.rho[:, assoc.columns.index(key)]).any():
                result[f"strongest_{key}"] = assoc.strongest(key)
    result["seconds"] = time.perf_counter() - start
    return result


def _remove_stale(folder: Path, keep: set[str]) -> None:
    """Figures of an earlier run that this run did not draw (say, a column that is now all
    NaN) would otherwise linger in the release and its manifest."""
    for path in folder.glob("*.png"):
        if path.name not in keep:
            path.unlink()


def _column_figures(release: Release, columns: dict, corner_model: int, quick: bool,
                    folder: Path, progress: Callable[[str], None]
                    ) -> tuple[str, list[FigureInfo]]:
    """Histogram, density vs MSE and latent corner per study column (quick: corner for Z only)."""
    mse = np.asarray(release.models[corner_model].data["recon_mse"].values, np.float64)
    corner = fc.LatentCorner(np.asarray(release.models[corner_model].data["latent_mean"].values,
                                        np.float64), corner_model)
    parts, written = [], []
    try:
        for k, (name, column) in enumerate(columns.items(), start=1):
            figs = [fc.histogram(column, folder), fc.density_vs_mse(column, mse, corner_model,
                                                                     folder)]
            if not quick or name == "Z":
                figs.append(corner.draw(column, folder))
            figs = [f for f in figs if f]
            written += figs
            body = "".join(figure(f) for f in figs) if figs else (
                f"<p class='note'>No figures: {esc(column.exclusion_text())}</p>")
            parts.append(f"<h3 id='col-{esc(name)}'>{esc(name)}</h3>"
                         f"<p class='small'>{esc(column.long_name)}</p>{body}")
            progress(f"analyze: column figures {k}/{len(columns)} ({name})")
    finally:
        corner.close()
    return "".join(parts), written
