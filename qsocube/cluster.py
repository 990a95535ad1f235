"""One way to get a Dask client, for every stage that can scale out (optional: `scale` extra).

An address connects to an existing scheduler; otherwise a LocalCluster of ``workers``
single-threaded processes starts on the loopback interface.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from qsocube.cli import UsageError


def require_dask(option: str) -> None:
    """A one-line UsageError if dask.distributed is not installed."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise UsageError(f"{option} needs dask: pip install 'qsocube[scale]' "
                         "(or dask[distributed])") from None


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int | None) -> Iterator[Any]:
    """A client for the scheduler at ``scheduler``, or a LocalCluster of ``workers`` processes."""
    require_dask("--scheduler/--workers")
    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler)
        except OSError as exc:  # no scheduler there, or a timeout: one line, exit 2
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UsageError(f"--scheduler {scheduler}: cannot connect ({first})") from None
        with client:
            yield client
        return
    cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                           processes=True, host="127.0.0.1", dashboard_address=None)
    with cluster, Client(cluster) as client:
        yield client
