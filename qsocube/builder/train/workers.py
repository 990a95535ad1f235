"""Where the search calls train: in this process, a local process pool, or a Dask cluster.

``run_searches`` drives every latent size's ``Search`` (the optimizers and the state stay
in this process) and hands the calls to workers (``qsocube.core.parallel``'s local pool or
Dask executor, kept busy by its ``keep_busy``): one torch thread each, so the results
are those of the serial path however many workers run. A pool worker loads the cube's
training tensors once and writes a call's weights into the state folder; a Dask worker
needs the cube at the same path (checked by sha256) and returns the weights as bytes, so
it never writes into this run's (or a later run's) state. The functions a worker runs are
module-level here so that spawn and Dask can import them by name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from pathlib import Path

import torch

from qsocube.builder.train.calls import train_call, training_tensors
from qsocube.builder.train.config import SearchConfig
from qsocube.builder.train.data import CubeData, load_cube, trained_on_sha256
from qsocube.builder.train.fit import Progress, set_threads
from qsocube.builder.train.search import Search, run_search
from qsocube.builder.train.state import SearchState, call_weights_path
from qsocube.core.atomic import write_bytes_atomic
from qsocube.core.cluster import dask_client, wants_dask
from qsocube.core.errors import CubeError
from qsocube.core.parallel import cluster_slots, dask_pool, keep_busy, local_pool
from qsocube.core.progress import say


def run_searches(cube_path: Path, data: CubeData | None, configs: list[SearchConfig],
                 state_dir: Path, cube_sha: str, progress: Progress, processes: int = 1,
                 scheduler: str | None = None, workers: int | None = None
                 ) -> tuple[dict[int, SearchState], int]:
    """Every search to its budget; (states by latent size, the number of worker processes).

    ``processes`` local processes train the calls, or with ``scheduler`` (an address) or
    ``workers`` > 1 (a LocalCluster) the processes of a Dask cluster; one process: here.
    """
    on_dask = wants_dask(scheduler, workers)
    if not configs:
        return {}, 0 if on_dask else processes
    if not on_dask and processes <= 1:
        set_threads(1)
        return {c.latent_size: run_search(data, c, state_dir, cube_sha, progress)
                for c in configs}, 1
    searches = {c.latent_size: Search(c, state_dir, cube_sha, progress) for c in configs}
    if on_dask:
        slots = _run_on_dask(cube_path, cube_sha, searches, state_dir, scheduler, workers,
                             progress)
        return {size: search.state for size, search in searches.items()}, slots
    # Workers report epochs with say (stderr): a caller's progress callable may not cross
    # processes.
    with local_pool(processes, initializer=_init_worker,
                    initargs=(str(cube_path), os.getpid())) as pool:
        _schedule(lambda search, call, x: pool.submit(
            _worker_call, search.config.to_json(), call, x, str(state_dir)),
            searches, processes, state_dir)
    return {size: search.state for size, search in searches.items()}, processes


def _run_on_dask(cube_path: Path, cube_sha: str, searches: dict[int, Search], state_dir: Path,
                 scheduler: str | None, workers: int | None, progress: Progress) -> int:
    """The process pool's schedule on a Dask cluster; returns its number of worker processes.

    A call's weights come back as bytes and are written here, so a worker needs the cube
    but not the state folder, and a worker that outlives this run (a task cannot be
    stopped mid-call) can never write into a later run's state.
    """
    with dask_client(scheduler, workers) as client:
        # one call at a time per worker process (see _dask_call), however many threads
        slots = cluster_slots(client)
        progress(f"search calls on the Dask cluster at {client.scheduler.address} "
                 f"({slots} worker process(es))")
        try:
            with dask_pool(client) as executor:
                _schedule(lambda search, call, x: executor.submit(
                    _dask_call, str(cube_path), cube_sha, search.config.to_json(), call, x),
                    searches, slots, state_dir)
        finally:
            if scheduler:  # a long-lived cluster: free the workers' cube copies
                with contextlib.suppress(Exception):
                    client.run(_forget_cube)
    return slots


def _schedule(submit, searches: dict[int, Search], slots: int, state_dir: Path) -> None:
    """Keep ``slots`` calls running; ``submit(search, call, log10_lambda)`` -> a future."""
    # Calls, not latent sizes, are the unit of work: every search has at most its k calls
    # in flight (one batch of its optimizer), and the search with the most calls left to
    # start goes first, so every worker stays busy until the last calls. A call's result
    # depends only on its search's history, never on this schedule.
    def next_call() -> tuple[Search, int, float] | None:
        ready = [s for s in searches.values() if s.can_ask]
        if not ready:
            return None
        search = min(ready, key=lambda s: (-(s.remaining - s.in_flight), s.config.latent_size))
        return (search, *search.ask())

    def done(task: tuple[Search, int, float], result: tuple[dict, str | bytes]) -> None:
        search, summary, weights = task[0], *result
        search.tell(summary, _weights_file(state_dir, search.config, summary["call"], weights))

    keep_busy(lambda task: submit(*task), slots, next_call, done)


def _weights_file(state_dir: Path, config: SearchConfig, call: int, weights: str | bytes
                  ) -> Path:
    """A call's weights file: written by a pool worker (a path) or here (bytes from Dask)."""
    if isinstance(weights, str):
        return Path(weights)
    path = call_weights_path(state_dir, config.latent_size, call)
    write_bytes_atomic(path, weights)
    return path


