"""Bayesian search over log10(lambda) for one latent size, checkpointed after every call.

The state (see ``state.py``) holds the search's identity (cube checksum and every setting
but the number of calls) and one record per call. On resume the records are replayed
through the same ask/tell sequence, so the optimizer ends in the state an uninterrupted
run would have reached, and the search goes on at the next call. Raising the number of
calls later extends the same search. ``Search`` separates asking from telling so that
``pipeline`` can train calls of different latent sizes in parallel processes.

Every call trains from the same initial weights and data order (seeded by the latent size
and the release seed, not by the call), so objectives differ only through lambda.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from builder.train.data import SIGMA_FLOOR, CubeData, cap_weights
from builder.train.fit import FitConfig, Progress, fit
from builder.train.model import InfoVAE
from builder.train.state import (
    SearchState,
    call_weights_path,
    checkpoint_path,
    load_checkpoint,
    load_state,
    remove_call_weights,
    save_checkpoint,
    save_state,
)

STATE_VERSION = 1
# Wide on purpose: per spectrum the weighted reconstruction term is ~n_pix / 2 at chi2 = 1
# and the MMD term at most 2 L, so lambda below ~10 leaves the MMD negligible while 1e3-1e4
# lets it dominate; lambda < 1 makes its weight (lambda - 1) negative, the seed's optimum
# (5-9 under its own scaling) sits inside. The search sees all three regimes.
LOG10_LAMBDA_RANGE = (-1.0, 4.0)
OBJECTIVE_DEFINITION = (
    "validation negative ELBO per spectrum of the model at its best epoch (lowest validation "
    "loss; early stopping): mean over validation spectra (split == 1) of "
    "sum_pixels 0.5 * w_cap * (x - x_hat)^2 + KL(q(z|x) || N(0, I)), in eval mode (no "
    "dropout) with x_hat decoded from one draw z ~ q(z|x) from a fixed-seed generator; "
    "w_cap = w / (1 + w * (0.02 * max(|x|, 1))^2) with x = flux / norm, w = ivar * norm^2 "
    "(0 where mask != 0): a 2% variance floor. This is the "
    "loss without its lambda-weighted MMD term, so models with different lambda compare "
    "on equal terms; history/val_loss adds (lambda + alpha - 1) * mmd - alpha * kl to it.")


@dataclass(frozen=True)
class SearchConfig:
    latent_size: int
    n_calls: int
    max_epochs: int
    batch_size: int = 256
    seed: int = 0
    hidden: tuple[int, ...] = (256, 128)
    alpha: float = 0.0
    dropout: float = 0.2
    decoder_dropout: float | None = None  # None: the same as the encoder's
    lr: float = 1e-3
    patience: int = 5
    lr_patience: int = 2
    sigma_floor: float = SIGMA_FLOOR
    log10_lambda_range: tuple[float, float] = LOG10_LAMBDA_RANGE
    # Space-filling (Latin hypercube) calls before the GP guides the search; fixed rather
    # than derived from n_calls so that raising n_calls extends a search instead of
    # restarting it. With n_calls <= 4 every call is one of these points.
    n_initial_points: int = 4

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SearchConfig:
        fields = json.loads(text)
        fields["hidden"] = tuple(fields["hidden"])
        fields["log10_lambda_range"] = tuple(fields["log10_lambda_range"])
        return cls(**fields)

    def identity(self, cube_sha256: str) -> dict:
        """What makes two searches the same search (the number of calls only extends it)."""
        settings = {**asdict(self), "hidden": list(self.hidden),
                    "log10_lambda_range": list(self.log10_lambda_range)}
        settings.pop("n_calls")
        return {"state_version": STATE_VERSION, "cube_sha256": cube_sha256, **settings}

    def budget(self, cube_sha256: str) -> dict:
        """The identity plus the number of calls: what a finished write-back was made with."""
        return {**self.identity(cube_sha256), "n_calls": self.n_calls}

    def fit_config(self, lam: float) -> FitConfig:
        return FitConfig(latent_size=self.latent_size, lam=lam, alpha=self.alpha,
                         hidden=self.hidden, dropout=self.dropout,
                         decoder_dropout=self.decoder_dropout, batch_size=self.batch_size,
                         max_epochs=self.max_epochs, lr=self.lr, patience=self.patience,
                         lr_patience=self.lr_patience, seed=self.seed * 1000 + self.latent_size)


def make_optimizer(config: SearchConfig):
    from skopt import Optimizer
    from skopt.space import Real

    low, high = config.log10_lambda_range
    return Optimizer([Real(low, high, name="log10_lambda")], base_estimator="GP",
                     n_initial_points=config.n_initial_points, initial_point_generator="lhs",
                     acq_func="gp_hedge", random_state=config.seed * 1000 + config.latent_size)


def _one_blas_thread():
    from threadpoolctl import threadpool_limits

    # The GP's many tiny BLAS calls run ~3x slower with two OpenBLAS threads than with one
    # (and far worse on a busy machine); torch keeps its own thread setting.
    return threadpool_limits(limits=1, user_api="blas")


class Search:
    """One latent size's search: its state, its optimizer, and the best call's weights."""

    def __init__(self, config: SearchConfig, state_dir: Path, cube_sha256: str,
                 progress: Progress | None = None) -> None:
        self.config, self.state_dir, self.progress = config, Path(state_dir), progress
        self.state = load_state(self.state_dir, config.identity(cube_sha256), progress)
        remove_call_weights(self.state_dir, config.latent_size)
        self.in_flight = False
        with _one_blas_thread():
            self.optimizer = make_optimizer(config)
            for record in self.state.calls[:config.n_calls]:
                asked = self.optimizer.ask()[0]
                if not math.isclose(asked, record["log10_lambda"], abs_tol=1e-9) and progress:
                    progress(f"latent {config.latent_size:02d}: replayed call {record['call']} "
                             "differs from the optimizer's proposal; using the record")
                self.optimizer.tell([record["log10_lambda"]], record["told"])

    @property
    def remaining(self) -> int:
        return max(self.config.n_calls - len(self.state.calls), 0)

    def ask(self) -> tuple[int, float]:
        """(call index, log10 lambda) of the next call; one call at a time per search."""
        self.in_flight = True
        with _one_blas_thread():
            return len(self.state.calls), float(self.optimizer.ask()[0])

    def tell(self, summary: dict, weights: Path) -> dict:
        """Record a finished call; its weights become the checkpoint if it is the best."""
        objectives = [c["told"] for c in self.state.calls]
        # skopt needs a number: a failed call is told twice the worst objective so far
        told = summary["objective"] if summary["objective"] is not None else (
            2 * max(objectives) if objectives else 1e12)
        record = {**summary, "told": told}
        best = self.state.best_index(self.config.n_calls)
        if record["objective"] is not None and (
                best is None or record["objective"] < self.state.calls[best]["objective"]):
            os.replace(weights, checkpoint_path(self.state_dir, self.config.latent_size))
        else:
            weights.unlink(missing_ok=True)
        self.state.calls.append(record)
        with _one_blas_thread():
            self.optimizer.tell([record["log10_lambda"]], told)
        save_state(self.state_dir, self.state)
        self.in_flight = False
        if self.progress:
            self.progress(f"{call_label(self.config, record['call'], record['lambda'])}"
                          f"objective {record['objective']}, {record['epochs']} epochs "
                          f"({record['stopped']}), {record['seconds']:.1f} s, "
                          f"{record['spectra_per_second']:,.0f} spectra/s")
        return record


def call_label(config: SearchConfig, call: int, lam: float) -> str:
    return f"latent {config.latent_size:02d} call {call + 1}/{config.n_calls} lambda {lam:.3g}: "


def training_tensors(data: CubeData, sigma_floor: float) -> tuple[torch.Tensor, ...]:
    """(x, w_cap) of the training split, then of the validation split; never the test split."""
    train, val = data.rows(0), data.rows(1)
    w = cap_weights(data.w, data.x, sigma_floor)
    return tuple(torch.from_numpy(a) for a in (data.x[train], w[train], data.x[val], w[val]))


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


def run_search(data: CubeData, config: SearchConfig, state_dir: Path, cube_sha256: str,
               progress: Progress | None = None) -> SearchState:
    """Run (or resume) one search in this process until it has ``n_calls`` calls."""
    search = Search(config, state_dir, cube_sha256, progress)
    tensors = training_tensors(data, config.sigma_floor) if search.remaining else ()
    while search.remaining:
        call, log10_lambda = search.ask()
        search.tell(*train_call(tensors, config, call, log10_lambda, Path(state_dir), progress))
    return search.state


def chosen_model(data: CubeData, config: SearchConfig, state: SearchState, state_dir: Path,
                 progress: Progress | None = None) -> tuple[InfoVAE, dict]:
    """The best call's model: from the checkpoint, or retrained (same seeds, same weights)."""
    best = state.best_index(config.n_calls)
    if best is None:
        raise RuntimeError(f"latent {config.latent_size:02d}: every search call diverged")
    record = state.calls[best]
    model = InfoVAE(data.n_pix, config.latent_size, config.hidden, config.dropout,
                    config.decoder_dropout)
    if load_checkpoint(checkpoint_path(state_dir, config.latent_size), model) != best:
        if progress:
            progress(f"latent {config.latent_size:02d}: retraining call {best + 1} "
                     f"(lambda {record['lambda']:.3g}); its checkpoint is missing")
        result = fit(*training_tensors(data, config.sigma_floor),
                     config.fit_config(record["lambda"]), progress)
        model = result.model
        if not np.isclose(result.objective, record["objective"], rtol=1e-6) and progress:
            progress(f"latent {config.latent_size:02d}: retrained objective "
                     f"{result.objective} differs from the recorded {record['objective']}")
    model.eval()
    return model, record
