"""End to end on the smoke release that the session fixture builds with `qsocube release`.

The release itself is left untouched (its MANIFEST.sha256 must stay valid): the cube and
the models are copied to a temporary folder and analysed there.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest


@pytest.mark.slow
def test_smoke_release_end_to_end(tmp_path: Path, smoke_release: Path):
    from qsocube.analysis import analyze_release
    from qsocube.analysis.io import open_release

    shutil.copy(smoke_release / "qsocube.h5", tmp_path / "qsocube.h5")
    shutil.copytree(smoke_release / "models", tmp_path / "models")
    with open_release(tmp_path) as release:
        sizes = sorted(release.models)
        n = release.n_spectra
        simulated = release.truth is not None
    assert sizes, "the smoke release has no trained models"
    corner = 9 if 9 in sizes else sizes[0]
    result = analyze_release(tmp_path, corner_model=corner, quick=True,
                             progress=lambda message: None)
    assert (tmp_path / "report" / "index.html").is_file()
    assert all(path.is_file() for path in result["figures"])
    assert result["association_shape"][0] == sum(sizes)
    from astropy.table import Table

    assert len(Table.read(result["vac_fits"])) == n
    with open(result["associations_csv"]) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == np.prod(result["association_shape"])
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
