"""Run partitions serially or on a Dask cluster, yielding results in submission order.

At most ``window`` partitions are in flight, so memory is bounded by the partition size
times the window, not by the survey size. HDF5 has one writer: results come back here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any


def ordered_map(func: Callable[..., Any], items: Sequence[Any], *args: Any,
                client: Any | None = None, window: int | None = None) -> Iterator[Any]:
    """``func(item, *args)`` for each item, in order; on ``client`` when one is given."""
    if client is None:
        for item in items:
            yield func(item, *args)
        return
    # a table argument (the catalogue's S/N by spectrum) goes to every worker once, not with
    # every task; wrapped in a list because scatter() of a bare dict makes a future per key
    shared = [client.scatter([arg], broadcast=True)[0] if isinstance(arg, dict) else arg
              for arg in args]
    window = window or 2 * max(len(client.scheduler_info()["workers"]), 1)
    pending: deque = deque()
    for item in items:
        pending.append(client.submit(func, item, *shared, pure=False))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
