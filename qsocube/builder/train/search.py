"""Bayesian search over log10(lambda) for one latent size, checkpointed after every call.

The state (see ``state.py``) holds the search's identity (cube checksum and every setting
but the number of calls) and one record per call, in call order. On resume the records are
replayed through the same ask/tell sequence, so the optimizer ends in the state an
uninterrupted run would have reached, and the search goes on at the next call. Raising the
number of calls later extends the same search. ``Search`` separates asking from telling so
that ``workers`` can train calls in parallel processes or on a Dask cluster. The settings
are ``config.SearchConfig``; training one call and recovering the chosen one, ``calls``.

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
import math
from pathlib import Path

from qsocube.builder.train.calls import chosen_model, train_call, training_tensors
from qsocube.builder.train.config import (
    LOG10_LAMBDA_RANGE,
    OBJECTIVE_DEFINITION,
    STATE_VERSION,
    SearchConfig,
    call_label,
)
from qsocube.builder.train.data import CubeData
from qsocube.builder.train.fit import Progress
from qsocube.builder.train.state import (
    SearchState,
    checkpoint_path,
    load_state,
    remove_call_weights,
    save_state,
)
from qsocube.core.atomic import fsync_and_replace

# Re-exported: callers (tests among them) import these from here; the settings live in
# config.py and one call's training in calls.py.
__all__ = ["LOG10_LAMBDA_RANGE", "OBJECTIVE_DEFINITION", "STATE_VERSION", "Search",
           "SearchConfig", "call_label", "chosen_model", "make_optimizer", "run_search",
           "train_call", "training_tensors"]


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
            fsync_and_replace(weights, checkpoint_path(self.state_dir, self.config.latent_size))
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


def run_search(data: CubeData, config: SearchConfig, state_dir: Path, cube_sha256: str,
               progress: Progress | None = None) -> SearchState:
    """Run (or resume) one search in this process until it has ``n_calls`` calls."""
    search = Search(config, state_dir, cube_sha256, progress)
    tensors = training_tensors(data, config.sigma_floor) if search.remaining else ()
    while search.can_ask:
        call, log10_lambda = search.ask()
        search.tell(*train_call(tensors, config, call, log10_lambda, Path(state_dir), progress))
    return search.state
