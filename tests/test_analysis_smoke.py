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
    if simulated:  # a simulated survey: some latent dimension must track the true redshift
        best = max(abs(float(r["spearman_rho"])) for r in rows if r["column"] == "truth.Z"
                   and r["spearman_rho"] != "nan")
        assert best > 0.5, f"no latent dimension tracks truth.Z (best |rho| = {best:.2f})"
