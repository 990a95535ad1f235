"""Benchmark of training: epoch throughput, FLOP utilisation, and one full search call.

* Throughput in spectra per second per training epoch at the default batch size (256) on
  the real architecture (1500 -> 256 -> 128 -> 2L and the mirrored decoder), for
  - the product loop (``qsocube.builder.train.fit``: in-memory tensors, one pass for the loss and
    the MSE, fused Adam) with one thread, as each search worker runs it;
  - two such workers side by side (what ``train_release`` does on 2 cores);
  - one process with two threads (the alternative the workers replace);
  - the straightforward reference: the study's style of loop (DataLoader over a
    TensorDataset, the biased MMD of tiled kernels, default Adam) in one process with
    torch's default threads (both cores), and with one thread for a like-for-like look.
  The headline ratio is the product as the release runs it (two workers) over the
  reference as one would run it by default.
* The hardware bound: torch's float32 matrix-multiply rate on this machine (one thread and
  two), and the FLOP utilisation of the forward and backward passes.
* One full search call: ``fit`` with the default profile's budget (max epochs, early
  stopping) on synthetic spectra of the profile's size; its seconds and epochs, and the
  release time for 5 latent sizes x n_calls that this implies.

This module may import torch (benchmarks are not the product).
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np

SIZES = {"small": {"n_spectra": 5000, "epochs": 2}, "full": {"n_spectra": 21771, "epochs": 2}}
N_PIX, LATENT, HIDDEN, BATCH = 1500, 6, (256, 128), 256


def flops_per_spectrum(n_pix: int = N_PIX, hidden: tuple[int, ...] = HIDDEN,
                       latent: int = LATENT) -> int:
    """Forward + backward FLOPs of one spectrum (matrix products only, 2 per MAC)."""
    sizes_enc = [n_pix, *hidden, 2 * latent]
    sizes_dec = [latent, *reversed(hidden), n_pix]
    macs = sum(a * b for s in (sizes_enc, sizes_dec) for a, b in zip(s[:-1], s[1:], strict=True))
    # backward: weight gradients (= forward) + input gradients (= forward, except the
    # first layer, whose input needs none)
    return 2 * (3 * macs - n_pix * hidden[0])


def matmul_gflops(threads: int, n: int = 2048, repeats: int = 10) -> float:
    """torch float32 GEMM rate, best of ``repeats`` (the machine is shared)."""
    import torch

    torch.set_num_threads(threads)
    from bench.hardware import best_seconds

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    return 2 * n**3 / best_seconds(lambda: a @ b, repeats) / 1e9


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic model inputs (x, capped w) of n spectra, generated in chunks."""
    from fixtures.synthetic_cube import synthetic_spectra

    from qsocube.builder.train.data import cap_weights
    from qsocube.core.preprocess import model_input, normalisation_factor

    xs, ws = [], []
    for lo in range(0, n, 4000):
        part = synthetic_spectra(min(4000, n - lo), seed=seed + lo)
        norm = normalisation_factor(part["flux"], part["mask"])
        x, w = model_input(part["flux"], part["ivar"], part["mask"], norm)
        xs.append(x)
        ws.append(cap_weights(w, x))
    return np.concatenate(xs), np.concatenate(ws)


def product_rate(n: int, epochs: int, threads: int) -> float:
    """Spectra per second of the product's training epoch (best epoch after a warm-up)."""
    import torch

    from qsocube.builder.train.fit import FitConfig, _train_epoch
    from qsocube.builder.train.model import InfoVAE

    torch.set_num_threads(threads)
    rng = np.random.default_rng(threads)
    x = torch.from_numpy(rng.random((n, N_PIX), dtype=np.float32))
    w = torch.from_numpy(rng.random((n, N_PIX), dtype=np.float32) * 100)
    config = FitConfig(latent_size=LATENT, lam=10.0, batch_size=BATCH)
    model = InfoVAE(N_PIX, LATENT, HIDDEN)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    generator = torch.Generator().manual_seed(0)
    u = torch.asinh(x)  # fit() transforms the encoder's input once per call
    _train_epoch(model, optimiser, x[:1024], w[:1024], config, generator, u[:1024])
    best = np.inf
    for _ in range(epochs):
        start = time.perf_counter()
        _train_epoch(model, optimiser, x, w, config, generator, u)
        best = min(best, time.perf_counter() - start)
    return n / best


