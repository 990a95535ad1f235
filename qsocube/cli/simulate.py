"""`qsocube simulate`: write a simulated DR16Q-like survey in the real SDSS file formats."""

from __future__ import annotations

import argparse
from pathlib import Path

from qsocube.cli import options
from qsocube.core.errors import UsageError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=options.integer(1), required=True,
                        help="number of quasars (catalogue rows)")
    parser.add_argument("--seed", type=options.integer(0), default=0,
                        help="random seed (same seed, same files)")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for spectra/, DR16Q_v4.fits, truth.fits, SURVEY.json")
    parser.add_argument("--missing-spectrum-fraction", type=options.number(0, 1, high_open=True),
                        default=0.01,
                        help="fraction of catalogue rows written without a spectrum file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing survey")


def run(args: argparse.Namespace) -> int:
    from qsocube.builder.simulate import simulate_survey

    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"{args.out}: exists and is not a folder")
    simulate_survey(args.n, args.seed, args.out, overwrite=args.overwrite,
                    missing_spectrum_fraction=args.missing_spectrum_fraction)
    return 0
