"""Options shared by several commands: one name and one meaning each.

``--batch-size``: items per batch or partition; ``--processes N``: local processes (1: in
this process); ``--workers N``: workers of a Dask LocalCluster on this machine;
``--scheduler ADDRESS``: an existing Dask scheduler; ``--min-covered-fraction``: the
minimum fraction of valid grid pixels.

Values are checked when the command line is parsed, before any work: the argparse types
below (``integer(minimum)``, ``number(...)``, ``fraction``) turn a bad value into one line
``qsocube CMD: error: argument --OPTION: ...`` and exit code 2. Checks that involve two
options raise UsageError (one line, exit 2) at the start of ``run``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable

from qsocube.core.preprocess import METHOD_ALIASES


def integer(minimum: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer, at least ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    parse.__name__ = "integer"
    return parse


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False) -> Callable[[str], float]:
    """argparse type: a finite number in [low, high] (an open end with ``*_open``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        below = low is not None and (value <= low if low_open else value < low)
        above = high is not None and (value >= high if high_open else value > high)
        if below or above:
            left = "(" if low_open else "["
            right = ")" if high_open else "]"
            span = f"{left}{'-inf' if low is None else f'{low:g}'}, " \
                   f"{'inf' if high is None else f'{high:g}'}{right}"
            raise argparse.ArgumentTypeError(f"must be in {span}, got {value:g}")
        return value
    parse.__name__ = "number"
    return parse


fraction_type = number(0, 1)
positive = number(0, low_open=True)


def add_processes(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--processes", type=integer(1), default=None, metavar="N",
                        help=f"local processes that {what} (default: the cores available, at "
                             "most 8; 1 = in this process)")


def add_cluster(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--workers", type=integer(1), default=None, metavar="N",
                        help=f"{what} on a local Dask cluster (LocalCluster) of N worker "
                             "processes (needs the scale extra)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help=f"{what} on the existing Dask cluster at ADDRESS (e.g. "
                             "tcp://10.0.0.5:8786); its workers must see the files at the "
                             "same paths (needs the scale extra)")


def method(name: str) -> str:
    """argparse type of --method: the current name, with a one-line warning for an alias."""
    if name in METHOD_ALIASES:
        print(f"qsocube: --method {name} is deprecated; it is now called "
              f"'{METHOD_ALIASES[name]}'", file=sys.stderr)
        return METHOD_ALIASES[name]
    return name
