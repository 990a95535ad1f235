"""``train_release``: search, export and write back every latent size of a release.

Phase 1 runs the lambda searches: this process holds every search's optimizer and state,
and worker processes train the calls (one torch thread each: on this 2-core machine two
single-threaded trainings side by side run ~1.6x faster than one two-threaded training,
and the thread count, hence every result, is the same however many workers run). The
workers are a local process pool, or with ``scheduler`` the processes of a Dask cluster
(same calls, same function, same results; see ``workers.py``).
Phase 2, in this process and in order, exports each chosen model, computes codes,
metrics and the PCA baseline, and writes the group back, so the cube has one writer.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

import qsocube
from qsocube.builder.train.calls import chosen_model
from qsocube.builder.train.config import ENCODER_DROPOUT, OBJECTIVE_DEFINITION, SearchConfig
from qsocube.builder.train.data import (
    CubeData,
    cap_weights,
    config_json,
    load_cube,
    trained_on_sha256,
)
from qsocube.builder.train.export import export_model, parity
from qsocube.builder.train.fit import Progress, set_threads
from qsocube.builder.train.pca import (
    fit_weighted_pca,
    initial_components,
    reconstruct,
    weighted_mean,
)
from qsocube.builder.train.state import SearchState
from qsocube.builder.train.workers import run_searches
from qsocube.builder.train.writeback import HISTORY_VARIABLES, is_current, write_model_group
from qsocube.core import anomaly, defaults
from qsocube.core.atomic import exclusive, remove_stale_partials, write_text_atomic
from qsocube.core.cube import file_sha256, schema_version
from qsocube.core.errors import CubeError, ModelError, UsageError
from qsocube.core.layout import anomaly_name
from qsocube.core.metrics import reconstruction_metrics
from qsocube.core.parallel import available_cores
from qsocube.core.progress import say

PCA_WEIGHTING = ("inverse-variance weighted, with the VAE's capped weights "
                 "w / (1 + w * (0.02 * max(|x|, 1))^2) (0 on masked pixels); EM weighted PCA "
                 "(components and mean) fitted on the training split; every spectrum's codes "
                 "by weighted least squares")
ENCODE_ROWS = 4096
# latent-density model: Gaussian components over the training codes and their redshifts
MIXTURE_COMPONENTS = 8
# The anomaly scores' S/N ladder (median S/N per SDSS pixel, SN_MEDIAN_ALL's footing): a
# rung needs MIN_RUNG_SPECTRA calibration quasars at least that bright (half of them, in a
# small cube), and is filled with noise draws to about RUNG_SCORES scores. Fewer distinct
# quasars make a rung's tail quantiles those of a handful of spectra.
CALIBRATION_SN = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0)
MIN_RUNG_SPECTRA = 40
# snr (rms S/N of the reconstruction) over the median S/N of the same spectrum: the rms
# weighs the bright lines in; measured on the default release's validation quasars
SNR_PER_MEDIAN_SN = 1.2
RUNG_SCORES = 1000


def train_release(cube_path: Path, models_dir: Path, state_dir: Path, **options) -> dict:
    """``_train_release`` while holding the cube's one-writer lock (``atomic.exclusive``):
    a build or another training of the same cube meanwhile fails at once, in one line."""
    with exclusive(Path(cube_path), "this cube"):
        return _train_release(cube_path, models_dir, state_dir, **options)


def _train_release(cube_path: Path, models_dir: Path, state_dir: Path, *,
                   latent_sizes: tuple[int, ...] = defaults.LATENT_SIZES, n_calls: int,
                   max_epochs: int, batch_size: int = defaults.TRAIN_BATCH_SIZE, seed: int = 0,
                   hidden: tuple[int, ...] = defaults.HIDDEN, progress: Progress = say,
                   processes: int | None = None, dropout: float = ENCODER_DROPOUT,
                   decoder_dropout: float | None = None,
                   scheduler: str | None = None, workers: int | None = None,
                   parallel_calls: int = 1) -> dict:
    """Train, export and write back every latent size; resumable; returns a summary dict.

    ``processes``: local processes training search calls (default: up to 2). ``scheduler``
    (a Dask scheduler address) or ``workers`` > 1 (a LocalCluster of that many processes):
    train the calls on a Dask cluster instead; the workers must read the cube at the same
    path (it is checked by sha256), nothing else needs to be shared. All give the results
    of the serial path. ``parallel_calls`` (k): lambdas asked and trained at once per latent
    size with skopt's constant liar; k > 1 changes which lambdas are tried, so results
    differ from k = 1 by design (but not with the workers); k is part of the search's
    identity, and resuming replays every recorded call in order.
    """
    start = time.perf_counter()
    cube_path, models_dir, state_dir = Path(cube_path), Path(models_dir), Path(state_dir)
    if n_calls < 1 or max_epochs < 1 or batch_size < 2 or parallel_calls < 1:
        raise UsageError("n_calls, max_epochs and parallel_calls must be >= 1 and "
                         "batch_size >= 2")
    models_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(models_dir, progress)
    remove_stale_partials(state_dir, progress)
    remove_stale_partials(cube_path.parent, progress, target=cube_path, recursive=False)
    cube_sha = trained_on_sha256(cube_path)
    configs = {size: SearchConfig(size, n_calls, max_epochs, batch_size, seed, tuple(hidden),
                                  dropout=dropout,
                                  decoder_dropout=decoder_dropout,
                                  parallel_calls=parallel_calls) for size in latent_sizes}
    todo = [size for size, config in configs.items()
            if not is_current(cube_path, models_dir, size, config.budget(cube_sha))]
    for size in sorted(set(latent_sizes) - set(todo)):
        progress(f"latent {size:02d}: already in {cube_path.name} with this budget; skipped")
    data = load_cube(cube_path) if todo else None
    if data is not None and len(data.rows(0)) <= max(todo):
        raise CubeError(f"{cube_path}: {len(data.rows(0))} training spectra cannot train a "
                        f"{max(todo)}-dimensional latent space")
    # at most k calls of each search can run at once
    processes = min(processes or min(2, available_cores()), max(len(todo) * parallel_calls, 1))
    states, workers = run_searches(cube_path, data, [configs[s] for s in todo], state_dir,
                                   cube_sha, progress, processes, scheduler, workers)
    summary: dict = {"cube": str(cube_path), "cube_sha256": cube_sha, "models": {},
                     "skipped": sorted(set(latent_sizes) - set(todo)), "workers": workers}
    if todo:
        set_threads()
        pca_start = _pca_start(data, max(todo), configs[todo[0]].sigma_floor)
        for size in todo:
            summary["models"][size] = _finish(cube_path, models_dir, state_dir, data,
                                              configs[size], states[size], cube_sha, pca_start,
                                              progress)
    summary["seconds"] = time.perf_counter() - start
    progress(summary_paragraph(summary))
    return summary


def _pca_start(data: CubeData, k_max: int, sigma_floor: float) -> dict[str, np.ndarray]:
    """The weighted mean and the plain-PCA start, shared by every latent size's PCA."""
    train = data.rows(0)
    w = cap_weights(data.w[train], data.x[train], sigma_floor)
    mean = weighted_mean(data.x[train], w)
    return {"mean": mean, "start": initial_components(data.x[train], w, mean, k_max)}


