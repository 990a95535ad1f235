"""Map a function over partitions serially, on local processes or on a Dask cluster.

Results come back in submission order, so a stage's output does not depend on how it
was run. At most ``window`` partitions are in flight, so memory is bounded by the
partition size times the window, not by the survey size. HDF5 has one writer: the
results come back to the caller, which writes them.

Local processes are started with ``forkserver`` (never ``fork``: the caller may already
run onnxruntime or HDF5 threads). The shared arguments (a catalogue table, the grid,
the configuration) go to each process once, when it starts, not with every task.

This is the one home of process pools, thread pools and Dask task loops: ``ordered_map``
for partitions whose results come back in order (build, encode), ``threaded_map`` for
pieces of one in-memory batch (numpy and onnxruntime release the GIL), and
``local_pool``/``dask_pool`` with ``keep_busy`` for work whose next task depends on
finished ones (the lambda searches).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from typing import Any

MAX_DEFAULT_PROCESSES = 8
# imported once in the fork server, so each process starts without re-importing them
PRELOAD = ["numpy", "scipy.sparse", "h5py", "qsocube.core.preprocess", "qsocube.core.speclite"]


def available_cores() -> int:
    """Cores this process may run on (taskset/cgroup affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_processes() -> int:
    """Processes for local parallel reading: the cores this process may use, at most 8."""
    return max(1, min(available_cores(), MAX_DEFAULT_PROCESSES))


def processes_for(requested: int, partitions: int) -> int:
    """Local processes worth starting for ``partitions``: none beyond one per partition, and
    none at all (1: run here) for a single partition, where starting them costs more."""
    return max(1, min(requested, partitions)) if partitions > 1 else 1


def threaded_map(func: Callable[[Any], Any], items: Iterable[Any], threads: int) -> list[Any]:
    """``func(item)`` for each item on up to ``threads`` threads of this process, in order.

    For pieces of a batch whose work is numpy and onnxruntime calls, which release the GIL
    (one piece per core); with one thread or one item, here.
    """
    items = list(items)
    if threads <= 1 or len(items) <= 1:
        return [func(item) for item in items]
    with ThreadPoolExecutor(min(threads, len(items))) as pool:
        return list(pool.map(func, items))


def ordered_map(func: Callable[..., Any], items: Iterable[Any], *args: Any,
                client: Any | None = None, processes: int = 1, window: int | None = None
                ) -> Iterator[Any]:
    """``func(item, *args)`` for each item, in order.

    On ``client`` (a Dask client) when one is given, else on ``processes`` local
    processes when that is more than 1, else here. ``func`` must be importable (a
    module-level function) for the parallel paths.
    """
    if client is not None:
        yield from _dask_map(func, items, args, client, window)
    elif processes > 1:
        yield from _process_map(func, items, args, processes, window)
    else:
        for item in items:
            yield func(item, *args)


def _dask_map(func: Callable[..., Any], items: Iterable[Any], args: tuple, client: Any,
              window: int | None) -> Iterator[Any]:
    # a table argument (the catalogue's S/N by spectrum) goes to every worker once, not with
    # every task; wrapped in a list because scatter() of a bare dict makes a future per key
    shared = [client.scatter([arg], broadcast=True)[0] if isinstance(arg, dict) else arg
              for arg in args]
    window = window or 2 * max(len(client.scheduler_info()["workers"]), 1)
    pending: deque = deque()
    try:
        for item in items:
            pending.append(client.submit(func, item, *shared, pure=False))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:  # an error or an interrupt: the rest is not needed
        if pending:
            client.cancel(list(pending))


_TASK: tuple[Callable[..., Any], tuple] | None = None


def _install(func: Callable[..., Any], args: tuple) -> None:
    global _TASK
    _TASK = (func, args)


def _call(item: Any) -> Any:
    assert _TASK is not None, "worker process started without its task"
    func, args = _TASK
    return func(item, *args)


def _process_map(func: Callable[..., Any], items: Iterable[Any], args: tuple, processes: int,
                 window: int | None) -> Iterator[Any]:
    window = window or 2 * processes
    pending: deque[Future] = deque()
    with local_pool(processes, initializer=_install, initargs=(func, args)) as executor:
        for item in items:
            pending.append(executor.submit(_call, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


@contextlib.contextmanager
def local_pool(processes: int, initializer: Callable[..., None] | None = None,
               initargs: tuple = ()) -> Iterator[ProcessPoolExecutor]:
    """A pool of ``processes`` local processes (forkserver), each set up by ``initializer``.

    On an error or an interrupt, queued tasks are dropped and running ones stopped (their
    processes terminated): nothing they would still produce is wanted.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    executor = ProcessPoolExecutor(processes, mp_context=context, initializer=initializer,
                                   initargs=initargs)
    try:
        yield executor
    except BaseException:
        for process in list(getattr(executor, "_processes", {}).values()):
            process.terminate()
        executor.shutdown(wait=True, cancel_futures=True)
        raise
    executor.shutdown(wait=True)


def cluster_slots(client: Any) -> int:
    """Tasks a Dask cluster runs at once when each takes one worker process."""
    return max(len(client.nthreads()), 1)


@contextlib.contextmanager
def dask_pool(client: Any) -> Iterator[Executor]:
    """A concurrent.futures executor on a Dask client; on an error, what has not started is
    cancelled."""
    executor = client.get_executor(pure=False)
    try:
        yield executor
    except BaseException:
        executor.shutdown(wait=False)
        raise


def keep_busy(submit: Callable[[Any], Future], slots: int, next_task: Callable[[], Any],
              done: Callable[[Any, Any], None]) -> None:
    """Keep ``slots`` tasks running until ``next_task()`` has none (None) and all finished.

    ``submit(task)`` starts a task and returns its future; ``done(task, result)`` is called
    here, in this process, as each one finishes, and may make new tasks available.
    """
    running: dict[Future, Any] = {}
    while True:
        while len(running) < slots:
            task = next_task()
            if task is None:
                break
            running[submit(task)] = task
        if not running:
            return
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in finished:
            result = future.result()
            done(running.pop(future), result)
