"""Benchmark of ``qsocube encode``: onnxruntime against torch eager, and files to output.

* The encoder is the product's own: ``qsocube.builder.train.model.InfoVAE`` (asinh input, MLP
  n_pix -> 256 -> 128 -> (mu, logvar), leaky ReLU) with random weights, exported by the
  release's exporter with a release's metadata, loaded by ``qsocube.inference.Encoder``; torch
  eager runs the same module's ``encode``.
* In-memory rates at batch 1, 64 and 4,096: ``Encoder.latent`` (onnxruntime) against the
  same torch module in eager mode, same threads, rounds interleaved and the best round kept
  (this machine is shared: the best round is the least disturbed one).
* End to end: ``qsocube encode`` from spec-lite FITS files to an .h5 file (on its default
  local processes, and in one process), against the straightforward reference (one file
  at a time: read, resample, encode at batch 1).
* The hardware bound: the float32 GEMM rate onnxruntime reaches on a large square product,
  turned into spectra/s by the encoder's FLOPs per spectrum.

This module may import torch and onnx (benchmarks are not the product).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL_SPECTRA = ROOT.parent / "shared" / "data" / "sdss" / "spectra"
LATENT = 9
SIZES = {"small": {"seconds": 0.4, "rounds": 4, "repeat_files": 2},
         "full": {"seconds": 1.5, "rounds": 8, "repeat_files": 20}}


def build_models(folder: Path, n_pix: int, latent: int = LATENT):
    """The product's InfoVAE (random weights) exported by the product's exporter, with the
    metadata a release writes; return the torch model and the encoder's path."""

    import torch

    from qsocube import PRODUCT_VERSION
    from qsocube.builder.train.export import export_model
    from qsocube.builder.train.model import InfoVAE
    from qsocube.core.cube import file_sha256, schema_version
    from qsocube.core.grid import DEFAULT_GRID
    from qsocube.core.layout import anomaly_name, onnx_names
    from qsocube.core.preprocess import NORMALISATION

    torch.manual_seed(0)
    model = InfoVAE(n_pix, latent, decoder_dropout=0.0).eval()
    metadata = {"product_version": PRODUCT_VERSION, "schema_version": schema_version(),
                "latent_size": str(latent), "lambda": "1", "alpha": "0",
                "grid": DEFAULT_GRID.to_json(), "grid_sha256": DEFAULT_GRID.sha256,
                "normalisation": NORMALISATION, "resampling_method": "rebin",
                "cube_sha256": "0" * 64, "objective": "nan",
                "objective_definition": "none: a benchmark model with random weights",
                "train_config": "{}"}
    anomaly_path = folder / anomaly_name(latent)
    anomaly_path.write_text(bench_anomaly_model(n_pix, latent).to_json())
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        export_model(model, folder, metadata, {"anomaly_model": anomaly_path.name,
                                               "anomaly_sha256": file_sha256(anomaly_path)})
    return model, folder / onnx_names(latent)[0]


def bench_anomaly_model(n_pix: int, latent: int, rungs: int = 12):
    """An anomaly model of a release's shape (8 mixture components over the code and the
    redshift, a 12-rung S/N ladder, 1001 quantiles), with made-up numbers: its cost, not
    its values, is measured."""
    from qsocube.core import anomaly

    rng = np.random.default_rng(1)
    mixture = anomaly.fit_mixture(rng.standard_normal((4000, latent + 1)), k=8)
    tables = np.sort(rng.standard_normal((rungs, 1001)), axis=1)
    return anomaly.AnomalyModel(np.full(n_pix, 0.01, np.float32),
                                np.full(n_pix, 0.05, np.float32), mixture,
                                np.geomspace(1.0, 80.0, rungs), tables, tables, tables,
                                0.35, tables, tables)


def _best_rates(calls: dict, batch: int, seconds: float, rounds: int) -> dict[str, float]:
    """Spectra/s of each callable: rounds interleaved, best round kept."""
    best = dict.fromkeys(calls, 0.0)
    for fn in calls.values():
        fn()  # warm up (allocations, lazy init)
    for _ in range(rounds):
        for name, fn in calls.items():
            count, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds:
                fn()
                count += 1
            best[name] = max(best[name], count * batch / elapsed)
    return best


