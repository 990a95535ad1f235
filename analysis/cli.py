"""``qsocube analyze RELEASE``: figures, HTML report and value-added catalogue of a release.

Heavy imports (xarray, matplotlib, onnxruntime) happen inside :func:`analyze_release`, so
``qsocube --help`` stays fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from qsocube.progress import say

STRONG = 0.5  # |rho| from which the summary calls an association "tracking"


def analyze_release(release_dir: Path, *, corner_model: int = 9, quick: bool = False,
                    progress: Callable[[str], None] = say) -> dict:
    """Write RELEASE/report/ and RELEASE/catalog/ from RELEASE/qsocube.h5 and its decoders.

    Returns a summary dict (paths of index.html, associations.csv and the catalogue files,
    number of figures, association table shape, seconds, strongest Z associations).
    Raises qsocube.cli.UsageError for a missing model size, AnalysisError (one line) for a
    cube or decoder that cannot be used, FileNotFoundError for a missing release.
    """
    from analysis.pipeline import run_analysis

    return run_analysis(Path(release_dir), corner_model=corner_model, quick=quick,
                        progress=progress)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("release", type=Path,
                        help="release folder holding qsocube.h5 and models/ (or the cube)")
    parser.add_argument("--corner-model", type=int, default=9, metavar="L",
                        help="latent size whose corner plots, samples and outliers are drawn "
                             "(default 9)")
    parser.add_argument("--quick", action="store_true",
                        help="reduced figure set: latent corner plot for Z only")


def run(args: argparse.Namespace) -> int:
    from analysis.io import AnalysisError

    try:
        result = analyze_release(args.release, corner_model=args.corner_model, quick=args.quick)
    except AnalysisError as exc:
        say(f"qsocube analyze: {exc}")
        return 1
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