_WORKER: dict = {}
# torch's thread setting and its global generator (dropout) belong to the process: a Dask
# worker with several threads still trains one call at a time, or results would vary.
_WORKER_LOCK = threading.Lock()


def _tensors(cube_path: str, sigma_floor: float, cube_sha: str | None = None
             ) -> tuple[torch.Tensor, ...]:
    """The cube's training tensors, loaded once per worker process (per cube and floor)."""
    if _WORKER.get("cube") != (cube_path, cube_sha):
        _forget_cube()
        if cube_sha is not None and trained_on_sha256(cube_path) != cube_sha:
            raise CubeError(f"{cube_path}: differs on this worker from the cube being "
                            "trained; Dask workers need the same cube at the same path")
        _WORKER.update(cube=(cube_path, cube_sha), data=load_cube(cube_path))
    key = ("tensors", sigma_floor)
    if key not in _WORKER:
        _WORKER[key] = training_tensors(_WORKER["data"], sigma_floor)
    return _WORKER[key]


def _forget_cube() -> None:
    _WORKER.clear()


def _init_worker(cube_path: str, parent: int) -> None:
    """Per worker process: one torch thread, the cube's training tensors loaded once."""
    _exit_with_parent(parent)
    set_threads(1)
    _WORKER.update(cube=(cube_path, None), data=load_cube(cube_path))


def _worker_call(config: str, call: int, log10_lambda: float, state_dir: str
                 ) -> tuple[dict, str]:
    search_config = SearchConfig.from_json(config)
    tensors = _tensors(_WORKER["cube"][0], search_config.sigma_floor)
    summary, weights = train_call(tensors, search_config, call, log10_lambda,
                                  Path(state_dir), say)
    return summary, str(weights)


def _dask_call(cube_path: str, cube_sha: str, config: str, call: int, log10_lambda: float
               ) -> tuple[dict, bytes]:
    """On a Dask worker: ``_worker_call``, with the weights returned as bytes."""
    search_config = SearchConfig.from_json(config)
    with _WORKER_LOCK:
        set_threads(1)
        tensors = _tensors(cube_path, search_config.sigma_floor, cube_sha)
        with tempfile.TemporaryDirectory(prefix="qsocube-call-") as folder:
            summary, weights = train_call(tensors, search_config, call, log10_lambda,
                                          Path(folder), say)
            return summary, weights.read_bytes()


def _exit_with_parent(parent: int) -> None:
    """A killed parent must not leave searches running (and writing state) behind it.

    The pool's processes are children of the fork server, which exits with the parent: so a
    worker stops when ``parent`` is gone or when its own parent (the fork server) changes.
    """
    started_under = os.getppid()

    def alive() -> bool:
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return os.getppid() == started_under

    def watch() -> None:
        while alive():
            time.sleep(1.0)
        os._exit(1)  # state files are written atomically; a stale .partial is cleaned later

    threading.Thread(target=watch, daemon=True).start()
