"""End to end on the smoke release that the session fixture builds with `qsocube release`:
its own analysis step's outputs, read as a user finds them (tests/test_analysis_release.py
runs the analysis again, from the command line, on a copy).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest


@pytest.mark.slow
def test_smoke_release_end_to_end(smoke_release: Path):
    from astropy.table import Table

    from qsocube.analysis.io import open_release

    with open_release(smoke_release) as release:
        sizes = sorted(release.models)
        n = release.n_spectra
        simulated = release.truth is not None
    assert sizes, "the smoke release has no trained models"
    report = smoke_release / "report" / "index.html"
    images = re.findall(r'<img[^>]*src="([^"]+)"', report.read_text())
    assert len(images) > 20 and all((report.parent / name).is_file() for name in images)
    assert len(Table.read(smoke_release / "catalog" / "qsocube_vac.fits")) == n
    with open(smoke_release / "report" / "associations.csv") as handle:
        rows = list(csv.DictReader(handle))
    dimensions = {(r["latent_size"], r["dimension"]) for r in rows}
    assert len(dimensions) == sum(sizes)
    assert len(rows) == len(dimensions) * len({r["column"] for r in rows})
    if simulated:  # a simulated survey: the codes must carry the true redshift
        # Redshift slides the emission lines through the grid, so a code need not be
        # monotonic in z: judge by the information coefficient (mutual information, which
        # sees any dependence), against columns the spectra know nothing about.
        def best(column: str) -> float:
            return max(float(r["info_coefficient"]) for r in rows if r["column"] == column
                       and r["info_coefficient"] != "nan")

        unrelated = max(best(c) for c in ("RA", "DEC", "MJD"))
        assert best("truth.Z") > 0.6 and best("truth.Z") > unrelated + 0.25, (
            f"no latent dimension tracks truth.Z (best information coefficient "
            f"{best('truth.Z'):.2f}, {unrelated:.2f} for sky position and date)")
