"""Training one InfoVAE: Adam, learning-rate reduction on plateau, early stopping.

Determinism: the weights are initialised from ``seed``; shuffling, the codes' noise and
the prior draws come from a generator seeded from it; dropout draws from the global torch
generator, seeded here inside ``fork_rng`` so the caller's random state is untouched.
With a fixed thread count, the same configuration gives the same model bit for bit.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from qsocube.builder.train.model import InfoVAE, infovae_loss

# Per epoch. The losses, kl and mmd are means per spectrum; train_mse/val_mse are means of
# the per-spectrum MSE and *_mse_median their medians, the curve to compare train with
# validation by: a few spectra with a near-zero median flux (z > 5, x = flux / norm ~ 1e3)
# can put the mean orders of magnitude above the bulk. The train_* values are gathered
# over the epoch's batches as they train (train mode); the val_* after it (eval mode).
HISTORY_KEYS = ("train_loss", "val_loss", "train_mse", "val_mse", "kl", "mmd",
                "train_mse_median", "val_mse_median")
IMPROVEMENT = 1e-4  # relative decrease of the validation loss that counts as progress
LOGVAR_INIT = -6.0
EVAL_SEED_OFFSET = 7919  # validation draws use their own fixed stream, the same every epoch


def set_threads(n: int | None = None) -> int:
    """Use the machine's cores (2 here) for intra-op work; one inter-op thread is enough."""
    n = n or min(2, os.cpu_count() or 1)
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set once in this process
        pass
    return n


@dataclass(frozen=True)
class FitConfig:
    latent_size: int
    lam: float
    alpha: float = 0.0
    hidden: tuple[int, ...] = (256, 128)
    dropout: float = 0.2
    decoder_dropout: float | None = None  # None: the same as the encoder's
    batch_size: int = 256
    max_epochs: int = 30
    lr: float = 1e-3
    patience: int = 5  # epochs without improvement before early stopping
    lr_patience: int = 2  # epochs without improvement before the learning rate drops
    lr_factor: float = 0.3
    seed: int = 0

    def to_dict(self) -> dict:
        return {**asdict(self), "hidden": list(self.hidden)}


@dataclass
class FitResult:
    model: InfoVAE  # holds the weights of the best epoch
    history: dict[str, list[float]]
    best_epoch: int  # 1-based
    epochs: int
    seconds: float
    objective: float  # validation -ELBO at the best epoch (see objective_from)
    spectra_per_second: float
    stopped: str  # "early_stopping" | "max_epochs" | "diverged"
    extra: dict = field(default_factory=dict)


def objective_from(val_loss: float, kl: float, mmd: float, lam: float, alpha: float) -> float:
    """The search objective from the validation terms: recon + KL, the negative ELBO.

    The loss itself weights the MMD by lambda, so it cannot rank different lambdas; the
    negative ELBO (a bound on -log p(x) under the Gaussian likelihood with the capped
    weights) is the part every model is judged by equally.
    """
    return val_loss + alpha * kl - (lam + alpha - 1.0) * mmd


Progress = Callable[[str], None]


