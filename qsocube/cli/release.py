"""`qsocube release`: the whole pipeline for one profile (what `make product` runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from qsocube.cli import options
from qsocube.core.defaults import DEFAULT_PROFILE, load_profiles
from qsocube.core.progress import say


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default=DEFAULT_PROFILE, choices=sorted(load_profiles()),
                        help="size of the release (see qsocube/core/profiles.toml)")
    parser.add_argument("--out", type=Path, help="release folder (default products/<profile>)")
    parser.add_argument("--spectra", type=Path, help="use real spec-lite files instead of a "
                        "simulated survey")
    parser.add_argument("--catalog", type=Path, help="DR16Q_v4.fits to go with --spectra")
    parser.add_argument("--calls", type=options.integer(1),
                        help="search calls per latent size (override)")
    parser.add_argument("--max-epochs", type=options.integer(1),
                        help="maximum epochs per call (override)")


def run(args: argparse.Namespace) -> int:
    from qsocube.pipeline import run_release

    overrides = {k: v for k, v in (("n_calls", args.calls), ("max_epochs", args.max_epochs))
                 if v is not None}
    run_release(args.profile, args.out or Path("products") / args.profile, overrides=overrides,
                spectra=args.spectra, catalog=args.catalog, report=say)
    return 0
