"""`qsocube build`: spectra (+ catalogue) -> cube."""

from __future__ import annotations

import argparse
from pathlib import Path

from qsocube.cli import UsageError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spectra", nargs="+", required=True,
                        help="spec-*.fits files, folders of them, or glob patterns")
    parser.add_argument("--catalog", type=Path, help="DR16Q_v4.fits (optional; without it "
                        "metadata come from each spectrum's HDU 2)")
    parser.add_argument("--truth", type=Path, help="truth table of a simulated survey")
    parser.add_argument("--out", type=Path, required=True, help="cube to write (.h5)")
    parser.add_argument("--min-snr", type=float, default=10.0,
                        help="keep SN_MEDIAN_ALL >= this (the seed's snr10 sample; 0 keeps all)")
    parser.add_argument("--coverage", choices=("partial", "full"), default="partial",
                        help="'full' drops spectra not covering the whole grid (the seed's rule)")
    parser.add_argument("--min-covered-fraction", type=float, default=0.8,
                        help="minimum fraction of valid grid pixels (partial policy)")
    parser.add_argument("--method", choices=("rebin", "seed"), default="rebin",
                        help="flux-conserving rebin (default) or the seed's interpolation")
    parser.add_argument("--n-pix", type=int, default=1500)
    parser.add_argument("--wave-min", type=float, default=3625.0)
    parser.add_argument("--wave-max", type=float, default=9000.0)
    parser.add_argument("--source", default=None, help="'SDSS' or 'simulated' (default: "
                        "simulated if a truth table is given)")
    parser.add_argument("--batch-size", type=int, default=1024,
                        help="files per partition (bounds memory; the unit of parallel work)")
    parser.add_argument("--processes", type=int, default=None, metavar="N",
                        help="local processes that read and resample (default: the cores "
                        "available, at most 8; 1 = in this process)")
    parser.add_argument("--workers", type=int, default=None,
                        help="read and resample on a local Dask cluster with this many workers")
    parser.add_argument("--scheduler", default=None,
                        help="address of an existing Dask scheduler, e.g. tcp://10.0.0.5:8786")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing cube")


def run(args: argparse.Namespace) -> int:
    from builder.build import BuildConfig, build_cube
    from builder.dr16q import CatalogError
    from qsocube.parallel import default_processes

    if args.processes is not None and args.processes < 1:
        raise UsageError("--processes must be at least 1")
    for option, path in (("--catalog", args.catalog), ("--truth", args.truth)):
        if path is not None and not path.is_file():
            raise UsageError(f"{option} {path}: no such file")
    config = BuildConfig(min_snr=args.min_snr, coverage=args.coverage,
                         min_covered_fraction=args.min_covered_fraction, method=args.method,
                         n_pix=args.n_pix, wave_min=args.wave_min, wave_max=args.wave_max,
                         batch_size=args.batch_size)
    source = args.source or ("simulated" if args.truth else "SDSS")
    try:
        build_cube(args.spectra, args.out, catalog_path=args.catalog, truth_path=args.truth,
                   config=config, source=source, overwrite=args.overwrite,
                   scheduler=args.scheduler, workers=args.workers,
                   processes=args.processes or default_processes())
    except CatalogError as exc:
        raise UsageError(str(exc)) from None
    return 0
