"""The one way to get a Dask client, for every stage that can scale out (the `scale` extra).

An address connects to an existing scheduler; otherwise a LocalCluster of ``workers``
single-threaded processes starts on the loopback interface. Dask is imported only inside
these functions (``require_dask`` is the one check that it is installed), so the core and
everything that uses it stay importable without it; the import-linter contract that keeps
dask out of the core names this module as its one exception.

Options across commands: ``--scheduler ADDRESS`` is an existing Dask scheduler,
``--workers N`` the workers of a LocalCluster on this machine (N > 1: with one worker the
stage runs in this process instead; ``wants_dask``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from qsocube.core.errors import ClusterError

SCALE_HINT = "pip install 'qsocube[scale]' (or dask[distributed])"


def require_dask(option: str) -> None:
    """ClusterError (one line naming ``option``) if dask.distributed is not installed."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ClusterError(f"{option} needs dask: {SCALE_HINT}") from None


def wants_dask(scheduler: str | None, workers: int | None) -> bool:
    """True if the options ask for a cluster: a scheduler address, or more than one worker."""
    return bool(scheduler) or (workers or 0) > 1


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int | None) -> Iterator[Any]:
    """A client for the scheduler at ``scheduler``, or a LocalCluster of ``workers`` processes
    (default: one per core). ClusterError if dask is missing or the scheduler unreachable."""
    require_dask("--scheduler" if scheduler else "--workers")
    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler)
        except OSError as exc:  # no scheduler there, or a timeout: one line, exit 2
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ClusterError(f"--scheduler {scheduler}: cannot connect ({first})") from None
        with client:
            yield client
        return
    cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                           processes=True, host="127.0.0.1", dashboard_address=None)
    with cluster, Client(cluster) as client:
        yield client
