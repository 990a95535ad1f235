"""One search call: the tensors it trains on, training it, and the chosen call's model.

A call is a ``fit`` at one lambda; ``train_call`` turns its result into the JSON-able
record the search state keeps (non-finite numbers as null) and saves its weights beside
the state, where ``Search.tell`` keeps them if the call is the best so far. ``chosen_model``
gets the best call's model back: from that checkpoint, or by retraining the call (the same
seeds give the same weights). The ask/tell loop that picks the lambdas is ``search.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from qsocube.builder.train.config import SearchConfig, call_label
from qsocube.builder.train.data import X_LIMIT, CubeData, cap_weights
from qsocube.builder.train.fit import Progress, fit
from qsocube.builder.train.model import InfoVAE
from qsocube.builder.train.state import (
    SearchState,
    call_weights_path,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)


def bounded(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs safe for the loss: non-finite values masked (x = w = 0), |x| clipped to
    ``X_LIMIT``. Arrays that need nothing are returned as they are (the same bits)."""
    finite = np.isfinite(x) & np.isfinite(w) & (w >= 0)
    if not finite.all():
        x, w = np.where(finite, x, 0).astype(x.dtype), np.where(finite, w, 0).astype(w.dtype)
    if not (np.abs(x) <= X_LIMIT).all():
        x = np.clip(x, -X_LIMIT, X_LIMIT)
    return x, w


def training_tensors(data: CubeData, sigma_floor: float) -> tuple[torch.Tensor, ...]:
    """(x, w_cap) of the training split, then of the validation split; never the test split.

    Inputs are finite and bounded (``bounded``) before they reach the loss, so no single
    spectrum can turn the loss into inf or NaN."""
    train, val = data.rows(0), data.rows(1)
    x, w = bounded(data.x, data.w)
    w = cap_weights(w, x, sigma_floor)
    return tuple(torch.from_numpy(np.ascontiguousarray(a))
                 for a in (x[train], w[train], x[val], w[val]))


def train_call(tensors: tuple[torch.Tensor, ...], config: SearchConfig, call: int,
               log10_lambda: float, state_dir: Path, progress: Progress | None = None
               ) -> tuple[dict, Path]:
    """Train one call; save its weights beside the state; (JSON-able summary, weights path)."""
    lam = 10.0**log10_lambda
    result = fit(*tensors, config.fit_config(lam), progress,
                 call_label(config, call, lam))
    weights = call_weights_path(state_dir, config.latent_size, call)
    save_checkpoint(weights, result.model, call)
    finite = math.isfinite(result.objective)
    summary = {"call": call, "log10_lambda": log10_lambda, "lambda": lam,
               "objective": result.objective if finite else None,
               "epochs": result.epochs, "best_epoch": result.best_epoch,
               "seconds": result.seconds, "stopped": result.stopped,
               "spectra_per_second": result.spectra_per_second,
               "history": {k: [v if math.isfinite(v) else None for v in values]
                           for k, values in result.history.items()}}
    return summary, weights


def chosen_model(data: CubeData, config: SearchConfig, state: SearchState, state_dir: Path,
                 progress: Progress | None = None) -> tuple[InfoVAE, dict]:
    """The best call's model: from the checkpoint, or retrained (same seeds, same weights)."""
    best = state.best_index(config.n_calls)
    if best is None:
        raise RuntimeError(f"latent {config.latent_size:02d}: every search call diverged")
    record = state.calls[best]
    model = InfoVAE(data.n_pix, config.latent_size, config.hidden, config.dropout,
                    config.decoder_dropout)
    if load_checkpoint(checkpoint_path(state_dir, config.latent_size), model,
                       progress) != best:
        if progress:
            progress(f"latent {config.latent_size:02d}: retraining call {best + 1} "
                     f"(lambda {record['lambda']:.3g}); its checkpoint is missing or "
                     "was discarded")
        result = fit(*training_tensors(data, config.sigma_floor),
                     config.fit_config(record["lambda"]), progress)
        model = result.model
        if not np.isclose(result.objective, record["objective"], rtol=1e-6) and progress:
            progress(f"latent {config.latent_size:02d}: retrained objective "
                     f"{result.objective} differs from the recorded {record['objective']}")
    model.eval()
    return model, record
