"""The product schemas (qsocube/schemas/*.json) and `qsocube validate` on every product.

The cube, the ONNX metadata, the value-added catalogue and the encode output each have a
schema; writers take names, types and units from them and validate checks each product.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from test_inference_fixture import build_pair, draw, write_spec_lite

from qsocube.cli import main
from qsocube.core import onnxmodel, schema
from qsocube.core.errors import Rejection
from qsocube.core.validate import check_encode_output, check_onnx, check_vac, validate


def test_every_product_has_a_schema_with_one_version() -> None:
    versions = {schema.load(p)["schema_version"] for p in schema.PRODUCTS}
    assert versions == {schema.load("cube")["schema_version"]} == {"1.3.0"}
    rejected = schema.load("cube")["groups"]["/rejected"]["variables"]["reason_code"]
    assert rejected["flags"] == "Rejection" and rejected["dtype"] == "uint8"


def test_the_catalogue_and_the_encode_output_name_a_quantity_the_same_way() -> None:
    vac = {c.name: c for c in schema.columns("vac", [9])}
    out = {c.name: c for c in schema.columns("encode_output", [9])}
    shared = sorted(set(vac) & set(out))
    assert shared == ["ANOMALY_SCORE_09", "DENSITY_SCORE_09", "FIBERID", "LATENT_MEAN_09",
                      "MJD", "PLATE", "RECON_CHI2_09", "RECON_MSE_09", "RECON_SCORE_09",
                      "REDSHIFT_SCORE_09", "Z"]
    for name in shared:
        assert vac[name].units == out[name].units, name
    for name in ("LATENT_MEAN_09", "RECON_MSE_09", "RECON_CHI2_09", "RECON_SCORE_09",
                 "DENSITY_SCORE_09", "ANOMALY_SCORE_09"):
        assert (vac[name].dtype, vac[name].description) == (out[name].dtype,
                                                            out[name].description), name
    assert all(re_name == re_name.upper() for re_name in [*vac, *out])
    assert schema.csv_names("LATENT_MEAN_09", 3) == ["LATENT_MEAN_09_0", "LATENT_MEAN_09_1",
                                                     "LATENT_MEAN_09_2"]
    assert schema.fits_unit("1") is None and schema.fits_unit("deg") == "deg"


def test_the_exporter_writes_every_key_of_the_metadata_schema() -> None:
    keys = schema.load("onnx_metadata")["keys"]
    old = {"train_recon_mse_quantiles"}  # read in models before 0.3, no longer written
    assert set(onnxmodel.release_keys("encoder")) == set(keys) - old
    assert set(onnxmodel.release_keys("decoder")) == set(keys) - old - {"anomaly_model",
                                                                         "anomaly_sha256"}
    good = {"product_version": "0.4.0", "schema_version": "1.3.0", "role": "decoder",
            "partner": "e.onnx", "latent_size": "3", "grid": '{"n_pix": 1500, "wave_max": '
            '9000.0, "wave_min": 3625.0}', "normalisation": "n", "resampling_method": "rebin",
            "input_layout": "{}"}
    from qsocube.core.grid import DEFAULT_GRID

    good["grid_sha256"] = DEFAULT_GRID.sha256
    assert onnxmodel.check_metadata(good) == []
    bad = {**good, "latent_size": "three", "grid_sha256": "0" * 64}
    del bad["input_layout"]
    problems = onnxmodel.check_metadata(bad)
    assert "metadata lacks 'input_layout'" in problems
    assert "metadata 'latent_size' does not read as int" in problems
    assert onnxmodel.check_metadata(good, release=True) == [
        f"metadata lacks '{k}'" for k in ("lambda", "alpha", "cube_sha256", "objective",
                                          "objective_definition", "train_config")]


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("encode")
    pair = build_pair(folder / "models", latent=4)
    flux, _ = draw(np.random.default_rng(5), pair, 3)
    for i in range(3):
        write_spec_lite(folder / f"spec-7003-57002-{i + 1:04d}.fits", (3550, 10300), flux[i],
                        pair.grid, {"PLATE": 7003, "MJD": 57002, "FIBERID": i + 1})
    (folder / "spec-7003-57002-0004.fits").write_bytes(b"broken")
    outputs = {}
    for ext in ("h5", "fits", "csv"):
        outputs[ext] = folder / f"codes.{ext}"
        assert main(["encode", "--model", str(pair.encoder), "--out", str(outputs[ext]),
                     str(folder / "spec-*.fits")]) == 1
    return pair, outputs


def test_validate_checks_each_encode_output(encoded, tmp_path) -> None:
    pair, outputs = encoded
    for path in outputs.values():
        assert validate(path) == [], path
    import h5py

    with h5py.File(outputs["h5"], "r") as h5:
        assert h5["FLAG"][...].tolist() == [0, 0, 0, Rejection.unreadable]
        assert h5["FLAG"].attrs["flag_meanings"] == Rejection.flag_meanings()
        assert h5["MJD"].attrs["units"] == "d" and h5["LATENT_MEAN_04"].shape == (4, 4)
    from astropy.io import fits

    with fits.open(outputs["fits"]) as hdus:
        assert hdus["ENCODED"].columns["MJD"].unit == "d"
        assert hdus["ENCODED"].columns["LATENT_MEAN_04"].format == "4E"
    text = outputs["csv"].read_text().replace("LATENT_MEAN_04_0", "latent_mean_00", 1)
    (tmp_path / "renamed.csv").write_text(text)
    assert "first difference at column 10" in check_encode_output(tmp_path / "renamed.csv")[0]
    import shutil

    shutil.copyfile(outputs["h5"], tmp_path / "copy.h5")
    with h5py.File(tmp_path / "copy.h5", "r+") as h5:
        h5["MJD"].attrs["units"] = "s"
        h5["FLAG"].attrs["flag_meanings"] = "ok bad"
    problems = check_encode_output(tmp_path / "copy.h5")
    assert problems == ["/MJD: units 's', schema says 'd'",
                        "/FLAG: 'flag_meanings' differs from the schema's Rejection"]


def test_validate_checks_onnx_metadata(encoded, tmp_path) -> None:
    pair, _ = encoded
    assert check_onnx(pair.encoder, release=False) == []
    assert validate(pair.encoder) == []
    assert any("lacks 'objective'" in p for p in check_onnx(pair.encoder, release=True))
    lonely = build_pair(tmp_path / "m", latent=3)
    lonely.decoder.unlink()
    assert check_onnx(lonely.encoder, release=False) == [
        f"{lonely.encoder.name}: its partner {lonely.decoder.name} is not beside it"]


def test_validate_checks_the_value_added_catalogue(tmp_path) -> None:
    from fixtures.analysis_release import write_fixture_release

    from qsocube.analysis.io import open_release
    from qsocube.analysis.vac import write_vac
    from qsocube.core.cube import file_sha256
    from qsocube.core.layout import Release

    release = tmp_path / "release"
    write_fixture_release(release, n=60, n_pix=200, latent_sizes=(3, 6), seed=2)
    catalog = Release(release).catalog
    catalog.mkdir(exist_ok=True)
    with open_release(release) as opened:  # the analysis step's writer, without its figures
        write_vac(opened, catalog, file_sha256(opened.cube_path))
    assert check_vac(release) == []
    csv_path = release / "catalog" / "qsocube_vac.csv"
    rows = list(csv.reader(csv_path.open()))
    rows[0][rows[0].index("LATENT_MEAN_06_0")] = "LATENT_MEAN_06_00"
    with csv_path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows[:-1])
    problems = check_vac(release)
    assert any("columns differ from the schema's" in p for p in problems)
    assert any("59 rows, the FITS table has 60" in p for p in problems)


def test_validate_json_names_every_problem(encoded, tmp_path, capsys) -> None:
    _, outputs = encoded
    assert main(["validate", "--json", str(outputs["csv"])]) == 0
    assert json.loads(capsys.readouterr().out)["valid"] is True
    assert main(["validate", str(Path(tmp_path) / "nothing.h5")]) == 1
