"""Options shared by several commands: one name and one meaning each.

``--batch-size``: items per batch or partition; ``--processes N``: local processes (1: in
this process); ``--workers N``: workers of a Dask LocalCluster on this machine;
``--scheduler ADDRESS``: an existing Dask scheduler; ``--min-covered-fraction``: the
minimum fraction of valid grid pixels. Checks raise UsageError (one line, exit 2).
"""

from __future__ import annotations

import argparse
import sys

from qsocube.core.errors import UsageError
from qsocube.core.preprocess import METHOD_ALIASES


def add_processes(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--processes", type=int, default=None, metavar="N",
                        help=f"local processes that {what} (default: the cores available, at "
                             "most 8; 1 = in this process)")


def add_cluster(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help=f"{what} on a local Dask cluster (LocalCluster) of N worker "
                             "processes (needs the scale extra)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help=f"{what} on the existing Dask cluster at ADDRESS (e.g. "
                             "tcp://10.0.0.5:8786); its workers must see the files at the "
                             "same paths (needs the scale extra)")


def at_least(value: int | float | None, minimum: int | float, option: str) -> None:
    if value is not None and value < minimum:
        raise UsageError(f"{option} must be at least {minimum}")


def fraction(value: float, option: str) -> None:
    if not 0 <= value <= 1:
        raise UsageError(f"{option} must be between 0 and 1")


def method(name: str) -> str:
    """argparse type of --method: the current name, with a one-line warning for an alias."""
    if name in METHOD_ALIASES:
        print(f"qsocube: --method {name} is deprecated; it is now called "
              f"'{METHOD_ALIASES[name]}'", file=sys.stderr)
        return METHOD_ALIASES[name]
    return name
