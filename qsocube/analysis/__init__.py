"""The analysis stage: figures, HTML report and value-added catalogue of a release.

It reads a release only: the cube through :mod:`qsocube.analysis.io` (xarray, h5netcdf
engine) and the decoders through onnxruntime (``qsocube.core.onnxmodel``); it never imports
torch. Entry point: :func:`analyze_release` (``qsocube analyze RELEASE``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qsocube.core.progress import say


def analyze_release(release_dir: Path, *, corner_model: int = 9, quick: bool = False,
                    progress: Callable[[str], None] = say) -> dict:
    """Write RELEASE/report/ and RELEASE/catalog/ from RELEASE/qsocube.h5 and its decoders.

    Returns a summary dict (paths of index.html, associations.csv and the catalogue files,
    number of figures, association table shape, seconds, strongest Z associations).
    Raises UsageError for a missing model size, AnalysisError (one line) for a cube or
    decoder that cannot be used, FileNotFoundError for a missing release. xarray and
    matplotlib are imported only when this runs.
    """
    from qsocube.analysis.pipeline import run_analysis

    return run_analysis(Path(release_dir), corner_model=corner_model, quick=quick,
                        progress=progress)


__all__ = ["analyze_release"]
