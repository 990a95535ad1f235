"""Bayesian search over log10(lambda) for one latent size, checkpointed after every call.

The state (see ``state.py``) holds the search's identity (cube checksum and every setting
but the number of calls) and one record per call, in call order. On resume the records are
replayed through the same ask/tell sequence, so the optimizer ends in the state an
uninterrupted run would have reached, and the search goes on at the next call. Raising the
number of calls later extends the same search. ``Search`` separates asking from telling so
that ``pipeline`` can train calls in parallel processes or on a Dask cluster.

``parallel_calls`` (k) asks k lambdas at a time with skopt's constant liar
(``ask(n_points=k, strategy="cl_min")``) and tells the k results together, so k calls of
one latent size can train at once. k > 1 changes which lambdas are tried (the optimizer
sees results in batches), so its results differ from k = 1 by design; for a given k they
never depend on the number of workers or on which call finishes first.

Every call trains from the same initial weights and data order (seeded by the latent size
and the release seed, not by the call), so objectives differ only through lambda.
"""

from __future__ import annotations

import bisect
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
    # Calls asked (and told) together per latent size; 1 is the plain sequential search.
    parallel_calls: int = 1

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
        if self.parallel_calls == 1:  # states and cubes made before the option stay valid
            settings.pop("parallel_calls")
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
    """One latent size's search: its state, its optimizer, and the best call's weights.

    Batch b holds calls b*k .. b*k+k-1 (k = ``parallel_calls``). Its k lambdas are asked
    together and told together, in call order, once all k are recorded; each call is
    recorded (and saved) as soon as it finishes, in any order. A run stopped mid-batch
    resumes by replaying the full batches and asking the partial one again: the optimizer
    is in the same state, so it proposes the same lambdas, and only the missing calls run.
    Batches are always asked whole, even when ``n_calls`` cuts the last one short, so that
    raising ``n_calls`` later extends the search exactly. With k = 1 this is the sequential
    ask/tell loop of a plain Bayesian search.
    """

    def __init__(self, config: SearchConfig, state_dir: Path, cube_sha256: str,
                 progress: Progress | None = None) -> None:
        if config.parallel_calls < 1:
            raise ValueError("parallel_calls must be >= 1")
        self.config, self.state_dir, self.progress = config, Path(state_dir), progress
        self.state = load_state(self.state_dir, config.identity(cube_sha256), progress)
        self.state.calls.sort(key=lambda c: c["call"])
        remove_call_weights(self.state_dir, config.latent_size)
        self.batch_start, self.points = 0, []  # the current batch: first call, k lambdas
        self.started: set[int] = set()
        with _one_blas_thread():
            self.optimizer = make_optimizer(config)
            self._advance(0)

    @property
    def k(self) -> int:
        return self.config.parallel_calls

    def _recorded(self) -> dict[int, dict]:
        return {c["call"]: c for c in self.state.calls}

    @property
    def remaining(self) -> int:
        """Calls within the budget not yet recorded (running ones included)."""
        done = sum(1 for c in self.state.calls if c["call"] < self.config.n_calls)
        return max(self.config.n_calls - done, 0)

    @property
    def in_flight(self) -> int:
        return len(self.started)

    def _startable(self) -> list[int]:
        recorded = self._recorded()
        end = min(self.batch_start + len(self.points), self.config.n_calls)
        return [c for c in range(self.batch_start, end)
                if c not in recorded and c not in self.started]

    @property
    def can_ask(self) -> bool:
        return bool(self._startable())

    def ask(self) -> tuple[int, float]:
        """(call index, log10 lambda) of a call that may start now (see ``can_ask``)."""
        call = self._startable()[0]
        self.started.add(call)
        return call, self.points[call - self.batch_start]

    def _ask_batch(self) -> list[float]:
        if self.k == 1:
            return [float(self.optimizer.ask()[0])]
        points = self.optimizer.ask(n_points=self.k, strategy="cl_min")
        return [float(point[0]) for point in points]

    def _tell_batch(self, records: list[dict]) -> None:
        if self.k == 1:
            self.optimizer.tell([records[0]["log10_lambda"]], records[0]["told"])
        else:
            self.optimizer.tell([[r["log10_lambda"]] for r in records],
                                [r["told"] for r in records])

    def _advance(self, start: int, points: list[float] | None = None) -> None:
        """Tell every fully recorded batch from ``start`` on (``points``: that batch's
        lambdas if already asked), then ask the first incomplete one within the budget."""
        recorded, n_calls = self._recorded(), self.config.n_calls
        self.batch_start, self.points = start, []
        while start < n_calls:
            members = range(start, start + self.k)
            if points is None:
                points = self._ask_batch()
                for call, asked in zip(members, points, strict=True):
                    if call in recorded and not math.isclose(
                            asked, recorded[call]["log10_lambda"], abs_tol=1e-9
                    ) and self.progress:
                        self.progress(f"latent {self.config.latent_size:02d}: replayed call "
                                      f"{call} differs from the optimizer's proposal; using "
                                      "the record")
            # a recorded call keeps its recorded lambda
            points = [recorded[c]["log10_lambda"] if c in recorded else x
                      for c, x in zip(members, points, strict=True)]
            if not all(c in recorded for c in members):
                self.batch_start, self.points = start, points
                return
            self._tell_batch([recorded[c] for c in members])
            start, points = start + self.k, None
        self.batch_start = start

    def tell(self, summary: dict, weights: Path) -> dict:
        """Record a finished call; its weights become the checkpoint if it is the best."""
        call, n_calls = summary["call"], self.config.n_calls
        batch_start = call - call % self.k
        # skopt needs a number: a failed call is told twice the worst objective of the
        # batches before its own (never of its batch-mates: they may finish in any order)
        earlier = [c["told"] for c in self.state.calls if c["call"] < batch_start]
        told = summary["objective"] if summary["objective"] is not None else (
            2 * max(earlier) if earlier else 1e12)
        record = {**summary, "told": told}
        best = min(((c["objective"], c["call"]) for c in self.state.calls
                    if c["objective"] is not None and c["call"] < n_calls), default=None)
        if record["objective"] is not None and (
                best is None or (record["objective"], call) < best):
            os.replace(weights, checkpoint_path(self.state_dir, self.config.latent_size))
        else:
            weights.unlink(missing_ok=True)
        bisect.insort(self.state.calls, record, key=lambda c: c["call"])
        save_state(self.state_dir, self.state)
        self.started.discard(call)
        recorded = self._recorded()
        if all(c in recorded for c in range(batch_start, batch_start + self.k)):
            with _one_blas_thread():
                self._advance(batch_start, self.points)
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
    while search.can_ask:
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
