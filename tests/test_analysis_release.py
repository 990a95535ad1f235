"""`qsocube analyze` on a small fixture release: cube opening, figures, report, association
table, value-added catalogue, failure paths. The release is written through
qsocube.core.cube.write_variable as the real stages write it
(tests/fixtures/analysis_release.py)."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import xarray as xr
from fixtures.analysis_release import ALL_NAN, write_fixture_release

from qsocube.analysis import analyze_release
from qsocube.analysis.columns import STUDY_COLUMNS
from qsocube.analysis.io import AnalysisError, open_release
from qsocube.cli import UsageError
from qsocube.cli import main as qsocube_main

pytest.importorskip("onnx", reason="the fixture writes its ONNX decoders with the onnx package")
SIZES = (3, 6, 9)
N = 160


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    release = tmp_path_factory.mktemp("release")
    write_fixture_release(release, n=N, n_pix=200, latent_sizes=SIZES, seed=1)
    messages: list[str] = []
    result = analyze_release(release, corner_model=9, progress=messages.append)
    return release, result, messages


def test_cube_opens_with_named_dimensions_in_every_group(analysed):
    release, _, _ = analysed
    tree = xr.open_datatree(release / "qsocube.h5", engine="h5netcdf")
    try:
        assert tree["flux"].dims == ("spectrum", "wavelength")
        assert tree["catalog/NHI_DLA"].dims == ("spectrum", "dla")
        assert tree["models/latent_09/latent_mean"].dims == ("spectrum", "latent")
        assert tree["models/latent_09/history/val_loss"].dims == ("epoch",)
        assert tree["models/latent_09/search/lambda"].dims == ("call",)
        assert tree["truth/Z"].dims == ("spectrum",)
        assert tree["rejected/reason"].dims == ("rejected",)
        # child groups see the root's coordinate values, not anonymous phony dimensions
        assert np.array_equal(tree["catalog"].to_dataset()["spectrum"].values, np.arange(N))
    finally:
        tree.close()


def test_release_reader_hands_out_tidy_data(analysed):
    release, _, _ = analysed
    with open_release(release) as opened:
        assert sorted(opened.models) == list(SIZES)
        assert opened.models[9].data["latent_mean"].shape == (N, 9)
        assert opened.models[6].history.sizes["epoch"] == 20
        assert "flux" not in opened.spectra  # pixels stay on disk until drawn
        rows = np.array([7, 2, 7])
        pixels = opened.pixels(rows)
        with h5py.File(release / "qsocube.h5") as cube:
            assert np.array_equal(pixels["flux"], cube["flux"][[2, 7]][[1, 0, 1]])


def test_every_figure_is_written_and_referenced(analysed):
    release, result, messages = analysed
    report = release / "report"
    pngs = {p.name for p in report.glob("*.png")}
    expected = {"mse_vs_latent.png", "samples.png", "outliers.png", "corner_catalog.png",
                "training_curves.png", "search_lambda.png", "associations.png"}
    for name in STUDY_COLUMNS:
        if name != ALL_NAN:
            expected |= {f"hist_{name}.png", f"mse_{name}.png", f"corner_{name}.png"}
    assert expected <= pngs
    assert not {p for p in pngs if ALL_NAN in p}  # nothing measured: a note, no figure
    assert {p.name for p in result["figures"]} == pngs
    html = (report / "index.html").read_text()
    for name in pngs:
        assert f'src="{name}"' in html
    assert "Nothing is measured for this column" in html
    assert "http://" not in html and "https://" not in html  # offline: no CDN
    for png in pngs:  # real PNGs of a readable size, not empty files
        head = (report / png).read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        assert width >= 300 and height >= 200
    assert any("association table" in m for m in messages)


def test_report_states_summary_and_exclusions(analysed):
    release, _, _ = analysed
    html = (release / "report" / "index.html").read_text()
    with open_release(release) as opened:
        n_missing_bal = int(np.isnan(opened.catalog["BAL_PROB"].values).sum())
    assert f"{N:,}" in html and "rejected inputs" in html
    assert "2: unreadable (1); low_coverage (1)" in html  # by code, not by message text
    assert "simulated" in html and "200 log-spaced pixels" in html
    assert f"{n_missing_bal:,} of {N:,} spectra have no measurement" in html
    assert "largest log N_HI over the five DLA slots" in html
    assert "VAE / PCA" in html and "Strongest dimension per column" in html
    assert "associations.csv" in html and "../catalog/qsocube_vac.fits" in html


def test_association_table_has_expected_shape_and_finds_redshift(analysed):
    release, result, _ = analysed
    with open(release / "report" / "associations.csv") as handle:
        rows = list(csv.DictReader(handle))
    columns = {r["column"] for r in rows}
    assert "truth.Z" in columns and "Z" in columns and ALL_NAN in columns
    n_dims = sum(SIZES)
    assert len(rows) == n_dims * len(columns)
    assert result["association_shape"] == (n_dims, len(columns))
    for key in ("Z", "truth.Z"):
        for size in SIZES:  # the fixture's dimension 0 is the standardised redshift
            row = next(r for r in rows if r["column"] == key and r["latent_size"] == str(size)
                       and r["dimension"] == "0")
            assert float(row["spearman_rho"]) > 0.9
            assert float(row["info_coefficient"]) > 0.8
    assert result["strongest_truth.Z"][1] == 0 and result["strongest_truth.Z"][2] > 0.9
    empty = [r for r in rows if r["column"] == ALL_NAN]
    assert all(r["n_spectra"] == "0" and r["spearman_rho"] == "nan" for r in empty)


def test_value_added_catalogue_round_trips_through_astropy(analysed):
    from astropy.table import Table

    release, _, _ = analysed
    table = Table.read(release / "catalog" / "qsocube_vac.fits")
    assert len(table) == N
    assert table["RA"].unit == "deg" and table["MJD"].unit == "d"
    assert table["LATENT_MEAN_09"].shape == (N, 9) and table["LATENT_MEAN_03"].shape == (N, 3)
    with open_release(release) as opened:
        model = opened.models[9].data
        assert np.array_equal(table["LATENT_MEAN_09"], model["latent_mean"].values)
        assert np.array_equal(table["RECON_CHI2_06"], opened.models[6].data["recon_chi2"].values)
        assert list(table["SPEC_ID"]) == list(opened.spectra["spec_id"].values)
        assert np.array_equal(table["SPLIT"], opened.spectra["split"].values)
        score = model["anomaly_score"].values
    top = int(np.argmax(table["ANOMALY_RANK_09"] == 1))
    assert score[top] == score.max()
    assert sorted(table["ANOMALY_RANK_09"]) == list(range(1, N + 1))
    from astropy.io import fits

    header = fits.getheader(release / "catalog" / "qsocube_vac.fits", 1)
    described = {header[f"TTYPE{i}"]: header.get(f"TCOMM{i}") for i in
                 range(1, header["TFIELDS"] + 1)}
    assert all(described.values()), "every column has a description"
    assert header["CUBESHA"] and header["SOURCE"] == "simulated"
    rows = list(csv.DictReader(open(release / "catalog" / "qsocube_vac.csv")))
    assert len(rows) == N and float(rows[5]["LATENT_MEAN_09_4"]) == pytest.approx(
        float(table["LATENT_MEAN_09"][5, 4]), rel=1e-6)
    assert rows[5]["SPEC_ID"] == table["SPEC_ID"][5]


def test_value_added_catalogue_opens_in_stilts(analysed):
    stilts = shutil.which("stilts")
    if stilts is None:
        pytest.skip("STILTS not installed (Debian package 'stilts'); astropy check still runs")
    release, _, _ = analysed
    done = subprocess.run([stilts, "tpipe", f"in={release / 'catalog' / 'qsocube_vac.fits'}",
                           "omode=meta"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"Rows:    {N}" in done.stdout
    assert "LATENT_MEAN_09(float[9])" in done.stdout
    assert "RA(Double)/deg - right ascension" in done.stdout
    csv_done = subprocess.run([stilts, "tpipe", f"in={release / 'catalog' / 'qsocube_vac.csv'}",
                               "ifmt=csv", "omode=count"], capture_output=True, text=True,
                              timeout=120)
    assert csv_done.returncode == 0 and f"rows: {N}" in csv_done.stdout.lower()


def test_report_renders_in_headless_chromium(analysed, tmp_path):
    from fixtures.browser import CHROMIUM, render_check

    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} absent (Debian package 'chromium', installed by make test "
                    "setup); report rendering not checked")
    release, result, _ = analysed
    report = release / "report"
    shot = report / "screenshot.png"
    checked = render_check(report / "index.html", screenshot=shot, height=3000)
    assert checked["total"] == checked["n_img_tags"] == len(result["figures"])
    assert checked["loaded"] == checked["total"]
    assert all(width > 0 for _, width in checked["images"])
    assert shot.stat().st_size > 10_000  # kept in the release's report folder
    # and the check can fail: a copy of the report with one figure missing
    broken = tmp_path / "report"
    shutil.copytree(report, broken)
    (broken / "samples.png").unlink()
    checked = render_check(broken / "index.html")
    assert checked["loaded"] == checked["total"] - 1
    assert ("samples.png", 0) in checked["images"]


def test_failure_paths_are_one_line(analysed, tmp_path):
    release, _, _ = analysed
    with pytest.raises(FileNotFoundError, match="not a release folder"):
        analyze_release(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "qsocube.h5").write_bytes(b"not an HDF5 file at all")
    with pytest.raises(AnalysisError, match=r"bad/qsocube.h5: cannot be opened") as info:
        analyze_release(bad)
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="latent sizes 3, 6, 9"):
        analyze_release(release, corner_model=12)
    assert qsocube_main(["analyze", str(tmp_path / "missing")]) == 2


def test_decoder_problems(analysed, tmp_path):
    from qsocube.analysis import figures_spectra

    release, _, _ = analysed
    copy = tmp_path / "release"
    shutil.copytree(release / "models", copy / "models")
    shutil.copy(release / "qsocube.h5", copy / "qsocube.h5")
    (copy / "models" / "infovae_latent09_decoder.onnx").unlink()
    with open_release(copy) as opened:  # absent decoder: data drawn, reconstruction noted
        info = figures_spectra.samples(opened, 9, tmp_path)
        assert "No reconstruction drawn" in info.caption
        shutil.copy(release / "models" / "infovae_latent06_decoder.onnx",
                    copy / "models" / "infovae_latent09_decoder.onnx")
        with pytest.raises(AnalysisError, match="sha256 differs"):
            figures_spectra.samples(opened, 9, tmp_path)


def test_command_line_rerun_is_torch_free_and_removes_stale_figures(analysed):
    """`qsocube analyze --quick` in a fresh interpreter: exit 0, a summary paragraph, no
    torch import anywhere on the way, byte-identical files where both runs draw the same,
    and the corner plots that a quick run does not draw are gone, not lingering."""
    release, _, _ = analysed
    assert (release / "report" / "corner_RA.png").exists()
    same = ["report/corner_Z.png", "report/samples.png", "report/hist_M_I.png",
            "report/associations.csv", "catalog/qsocube_vac.fits", "catalog/qsocube_vac.csv"]
    before = {name: (release / name).read_bytes() for name in same}
    code = ("import sys; from qsocube.cli import main; "
            f"rc = main(['analyze', {str(release)!r}, '--quick']); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "qsocube analyze: 160 spectra analysed" in done.stderr
    assert "redshift is tracked by dimension 0 of the L =" in done.stderr  # summary sentence
    assert not (release / "report" / "corner_RA.png").exists()
    for name in same:  # reruns are byte-identical (no timestamps), so manifests are stable
        assert (release / name).read_bytes() == before[name], name


def test_observed_release_without_truth(tmp_path):
    """An SDSS release has no /truth: associations use the catalogue only, the catalogue
    writer does not care, and a model-less cube is refused in one line."""
    from qsocube.analysis.associations import association_table
    from qsocube.analysis.columns import catalog_columns, truth_columns
    from qsocube.analysis.pipeline import release_summary
    from qsocube.analysis.vac import write_vac

    write_fixture_release(tmp_path, n=40, n_pix=60, latent_sizes=(9,), with_truth=False)
    with open_release(tmp_path) as opened:
        assert opened.truth is None and truth_columns(opened.truth) == {}
        assert release_summary(opened, "0" * 64)["source"] == "SDSS"
        columns = {c.key: c.values for c in catalog_columns(opened.catalog).values()}
        table = association_table({9: opened.models[9].data["latent_mean"].values}, columns)
        assert table.rho.shape == (9, len(STUDY_COLUMNS))
        paths = write_vac(opened, tmp_path / "catalog", "0" * 64)
    from astropy.table import Table

    assert len(Table.read(paths["fits"])) == 40
    with h5py.File(tmp_path / "qsocube.h5", "a") as cube:
        del cube["models"]
    with pytest.raises(UsageError, match="no /models groups"):
        analyze_release(tmp_path)


def test_drawn_reconstructions_reproduce_the_cubes_metrics(analysed):
    """The decoder run by the analysis (onnxruntime, flux units) gives back exactly the
    recon_mse and recon_chi2 stored in the cube, so the figures show what was measured."""
    from qsocube.analysis.reconstruct import reconstruct
    from qsocube.core.metrics import reconstruction_metrics
    from qsocube.core.preprocess import model_input

    release, _, _ = analysed
    with open_release(release) as opened:
        rows = np.arange(0, N, 7)
        pixels = opened.pixels(rows)
        norm = opened.spectra["norm"].values[rows]
        x, w = model_input(pixels["flux"], pixels["ivar"], pixels["mask"], norm)
        for size in SIZES:
            model, _ = reconstruct(opened, size, rows)
            mse, chi2 = reconstruction_metrics(x, w, (model / norm[:, None]).astype(np.float32),
                                               size)
            data = opened.models[size].data
            assert np.allclose(mse, data["recon_mse"].values[rows], rtol=1e-5)
            assert np.allclose(chi2, data["recon_chi2"].values[rows], rtol=1e-5)
