"""``qsocube analyze RELEASE``: figures, HTML report and value-added catalogue of a release."""

from __future__ import annotations

import argparse
from pathlib import Path

from qsocube.cli import options
from qsocube.core.progress import say

STRONG = 0.5  # |rho| from which the summary calls an association "tracking"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("release", type=Path,
                        help="release folder holding qsocube.h5 and models/ (or the cube)")
    parser.add_argument("--corner-model", type=options.integer(1), default=9, metavar="L",
                        help="latent size whose corner plots, samples and outliers are drawn "
                             "(default 9)")
    parser.add_argument("--quick", action="store_true",
                        help="reduced figure set: latent corner plot for Z only")


def run(args: argparse.Namespace) -> int:
    from qsocube.analysis import analyze_release

    result = analyze_release(args.release, corner_model=args.corner_model, quick=args.quick)
    strongest = result.get("strongest_truth.Z") or result.get("strongest_Z")
    tracks = ""
    if strongest and abs(strongest[2]) >= STRONG:
        tracks = (f"; redshift is tracked by dimension {strongest[1]} of the L = {strongest[0]}"
                  f" model (rho = {strongest[2]:+.2f})")
    elif strongest:
        tracks = f"; no latent dimension tracks redshift strongly (best rho {strongest[2]:+.2f})"
    rows, cols = result["association_shape"]
    say(f"qsocube analyze: {result['n_spectra']:,} spectra analysed in "
        f"{result['seconds']:.1f} s; wrote {result['report']} with {len(result['figures'])} "
        f"figures, the association table ({rows} latent dimensions x {cols} columns) in "
        f"{result['associations_csv'].name}, and the value-added catalogue "
        f"{result['vac_fits']} (+ CSV){tracks}.")
    return 0