def fit(train_x: np.ndarray | torch.Tensor, train_w: np.ndarray | torch.Tensor,
        val_x: np.ndarray | torch.Tensor, val_w: np.ndarray | torch.Tensor,
        config: FitConfig, progress: Progress | None = None, label: str = "",
        every: float = 2.0) -> FitResult:
    """Train on (train_x, train_w) with early stopping on (val_x, val_w); w are capped weights."""
    tx, tw, vx, vw = (torch.as_tensor(a, dtype=torch.float32)
                      for a in (train_x, train_w, val_x, val_w))
    tu, vu = torch.asinh(tx), torch.asinh(vx)  # the encoder's input transform, once
    start = last_report = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = InfoVAE(tx.shape[1], config.latent_size, config.hidden, config.dropout,
                        config.decoder_dropout)
        # start the decoder at the weighted mean training spectrum: the first epochs then
        # learn the variations instead of the mean (the loss starts ~50x lower)
        with torch.no_grad():
            total = tw.sum(dim=0)
            mean = torch.where(total > 0, (tw * tx).sum(dim=0) / total.clamp(min=1e-30), 0.0)
            model.decoder[-1].bias.copy_(mean)
            # ...and the encoder at narrow posteriors (sigma ~ 0.05): with sigma ~ 1 the codes
            # start as noise, the decoder learns to ignore them and training can sit for many
            # epochs on the "mean spectrum" plateau (posterior collapse)
            model.encoder[-1].bias[config.latent_size:].fill_(LOGVAR_INIT)
        generator = torch.Generator().manual_seed(config.seed + 1)
        optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimiser, factor=config.lr_factor, patience=config.lr_patience,
            threshold=IMPROVEMENT)
        history: dict[str, list[float]] = {key: [] for key in HISTORY_KEYS}
        best, best_epoch, best_state, stale = math.inf, 0, None, 0
        stopped, train_seconds = "max_epochs", 0.0
        for epoch in range(1, config.max_epochs + 1):
            tick = time.perf_counter()
            train = _train_epoch(model, optimiser, tx, tw, config, generator, tu)
            train_seconds += time.perf_counter() - tick
            val = evaluate(model, vx, vw, config, vu)
            for key, value in (("train_loss", train["total"]), ("val_loss", val["total"]),
                               ("train_mse", train["mse"]), ("val_mse", val["mse"]),
                               ("kl", val["kl"]), ("mmd", val["mmd"]),
                               ("train_mse_median", train["mse_median"]),
                               ("val_mse_median", val["mse_median"])):
                history[key].append(value)
            if not (math.isfinite(train["total"]) and math.isfinite(val["total"])):
                stopped = "diverged"
                break
            scheduler.step(val["total"])
            if val["total"] < best - IMPROVEMENT * abs(best) or best_state is None:
                best, best_epoch, stale = val["total"], epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
            now = time.perf_counter()
            if progress and (now - last_report >= every or epoch == 1):
                last_report = now
                rate = len(tx) * epoch / max(train_seconds, 1e-9)
                progress(f"{label}epoch {epoch}/{config.max_epochs}: train {train['total']:.1f}"
                         f" val {val['total']:.1f} median mse {val['mse_median']:.4f}, "
                         f"{rate:,.0f} spectra/s")
            if stale >= config.patience:
                stopped = "early_stopping"
                break
    epochs = len(history["val_loss"])
    if best_state is not None:
        model.load_state_dict(best_state)
        i = best_epoch - 1
        objective = objective_from(history["val_loss"][i], history["kl"][i], history["mmd"][i],
                                   config.lam, config.alpha)
    else:
        objective = math.nan
    model.eval()
    return FitResult(model, history, best_epoch, epochs, time.perf_counter() - start,
                     objective, len(tx) * epochs / max(train_seconds, 1e-9), stopped)


def _train_epoch(model: InfoVAE, optimiser: torch.optim.Optimizer, x: torch.Tensor,
                 w: torch.Tensor, config: FitConfig, generator: torch.Generator,
                 u: torch.Tensor | None = None) -> dict[str, float]:
    u = torch.asinh(x) if u is None else u
    model.train()
    order = torch.randperm(len(x), generator=generator)
    sums = dict.fromkeys(("total", "recon", "kl", "mmd", "mse"), 0.0)
    count, per_spectrum = 0, []
    for lo in range(0, len(x), config.batch_size):
        rows = order[lo:lo + config.batch_size]
        if len(rows) < 2:  # the unbiased MMD needs two codes
            continue
        xb, wb = x[rows], w[rows]
        x_hat, mu, logvar, z = model(xb, generator, u[rows])
        terms = infovae_loss(xb, wb, x_hat, mu, logvar, z, config.lam, config.alpha, generator)
        optimiser.zero_grad(set_to_none=True)
        terms.total.backward()
        optimiser.step()
        _accumulate(sums, terms, len(rows))
        per_spectrum.append(terms.spectrum_mse)
        count += len(rows)
    return _means(sums, count, per_spectrum)


@torch.no_grad()
def evaluate(model: InfoVAE, x: torch.Tensor, w: torch.Tensor, config: FitConfig,
             u: torch.Tensor | None = None) -> dict[str, float]:
    """Loss terms per spectrum in eval mode, with the same fixed draws every call."""
    model.eval()
    u = torch.asinh(x) if u is None else u
    generator = torch.Generator().manual_seed(config.seed + EVAL_SEED_OFFSET)
    sums = dict.fromkeys(("total", "recon", "kl", "mmd", "mse"), 0.0)
    count, per_spectrum = 0, []
    for lo in range(0, len(x), config.batch_size):
        xb, wb = x[lo:lo + config.batch_size], w[lo:lo + config.batch_size]
        if len(xb) < 2:
            continue
        x_hat, mu, logvar, z = model(xb, generator, u[lo:lo + config.batch_size])
        terms = infovae_loss(xb, wb, x_hat, mu, logvar, z, config.lam, config.alpha, generator)
        _accumulate(sums, terms, len(xb))
        per_spectrum.append(terms.spectrum_mse)
        count += len(xb)
    return _means(sums, count, per_spectrum)


def _accumulate(sums: dict[str, float], terms, n: int) -> None:
    for key in sums:
        sums[key] += float(getattr(terms, key).detach()) * n


def _means(sums: dict[str, float], count: int, per_spectrum: list[torch.Tensor]
           ) -> dict[str, float]:
    """The per-spectrum means of the sums, and ``mse_median``: the median spectrum's MSE."""
    means = {key: value / max(count, 1) for key, value in sums.items()}
    values = torch.cat(per_spectrum).numpy() if per_spectrum else np.empty(0)
    means["mse_median"] = float(np.median(values)) if values.size else math.nan
    return means