def gemm_bound(threads: int, n: int = 1536) -> float:
    """Float32 GFLOP/s of onnxruntime's GEMM on a square product (the machine's ceiling)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from qsocube.core.onnxmodel import session_options

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    session = ort.InferenceSession(model.SerializeToString(), session_options(threads),
                                   providers=["CPUExecutionProvider"])
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    rate = _best_rates({"gemm": lambda: session.run(None, {"a": a, "b": a})}, 1, 0.5, 3)
    del onnx
    return rate["gemm"] * 2 * n**3 / 1e9


def _fits_inputs(folder: Path, repeat: int) -> tuple[list[str], int]:
    files = sorted(str(p) for p in REAL_SPECTRA.glob("spec-*.fits")) if REAL_SPECTRA.is_dir() \
        else []
    if not files:  # no real data: synthetic spec-lite files in the same format
        from test_inference_fixture import build_pair, draw, write_spec_lite

        pair = build_pair(folder / "fixture")
        flux, _ = draw(np.random.default_rng(0), pair, 200)
        files = [str(write_spec_lite(folder / f"spec-7000-57000-{i + 1:04d}.fits", (3550, 10300),
                                     f, pair.grid, {"PLATE": 7000, "MJD": 57000,
                                                    "FIBERID": i + 1}))
                 for i, f in enumerate(flux)]
    return files * repeat, len(files) * repeat


def end_to_end(encoder_path: Path, folder: Path, repeat: int) -> dict[str, float]:
    """``qsocube encode`` FITS -> .h5 (default local processes, and in one process), against
    the one-file-at-a-time reference (read, resample, encode at batch 1)."""
    from qsocube.cli import main
    from qsocube.core.errors import InputError
    from qsocube.core.parallel import default_processes
    from qsocube.core.prepare import prepare
    from qsocube.core.preprocess import model_input
    from qsocube.core.speclite import read_spec_lite
    from qsocube.inference import Encoder

    inputs, n = _fits_inputs(folder, repeat)
    rates, code = {}, 0
    for label, processes in (("product", default_processes()), ("product_one_process", 1)):
        start = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):
            code = main(["encode", "--model", str(encoder_path), "--out",
                         str(folder / "out.h5"), "--overwrite", "--processes", str(processes),
                         *inputs])
        rates[label] = n / (time.perf_counter() - start)
    encoder = Encoder(encoder_path)
    reference_files = inputs[: min(n, 300)]
    start = time.perf_counter()
    for path in reference_files:
        try:
            prepared = prepare([read_spec_lite(path)], encoder.grid)
        except InputError:
            continue
        x, _ = model_input(prepared.flux, prepared.ivar, prepared.mask, prepared.norm)
        encoder.latent(x)
    reference = len(reference_files) / (time.perf_counter() - start)
    return {"files": n, "exit_code": code, "processes": default_processes(),
            "product_spectra_per_s": rates["product"],
            "product_one_process_spectra_per_s": rates["product_one_process"],
            "reference_spectra_per_s": reference, "ratio": rates["product"] / reference}


def run(size: str = "small") -> dict:
    import torch

    from qsocube.core.grid import DEFAULT_GRID
    from qsocube.core.onnxmodel import default_threads
    from qsocube.inference import Encoder

    settings = SIZES[size]
    threads = default_threads()
    torch.set_num_threads(threads)
    n_pix = DEFAULT_GRID.n_pix
    flops = 2 * (n_pix * 256 + 256 * 128 + 2 * 128 * LATENT)  # per spectrum, encoder only
    result: dict = {"stage": "encode", "size": size, "threads": threads, "latent_size": LATENT,
                    "flops_per_spectrum": flops, "batches": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch_encoder, encoder_path = build_models(folder, n_pix)
        encoder = Encoder(encoder_path)
        rng = np.random.default_rng(0)
        for batch in (1, 64, 4096):
            x = rng.random((batch, n_pix), dtype=np.float32)
            tx = torch.from_numpy(x)
            with torch.inference_mode():
                diff = float(np.max(np.abs(encoder.latent(x)[0]
                                         - torch_encoder.encode(tx)[0].numpy())))

                def eager(tx=tx):
                    with torch.inference_mode():
                        return torch_encoder.encode(tx)

                rates = _best_rates({"onnxruntime": lambda x=x: encoder.latent(x),
                                     "torch_eager": eager}, batch, settings["seconds"],
                                    settings["rounds"])
            rates["speedup"] = rates["onnxruntime"] / rates["torch_eager"]
            rates["max_abs_diff_mu"] = diff
            result["batches"][batch] = rates
        x = rng.random((4096, n_pix), dtype=np.float32)
        z = rng.uniform(0.1, 4.0, len(x))
        full = _best_rates({"encode": lambda: encoder.encode(x * 10 + 1, np.ones_like(x), z=z)},
                           4096, settings["seconds"], 2)
        # flux and ivar to codes, reconstructions, metrics and the four anomaly scores
        result["encode_api_with_decoder_and_metrics_4096_per_s"] = full["encode"]
        result["gemm_gflops"] = gemm_bound(threads)
        result["bound_spectra_per_s"] = result["gemm_gflops"] * 1e9 / flops
        best = result["batches"][4096]["onnxruntime"]
        result["fraction_of_bound_4096"] = best / result["bound_spectra_per_s"]
        result["end_to_end"] = end_to_end(encoder_path, folder, settings["repeat_files"])
    b = result["batches"]
    result["targets"] = {
        "ort_at_least_torch_every_batch": all(v["speedup"] >= 1 for v in b.values()),
        "ort_2x_torch_at_batch_1": b[1]["speedup"] >= 2,
        "ort_150k_per_s_at_4096": b[4096]["onnxruntime"] >= 150_000,
        "full_encode_path_100k_per_s_at_4096":
            result["encode_api_with_decoder_and_metrics_4096_per_s"] >= 100_000,
    }
    return result


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "small"), indent=1))
