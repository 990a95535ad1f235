"""`qsocube build`: spectra (+ catalogue) -> cube."""

from __future__ import annotations

import argparse
from pathlib import Path

from qsocube.cli import options
from qsocube.core import defaults
from qsocube.core.errors import UsageError
from qsocube.core.grid import DEFAULT_GRID
from qsocube.core.preprocess import METHODS


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spectra", nargs="+", required=True,
                        help="spec-*.fits files, folders of them, or glob patterns")
    parser.add_argument("--catalog", type=Path, help="DR16Q_v4.fits (optional; without it "
                        "metadata come from each spectrum's HDU 2)")
    parser.add_argument("--truth", type=Path, help="truth table of a simulated survey")
    parser.add_argument("--out", type=Path, required=True, help="cube to write (.h5)")
    parser.add_argument("--min-snr", type=options.number(), default=defaults.MIN_SNR,
                        help="keep SN_MEDIAN_ALL >= this (the study's snr10 sample; 0 keeps "
                             "all)")
    parser.add_argument("--coverage", choices=("partial", "full"), default="partial",
                        help="'full' drops spectra not covering the whole grid (the study's "
                             "rule)")
    parser.add_argument("--min-covered-fraction", type=options.fraction_type,
                        default=defaults.MIN_COVERED_FRACTION,
                        help="minimum fraction of valid grid pixels (partial policy)")
    parser.add_argument("--method", type=options.method, choices=METHODS, default="rebin",
                        help="flux-conserving rebin (default) or the study's interpolation "
                             "('seed' is a deprecated name for 'study')")
    parser.add_argument("--n-pix", type=options.integer(2), default=DEFAULT_GRID.n_pix,
                        help="pixels of the grid (at least 2)")
    parser.add_argument("--wave-min", type=options.positive, default=DEFAULT_GRID.wave_min,
                        help="grid start, Angstrom (below --wave-max)")
    parser.add_argument("--wave-max", type=options.positive, default=DEFAULT_GRID.wave_max,
                        help="grid end, Angstrom")
    parser.add_argument("--source", default=None, help="'SDSS' or 'simulated' (default: "
                        "simulated if a truth table is given)")
    parser.add_argument("--batch-size", type=options.integer(1), default=defaults.BATCH_SIZE,
                        help="files per partition (bounds memory; the unit of parallel work)")
    options.add_processes(parser, "read and resample")
    options.add_cluster(parser, "read and resample")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing cube")


def run(args: argparse.Namespace) -> int:
    from qsocube.builder.build import BuildConfig, build_cube
    from qsocube.core.parallel import default_processes

    if args.wave_min >= args.wave_max:
        raise UsageError(f"--wave-min {args.wave_min:g} must be below --wave-max "
                         f"{args.wave_max:g}")
    for option, path in (("--catalog", args.catalog), ("--truth", args.truth)):
        if path is not None and not path.is_file():
            raise UsageError(f"{option} {path}: no such file")
    config = BuildConfig(min_snr=args.min_snr, coverage=args.coverage,
                         min_covered_fraction=args.min_covered_fraction, method=args.method,
                         n_pix=args.n_pix, wave_min=args.wave_min, wave_max=args.wave_max,
                         batch_size=args.batch_size)
    source = args.source or ("simulated" if args.truth else "SDSS")
    build_cube(args.spectra, args.out, catalog_path=args.catalog, truth_path=args.truth,
               config=config, source=source, overwrite=args.overwrite,
               scheduler=args.scheduler, workers=args.workers,
               processes=args.processes or default_processes())
    return 0
