"""A small synthetic release (cube + ONNX decoders) for the analysis tests and benchmark.

It is written through ``qsocube.cube.write_variable`` exactly as the builder and training
write a real cube, so the analysis meets the real layout: dimension scales in child
groups, NaN "not measured" values, (spectrum, dla) arrays, an all-NaN column, /truth,
/rejected and /models/latent_NN with search and history subgroups.

The spectra are linear in a 15-component basis: x = mean + sum_k c_k e_k + noise, and
the decoder of latent size L is the linear map z -> mean + z @ E[:L], so reconstructions
are real and the MSE falls with L. Coefficient 0 is the standardised redshift, which
makes latent dimension 0 of every model track Z (the association tests assert it).
Needs ``onnx`` (a test/training dependency) to write the decoders.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from qsocube import PRODUCT_VERSION
from qsocube.cube import (
    file_sha256,
    model_group_name,
    schema_group,
    schema_version,
    split_of,
    write_open_variable,
    write_variable,
)
from qsocube.grid import WavelengthGrid
from qsocube.metrics import anomaly_score, reconstruction_metrics, reference_quantiles

N_BASIS = 15
ALL_NAN = "XMM_HARD_FLUX"  # a column with nothing measured, as in a small real release


def _decoder_onnx(path: Path, mean: np.ndarray, basis: np.ndarray) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    latent, n_pix = basis.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["z", "E"], ["zE"]), helper.make_node("Add", ["zE", "m"],
                                                                         ["x_hat"])],
        "decoder",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", latent])],
        [helper.make_tensor_value_info("x_hat", TensorProto.FLOAT, ["batch", n_pix])],
        [numpy_helper.from_array(basis.astype(np.float32), "E"),
         numpy_helper.from_array(mean.astype(np.float32), "m")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"role": "decoder", "latent_size": str(latent)})
    onnx.save(model, str(path))


def _catalog(rng: np.random.Generator, z: np.ndarray, spec_ids: list[str]) -> dict:
    n = len(z)
    plate, mjd, fiber = (np.array([int(s.split("-")[i]) for s in spec_ids]) for i in range(3))
    nan = np.full(n, np.nan)
    nhi = np.full((n, 5), np.nan)
    conf = np.full((n, 5), np.nan)
    has_dla = rng.random(n) < 0.15
    n_dla = np.where(has_dla, rng.integers(1, 3, n), 0)
    for slot in range(2):
        rows = n_dla > slot
        nhi[rows, slot] = rng.uniform(20.3, 21.8, rows.sum())
        conf[rows, slot] = rng.uniform(0.3, 1.0, rows.sum())
    bal = np.where(z > 1.6, rng.beta(0.3, 2.0, n), np.nan)
    bi_civ = np.where(np.isfinite(bal), np.where(bal > 0.5, rng.lognormal(7, 1, n), 0.0), nan)
    bi_siiv = np.where(z > 1.9, np.where(bal > 0.6, rng.lognormal(6, 1, n), 0.0), nan)
    xray = np.where(rng.random(n) < 0.2, 10 ** rng.normal(-14, 0.7, n), nan)
    m_i = np.where(rng.random(n) < 0.95, -26 - 1.5 * (z - 2) + rng.normal(0, 0.8, n), nan)
    return {
        "SDSS_NAME": [f"{i:06d}.00+{i % 90:02d}0000.0" for i in range(n)],
        "PLATE": plate, "MJD": mjd, "FIBERID": fiber, "THING_ID": np.arange(n) + 10**8,
        "RA": rng.uniform(0, 360, n), "DEC": rng.uniform(-10, 70, n), "Z": z,
        "NHI_DLA": nhi, "CONF_DLA": conf, "BAL_PROB": bal, "BI_CIV": bi_civ,
        "BI_SIIV": bi_siiv, "PLATESN2": rng.uniform(10, 40, n), "M_I": m_i,
        "SN_MEDIAN_ALL": rng.lognormal(1.5, 0.6, n), "XMM_SOFT_FLUX": xray,
        ALL_NAN: nan, "XMM_TOTAL_FLUX": xray * 1.7,
        "CLASS": ["QSO"] * n, "ZWARNING": np.zeros(n, int),
        "in_catalog": np.ones(n, np.uint8),
    }


def _write_model(cube: h5py.File, release: Path, latent: int, coeff: np.ndarray,
                 mean: np.ndarray, basis: np.ndarray, x: np.ndarray, w: np.ndarray,
                 split: np.ndarray, rng: np.random.Generator) -> None:
    n = len(x)
    group = cube.require_group(model_group_name(latent))
    write_variable(group, "latent", np.arange(latent))
    z_mean = coeff[:, :latent] + rng.normal(0, 0.05, (n, latent))
    x_hat = mean + z_mean @ basis[:latent]
    mse, chi2 = reconstruction_metrics(x, w, x_hat.astype(np.float32), latent)
    # The PCA baseline: projection on the same components, so it is a little better.
    rows = basis[:latent]
    filled = np.where(w > 0, x, mean)
    pca_hat = mean + ((filled - mean) @ rows.T / (rows**2).sum(axis=1)) @ rows
    pca_mse, _ = reconstruction_metrics(x, w, pca_hat.astype(np.float32), latent)
    score = anomaly_score(mse, reference_quantiles(mse[split == 0]))
    for name, values in (("latent_mean", z_mean), ("latent_logvar",
                                                   rng.normal(-3, 0.3, (n, latent))),
                         ("recon_mse", mse), ("recon_chi2", chi2), ("pca_mse", pca_mse),
                         ("anomaly_score", score)):
        write_variable(group, name, values)
    decoder = f"infovae_latent{latent:02d}_decoder.onnx"
    _decoder_onnx(release / "models" / decoder, mean, basis[:latent])
    calls = 6
    lambdas = 10 ** rng.uniform(0, 3, calls)
    objectives = np.median(mse) * (1 + 0.1 * (np.log10(lambdas) - 1.5)**2)
    lam = float(lambdas[np.argmin(objectives)])
    group.attrs.update({
        "latent_size": latent, "lambda": lam, "alpha": 0.0, "objective": float(objectives.min()),
        "objective_definition": "median validation reconstruction MSE",
        "encoder_onnx": f"infovae_latent{latent:02d}_encoder.onnx", "encoder_sha256": "0" * 64,
        "decoder_onnx": decoder, "decoder_sha256": file_sha256(release / "models" / decoder),
        "pca_weighting": "ivar", "trained_on_cube_sha256": "0" * 64})
    search = group.require_group("search")
    write_variable(search, "call", np.arange(calls))
    write_variable(search, "lambda", lambdas)
    write_variable(search, "objective", objectives)
    write_variable(search, "epochs", rng.integers(10, 40, calls))
    write_variable(search, "seconds", rng.uniform(5, 50, calls))
    history = group.require_group("history")
    epochs = np.arange(20)
    write_variable(history, "epoch", epochs)
    decay = np.exp(-epochs / 5.0)
    for name, scale in (("train_loss", 2.0), ("val_loss", 2.2), ("train_mse", 1.0),
                        ("val_mse", 1.1), ("kl", 0.3), ("mmd", 0.05)):
        write_variable(history, name, scale * (decay + 0.2) * np.median(mse) * 10)


def write_fixture_release(release: str | Path, n: int = 240, n_pix: int = 300,
                          latent_sizes: tuple[int, ...] = (3, 6, 9), seed: int = 0,
                          with_truth: bool = True) -> Path:
    """Write ``release/qsocube.h5`` and ``release/models/*_decoder.onnx``; return the cube."""
    release = Path(release)
    (release / "models").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    grid = WavelengthGrid(n_pix=n_pix)
    wave = grid.wavelength
    z = rng.uniform(0.3, 4.0, n)
    coeff = rng.normal(0, 1, (n, N_BASIS)) * np.linspace(1.0, 0.2, N_BASIS)
    coeff[:, 0] = (z - z.mean()) / z.std()
    basis = np.linalg.qr(rng.normal(size=(n_pix, N_BASIS)))[0].T * 3.0  # orthogonal rows
    mean = 1.0 + 0.3 * np.sin(wave / 300.0)
    x = mean + coeff @ basis + rng.normal(0, 0.02, (n, n_pix))
    outliers = rng.choice(n, size=max(n // 40, 2), replace=False)
    x[outliers, n_pix // 3: n_pix // 2] += 1.5  # a few glitches for the outlier gallery
    mask = np.zeros((n, n_pix), np.uint8)
    blue_cut = rng.integers(0, n_pix // 6, n)
    mask[np.arange(n_pix)[None, :] < blue_cut[:, None]] = 1
    mask[rng.random((n, n_pix)) < 0.01] = 2
    norm = rng.lognormal(1.0, 0.5, n).astype(np.float32)
    valid = mask == 0
    flux = np.where(valid, x * norm[:, None], 0).astype(np.float32)
    ivar = np.where(valid, 1.0 / (0.02 * norm[:, None])**2, 0).astype(np.float32)
    xm = np.where(valid, x, 0).astype(np.float32)
    w = np.where(valid, ivar * norm[:, None]**2, 0).astype(np.float32)
    spec_ids = [f"{4000 + i // 50:04d}-{55000 + i // 50:05d}-{1 + i % 50:04d}" for i in range(n)]
    split = split_of(spec_ids)
    cube_path = release / "qsocube.h5"
    with h5py.File(cube_path, "w") as cube:
        for name, values in (("spectrum", np.arange(n)), ("wavelength", wave),
                             ("dla", np.arange(5))):
            write_variable(cube, name, values)
        for name, values in (("spec_id", spec_ids),
                             ("source_file", [f"spec-{s}.fits" for s in spec_ids]),
                             ("source_sha256", ["0" * 64] * n), ("norm", norm),
                             ("covered_fraction", valid.mean(axis=1)), ("split", split),
                             ("flux", flux), ("ivar", ivar), ("mask", mask)):
            write_variable(cube, name, values)
        catalog = cube.create_group("catalog")
        rules = schema_group("/catalog")["variables"]
        for name, values in _catalog(rng, z, spec_ids).items():
            rule = "eq-1: not measured is NaN" if rules[name]["dtype"] == "float64" else None
            write_variable(catalog, name, values,
                           attrs={"missing_value_rule": rule} if rule else None)
        rejected = cube.create_group("rejected")
        write_variable(rejected, "rejected", np.arange(2))
        write_variable(rejected, "file", ["spec-0001-50000-0001.fits", "spec-0001-50000-0002"
                                          ".fits"])
        write_variable(rejected, "reason", ["truncated file", "covered fraction 0.12 < 0.5"])
        if with_truth:
            truth = cube.create_group("truth")
            write_open_variable(truth, "Z", z, long_name="true redshift")
            write_open_variable(truth, "ALPHA_NU", rng.normal(-0.5, 0.3, n), long_name="slope")
            write_open_variable(truth, "IS_BAL", (rng.random(n) < 0.1).astype(np.int64))
        for latent in latent_sizes:
            _write_model(cube, release, latent, coeff, mean, basis, xm, w, split, rng)
        cube.attrs.update({
            "product_version": PRODUCT_VERSION, "schema_version": schema_version(),
            "Conventions": "CF-1.10", "title": "qsocube fixture", "history": "fixture",
            "source": "simulated" if with_truth else "SDSS",
            "build_config": json.dumps({"n": n, "seed": seed}), "build_config_sha256": "0" * 64,
            "software_version": PRODUCT_VERSION, "git_commit": "fixture",
            "inputs_sha256": "0" * 64, "grid": grid.to_json(), "grid_sha256": grid.sha256,
            "normalisation": "median_flux_over_valid_pixels", "resampling_method": "rebin",
            "created": "2024-01-01T00:00:00Z"})
    return cube_path
