"""The anomaly score's calibration against S/N (onnxruntime and numpy; no torch).

Normal quasars of the test split (all test spectra of a real cube; those without a
contaminant or artefact label in a simulated one) are degraded to lower S/N, encoded and
decoded with the release's ONNX pair and scored with its anomaly model, exactly as
``qsocube encode`` does: a calibrated score puts 1% of them above 0.99 at every S/N.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from qsocube.analysis.figures_common import FigureInfo, save
from qsocube.analysis.io import AnalysisError, Release
from qsocube.core import anomaly
from qsocube.core.cube import file_sha256
from qsocube.core.grid import WavelengthGrid
from qsocube.core.onnxmodel import open_session
from qsocube.core.preprocess import encoder_input, model_input

SN_LEVELS = (2.0, 5.0, 10.0, 30.0)
COPIES = 4  # noise realisations per spectrum and S/N level
MAX_SPECTRA = 1500


def _normal_test_rows(release: Release) -> np.ndarray:
    split = np.asarray(release.spectra["split"].values)
    keep = split == 2
    truth = release.truth
    if truth is not None and "OBJECT_CLASS" in truth and "ARTEFACT" in truth:
        keep &= anomaly.normal_quasars(truth["OBJECT_CLASS"].values, truth["ARTEFACT"].values)
    return np.flatnonzero(keep)[:MAX_SPECTRA]


def _checked(release: Release, latent_size: int, attribute: str, checksum: str) -> Path:
    path = release.model_file(latent_size, attribute)
    expected = str(release.models[latent_size].attrs.get(checksum, ""))
    if not path.is_file() or file_sha256(path) != expected:
        raise AnalysisError(f"{path}: missing or not the file the cube names ({checksum})")
    return path


def calibration_table(release: Release, latent_size: int, seed: int = 0) -> list[dict]:
    """Per S/N level: spectra scored, the share above 0.99 and the median of each score."""
    group = release.models[latent_size]
    if "anomaly_model" not in group.attrs:
        return []
    model = anomaly.AnomalyModel.read(_checked(release, latent_size, "anomaly_model",
                                               "anomaly_sha256"))
    encoder = open_session(_checked(release, latent_size, "encoder_onnx", "encoder_sha256"))
    decoder = open_session(_checked(release, latent_size, "decoder_onnx", "decoder_sha256"))
    rows = _normal_test_rows(release)
    pixels = release.pixels(rows)
    norm = np.asarray(release.spectra["norm"].values)[rows]
    x, w = model_input(pixels["flux"], pixels["ivar"], pixels["mask"], norm)
    z = (np.asarray(release.catalog["Z"].values, np.float64)[rows] if "Z" in release.catalog
         else np.full(len(rows), np.nan))
    wavelength = release.wavelength
    per_sdss = WavelengthGrid(len(wavelength), wavelength[0], wavelength[-1]).sn_per_sdss_pixel
    return degraded_scores(
        x, w, z, per_sdss, model,
        lambda xd: encoder.run(["mu", "logvar"], {"u": encoder_input(xd)}),
        lambda mu: decoder.run(["x_hat"], {"z": mu})[0], seed)


def degraded_scores(x: np.ndarray, w: np.ndarray, z: np.ndarray, per_sdss: float,
                    model: anomaly.AnomalyModel,
                    encode: Callable[[np.ndarray], list[np.ndarray]],
                    decode: Callable[[np.ndarray], np.ndarray], seed: int = 0) -> list[dict]:
    """Normal quasars' model input (x, w) and redshifts z degraded to each S/N of
    SN_LEVELS (per SDSS pixel, SN_MEDIAN_ALL's footing: a grid pixel averages ``per_sdss``
    squared of them), COPIES noise draws each, encoded, decoded and scored: per level the
    spectra that started above it, the share above 0.99 and the Scores (draw-major)."""
    rng = np.random.default_rng(seed)
    native = anomaly.median_snr(x, w) / per_sdss
    out = []
    for sn in SN_LEVELS:
        use = np.flatnonzero(native >= sn)  # only spectra that start above the level
        if not use.size:
            continue
        xs, ws = zip(*(anomaly.degrade(x[use], w[use], sn * per_sdss, rng)
                       for _ in range(COPIES)), strict=True)
        xd, wd = np.concatenate(xs), np.concatenate(ws)
        mu, logvar = encode(xd)
        scores = anomaly.score(model, xd, wd, decode(mu), mu, logvar, np.tile(z[use], COPIES))
        out.append({"sn": sn, "n_spectra": int(use.size), "n_scored": int(len(xd)),
                    "share_above_099": float(np.mean(scores.combined > 0.99)),
                    "scores": scores})
    return out


def calibration_figure(table: list[dict], latent_size: int, folder: Path) -> FigureInfo | None:
    if not table:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    levels = np.linspace(0, 1, 201)
    for entry in table:
        combined = np.sort(entry["scores"].combined[np.isfinite(entry["scores"].combined)])
        right.plot(np.searchsorted(combined, levels) / max(len(combined), 1), levels,
                   label=f"S/N {entry['sn']:g}")
        share, n = entry["share_above_099"], entry["n_scored"]
        left.errorbar(entry["sn"], 100 * share, yerr=100 * np.sqrt(0.0099 / n), fmt="o",
                      color="k")
    left.axhspan(0.5, 1.5, color="0.9")
    left.axhline(1.0, color="0.4", lw=0.8)
    left.set_xscale("log")
    left.set_xlabel("S/N per SDSS pixel (median), degraded to")
    left.set_ylabel("normal quasars scoring > 0.99 (%)")
    right.plot([0, 1], [0, 1], color="0.5", lw=0.8, ls="--")
    right.set_xlabel("fraction of normal quasars")
    right.set_ylabel("anomaly score")
    right.legend(fontsize=8)
    fig.tight_layout()
    name = save(fig, folder, f"anomaly_calibration_{latent_size:02d}.png")
    return FigureInfo(name, "Anomaly score against S/N",
                      f"Normal test quasars degraded to each S/N ({COPIES} noise draws each), "
                      f"encoded, decoded and scored with the {latent_size}-dimensional model's "
                      "ONNX pair and anomaly model, as `qsocube encode` would. Left: the share "
                      "scoring above 0.99 (1% expected, shaded 0.5-1.5%; binomial errors). "
                      "Right: the score against its rank; a calibrated score follows the "
                      "diagonal at every S/N.", "outliers")