@torch.no_grad()
def encode_all(model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mu, logvar, x_hat decoded from mu) for every row, in eval mode."""
    model.eval()
    parts = []
    for lo in range(0, len(x), ENCODE_ROWS):
        mu, logvar = model.encode(torch.from_numpy(x[lo:lo + ENCODE_ROWS]))
        parts.append((mu.numpy(), logvar.numpy(), model.decode(mu).numpy()))
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore


def fit_anomaly(model, data: CubeData, mu: np.ndarray, logvar: np.ndarray,
                x_hat: np.ndarray, seed: int) -> anomaly.AnomalyModel:
    """The anomaly model of a trained model (see ``qsocube.core.anomaly``).

    The latent mixture (over the codes and the catalogue redshift) and the model's own
    error are fitted to the training split's normal quasars; the validation split's,
    degraded to each rung of CALIBRATION_SN, set each rung's quantile tables, so that 0.99
    means the same for a faint spectrum as for a bright one. (The training spectra are
    reconstructed a little better than new ones, so the error comes out a little small; the
    quantiles, taken on new spectra, absorb that.)
    """
    normal = data.normal if data.normal is not None else np.ones(len(data.x), bool)
    train = data.rows(0)
    train = train[normal[train]]
    z = data.z if data.z is not None else np.full(len(data.x), np.nan)
    mixture, scale = anomaly.fit_latent_mixture(mu[train], z[train], MIXTURE_COMPONENTS, seed)
    scatter = anomaly.fit_scatter(data.x[train], data.w[train], x_hat[train])
    rng = np.random.default_rng(seed)
    calibration = data.rows(1)[normal[data.rows(1)]]
    x_cal, w_cal, z_cal = data.x[calibration], data.w[calibration], z[calibration]
    # the ladder's own footing (snr of the reconstruction), so each rung is tight in it
    native = anomaly.snr(w_cal, x_hat[calibration])
    rungs = []
    for sn in CALIBRATION_SN:
        target = sn * data.grid.sn_per_sdss_pixel * SNR_PER_MEDIAN_SN
        bright = native >= target
        if bright.sum() < min(MIN_RUNG_SPECTRA, max(len(calibration) // 2, 1)):
            continue
        draws = int(np.clip(np.ceil(RUNG_SCORES / bright.sum()), 1, 20))
        x, w = (np.concatenate(a) for a in zip(*(anomaly.degrade(
            x_cal[bright], w_cal[bright], target, rng, native[bright])
            for _ in range(draws)), strict=True))
        mean, var, x_rec = encode_all(model, x)
        rungs.append((x, w, x_rec, mean, var, np.tile(z_cal[bright], draws)))
    if not rungs:
        raise ModelError(f"{data.path}: {len(calibration)} normal validation spectra, too "
                         f"few to calibrate the anomaly scores on")
    return anomaly.calibrate(scatter, mixture, rungs, scale)


def _finish(cube_path: Path, models_dir: Path, state_dir: Path, data: CubeData,
            config: SearchConfig, state: SearchState, cube_sha: str,
            pca_start: dict[str, np.ndarray], progress: Progress) -> dict:
    size = config.latent_size
    tick = time.perf_counter()
    model, record = chosen_model(data, config, state, state_dir, progress)
    mu, logvar, x_hat = encode_all(model, data.x)
    recon_mse, recon_chi2 = reconstruction_metrics(data.x, data.w, x_hat, size)
    train = data.rows(0)
    anomaly_model = fit_anomaly(model, data, mu, logvar, x_hat, config.seed)
    anomaly_path = models_dir / anomaly_name(size)
    models_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(anomaly_path, anomaly_model.to_json())
    anomaly_files = {"anomaly_model": anomaly_path.name,
                     "anomaly_sha256": file_sha256(anomaly_path)}
    scores = anomaly.score(anomaly_model, data.x, data.w, x_hat, mu, logvar, data.z)
    w_cap = cap_weights(data.w, data.x, config.sigma_floor)
    basis = fit_weighted_pca(data.x[train], w_cap[train], size, start=pca_start["start"],
                             mean=pca_start["mean"])
    pca_mse, _ = reconstruction_metrics(data.x, data.w, reconstruct(basis, data.x, w_cap), size)
    metadata = {
        "product_version": qsocube.PRODUCT_VERSION, "schema_version": schema_version(),
        "latent_size": str(size), "lambda": repr(record["lambda"]),
        "alpha": repr(config.alpha), "grid": data.attrs["grid"],
        "grid_sha256": data.attrs["grid_sha256"], "normalisation": data.attrs["normalisation"],
        "resampling_method": data.attrs["resampling_method"], "cube_sha256": cube_sha,
        "objective": repr(record["objective"]), "objective_definition": OBJECTIVE_DEFINITION,
        "train_config": config_json(config.budget(cube_sha))}
    files = export_model(model, models_dir, metadata, anomaly_files)
    sample = data.x[data.rows(1)[:64]]
    max_diff = parity(model, models_dir / files["encoder_onnx"],
                      models_dir / files["decoder_onnx"], sample)
    if max_diff > 1e-4:
        raise ModelError(f"latent {size:02d}: onnxruntime and torch differ by {max_diff:.2e}")
    calls = state.calls[:config.n_calls]
    attrs = {"latent_size": size, "lambda": record["lambda"], "alpha": config.alpha,
             "objective": record["objective"], "objective_definition": OBJECTIVE_DEFINITION,
             **files, **anomaly_files, "pca_weighting": PCA_WEIGHTING,
             "trained_on_cube_sha256": cube_sha,
             "train_config": config_json(config.budget(cube_sha))}
    search = {"lambda": np.array([c["lambda"] for c in calls]),
              "objective": np.array([_num(c["objective"]) for c in calls]),
              "epochs": np.array([c["epochs"] for c in calls]),
              "seconds": np.array([c["seconds"] for c in calls])}
    history = {k: np.array([_num(v) for v in values]) for k, values in record["history"].items()
               if k in HISTORY_VARIABLES}
    arrays = {"latent_mean": mu, "latent_logvar": logvar, "recon_mse": recon_mse,
              "recon_chi2": recon_chi2, "pca_mse": pca_mse,
              "recon_score": scores.recon, "density_score": scores.density,
              "redshift_score": scores.redshift,
              "anomaly_score": scores.combined}
    write_model_group(cube_path, size, arrays, attrs, search, history,
                      {"best_epoch": record["best_epoch"], "stopped": record["stopped"]})
    result = {"lambda": record["lambda"], "objective": record["objective"],
              "call": record["call"], "epochs": record["epochs"], **files,
              "parity_max_abs": max_diff, "pca_iterations": basis.iterations,
              "search_seconds": float(sum(c["seconds"] for c in calls)),
              "finish_seconds": time.perf_counter() - tick}
    for label, part in (("validation", 1), ("test", 2)):
        rows = data.rows(part)
        result[f"median_recon_mse_{label}"] = _median(recon_mse[rows])
        result[f"median_pca_mse_{label}"] = _median(pca_mse[rows])
    progress(f"latent {size:02d}: lambda {record['lambda']:.3g} (call {record['call'] + 1}), "
             f"median test MSE VAE {result['median_recon_mse_test']:.4g} vs PCA "
             f"{result['median_pca_mse_test']:.4g}; wrote {files['encoder_onnx']}, "
             f"{files['decoder_onnx']} and {cube_path.name}:/models/latent_{size:02d}")
    return result


def _num(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _median(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan


def summary_paragraph(summary: dict) -> str:
    models = summary["models"]
    parts = [f"L={size}: lambda {m['lambda']:.3g}, test MSE {m['median_recon_mse_test']:.4g} "
             f"(PCA {m['median_pca_mse_test']:.4g})" for size, m in sorted(models.items())]
    skipped = f" Skipped (already written): {summary['skipped']}." if summary["skipped"] else ""
    return (f"Training finished in {summary['seconds']:.0f} s with {summary['workers']} "
            f"worker(s): {len(models)} model(s) searched, exported and written back to "
            f"{summary['cube']} ({'; '.join(parts) or 'none'}).{skipped}")