def reference_rate(n: int, epochs: int, threads: int) -> float:
    """The study's style of loop: DataLoader, tiled-kernel biased MMD, default Adam."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from qsocube.builder.train.model import InfoVAE

    torch.set_num_threads(threads)
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.random((n, N_PIX), dtype=np.float32))
    w = torch.from_numpy(rng.random((n, N_PIX), dtype=np.float32) * 100)
    model = InfoVAE(N_PIX, LATENT, HIDDEN)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(x, w), batch_size=BATCH, shuffle=True)

    def kernel(a, b):
        tiled_a = a.unsqueeze(1).expand(a.shape[0], b.shape[0], a.shape[1])
        tiled_b = b.unsqueeze(0).expand(a.shape[0], b.shape[0], a.shape[1])
        return torch.exp(-(tiled_a - tiled_b).pow(2).mean(2) / a.shape[1])

    def epoch() -> None:
        model.train()
        for xb, wb in loader:
            x_hat, mu, logvar, z = model(xb)
            prior = torch.randn(200, LATENT)
            mmd = kernel(z, z).mean() + kernel(prior, prior).mean() - 2 * kernel(z, prior).mean()
            recon = 0.5 * (wb * (xb - x_hat) ** 2).sum(1).mean()
            kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1).mean()
            loss = recon + kl + 9.0 * mmd * LATENT
            mse = ((xb - x_hat) ** 2 * (wb > 0)).sum(1) / (wb > 0).sum(1)  # noqa: F841
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()

    best = np.inf
    for _ in range(epochs):
        start = time.perf_counter()
        epoch()
        best = min(best, time.perf_counter() - start)
    return n / best


def _worker_rate(n: int, epochs: int) -> float:
    return product_rate(n, epochs, 1)


def two_worker_rate(n: int, epochs: int) -> float:
    """Aggregate spectra/s of two single-threaded training processes running at once."""
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        return float(sum(pool.map(_worker_rate, [n, n], [epochs, epochs])))


def search_call(n: int) -> dict:
    """One search call with the default profile's budget on n synthetic spectra."""
    from qsocube.builder.train.fit import fit, set_threads
    from qsocube.core.defaults import training_budgets as profiles

    set_threads(1)
    budget = profiles()["default"]
    x, w = _data(n)
    order = np.random.default_rng(0).permutation(n)
    train, val = order[: int(0.8 * n)], order[int(0.8 * n): int(0.9 * n)]
    from qsocube.builder.train.fit import FitConfig

    config = FitConfig(latent_size=LATENT, lam=10.0, max_epochs=budget["max_epochs"],
                       batch_size=budget["batch_size"])
    result = fit(x[train], w[train], x[val], w[val], config)
    return {"seconds": result.seconds, "epochs": result.epochs, "stopped": result.stopped,
            "spectra_per_s": result.spectra_per_second, "n_train": len(train)}


def run(size: str = "small") -> dict:
    from qsocube.core.defaults import training_budgets as profiles

    settings = SIZES[size]
    n, epochs = 4096, settings["epochs"]
    flops = flops_per_spectrum()
    result: dict = {"stage": "train", "size": size, "batch_size": BATCH,
                    "latent_size": LATENT, "flops_per_spectrum_fwd_bwd": flops}
    result["matmul_gflops_1_thread"] = matmul_gflops(1)
    result["matmul_gflops_2_threads"] = matmul_gflops(2)
    result["product_1_thread_spectra_per_s"] = product_rate(n, epochs, 1)
    result["product_2_threads_spectra_per_s"] = product_rate(n, epochs, 2)
    result["product_2_workers_spectra_per_s"] = two_worker_rate(n, epochs)
    result["reference_2_threads_spectra_per_s"] = reference_rate(n, epochs, 2)
    result["reference_1_thread_spectra_per_s"] = reference_rate(n, epochs, 1)
    result["ratio_2_workers_vs_reference"] = (result["product_2_workers_spectra_per_s"]
                                              / result["reference_2_threads_spectra_per_s"])
    result["ratio_1_thread_vs_reference_1_thread"] = (
        result["product_1_thread_spectra_per_s"] / result["reference_1_thread_spectra_per_s"])
    result["flop_utilisation_1_thread"] = (result["product_1_thread_spectra_per_s"] * flops
                                           / (result["matmul_gflops_1_thread"] * 1e9))
    result["flop_utilisation_2_workers"] = (result["product_2_workers_spectra_per_s"] * flops
                                            / (result["matmul_gflops_2_threads"] * 1e9))
    call = search_call(settings["n_spectra"])
    result.update({f"search_call_{k}": v for k, v in call.items()})
    budget = profiles()["default"]
    calls = 5 * budget["n_calls"]
    # two workers share the calls; the busier one does 3 latent sizes of 5
    result["projected_release_search_minutes"] = 3 * budget["n_calls"] * call["seconds"] / 60
    limit_minutes = 12 if size == "small" else 50
    result["targets"] = {
        "2_workers_1.3x_reference": result["ratio_2_workers_vs_reference"] >= 1.3,
        f"{calls}_default_calls_within_{limit_minutes}_min":
            result["projected_release_search_minutes"] <= limit_minutes,
    }
    return result


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "small"), indent=1))
