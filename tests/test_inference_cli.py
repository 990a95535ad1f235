"""`qsocube encode` end to end: formats, exit codes, one-line errors, no torch, real spectra."""

from __future__ import annotations

import csv
import subprocess
import sys
import tracemalloc
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy.io import fits
from test_inference_fixture import build_pair, calibrated_pair, draw, write_cube, write_spec_lite

from qsocube.cli import main
from qsocube.core.errors import Rejection
from qsocube.core.grid import WavelengthGrid
from qsocube.core.layout import model_group_name
from qsocube.inference import Encoder
from qsocube.inference.inputs import discover
from qsocube.inference.sources import plan_parts, read_batches

OK, UNREADABLE, LOW_COVERAGE = Rejection.ok, Rejection.unreadable, Rejection.low_coverage


def named(pair, quantity: str) -> str:
    """An output column's name for the pair's latent size, e.g. LATENT_MEAN_06."""
    return f"{quantity}_{pair.latent_size:02d}"

ROOT = Path(__file__).resolve().parents[1]
REAL_SPECTRA = ROOT.parent / "shared" / "data" / "sdss" / "spectra"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return calibrated_pair(tmp_path_factory.mktemp("models"), np.random.default_rng(11),
                           n_train=6000)


@pytest.fixture(scope="module")
def spectra(pair, tmp_path_factory):
    """A folder of five spec-lite files, the last one broken."""
    folder = tmp_path_factory.mktemp("spectra")
    flux, _ = draw(np.random.default_rng(12), pair, 4)
    for i in range(4):
        write_spec_lite(folder / f"spec-7002-57001-{i + 1:04d}.fits", (3550, 10300), flux[i],
                        pair.grid, {"PLATE": 7002, "MJD": 57001, "FIBERID": i + 1,
                                    "CLASS": "GALAXY" if i == 0 else "QSO", "Z": 1.5})
    (folder / "spec-7002-57001-0005.fits").write_bytes(b"\x00" * 3000)
    return folder


def encode(capsys, *args: str) -> tuple[int, str]:
    code = main(["encode", *map(str, args)])
    return code, capsys.readouterr().err


def test_folder_to_h5_runs_without_torch_and_opens_in_xarray(pair, spectra, tmp_path) -> None:
    out = tmp_path / "codes.h5"
    script = ("import sys; from qsocube.cli import main; "
              f"code = main(['encode', '--model', {str(pair.encoder)!r}, '--out', {str(out)!r},"
              f" {str(spectra)!r}]); "
              "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
              "('torch', 'onnx', 'xarray', 'matplotlib') or m.startswith('qsocube.builder')); "
              "print(code, heavy)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.stdout.strip() == "1 []", done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("qsocube encode: encoded 4 of 5 spectra from 5 input files")
    assert "1 rejected (1 unreadable)" in last and "non-QSO classes: GALAXY 1" in last
    assert "files/s" in done.stderr and "spectra/s" in done.stderr
    xr = pytest.importorskip("xarray")
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        assert ds.sizes == {"spectrum": 5, "latent": pair.latent_size}
        assert ds[named(pair, "LATENT_MEAN")].dims == ("spectrum", "latent")
        assert ds["FLAG"].values.tolist() == [OK] * 4 + [UNREADABLE]
        assert ds["FIBERID"].values.tolist() == [1, 2, 3, 4, 5]
        assert "spec-7002-57001-0005.fits" in str(ds["SOURCE"].values[4])
        assert "not a readable FITS file" in str(ds["REASON"].values[4])
        assert ds.attrs["encoder_onnx"] == pair.encoder.name and ds.attrs["n_rejected"] == 1
        api = Encoder(pair.encoder).encode_files(sorted(spectra.glob("*.fits")))
        np.testing.assert_array_equal(ds[named(pair, "LATENT_MEAN")].values, api.latent_mean)


def test_fits_and_csv_outputs_hold_the_same_rows(pair, spectra, tmp_path, capsys) -> None:
    paths = {ext: tmp_path / f"codes.{ext}" for ext in ("h5", "fits", "csv")}
    for path in paths.values():
        assert encode(capsys, "--model", pair.encoder, "--out", path, spectra)[0] == 1
    with h5py.File(paths["h5"], "r") as h5:
        mean, score = h5[named(pair, "LATENT_MEAN")][...], h5[named(pair, "ANOMALY_SCORE")][...]
    with fits.open(paths["fits"]) as hdus:
        table = hdus["ENCODED"].data
        np.testing.assert_array_equal(table[named(pair, "LATENT_MEAN")], mean)
        assert table["CLASS"][0] == "GALAXY" and table["FLAG"][4] == UNREADABLE
        assert hdus["ENCODED"].header["encoder_onnx"] == pair.encoder.name
    with open(paths["csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 5 and rows[0]["CLASS"] == "GALAXY" and rows[4]["FLAG"] == "1"
    got = np.array([[float(r[f"{named(pair, 'LATENT_MEAN')}_{i}"]) for i in range(pair.latent_size)]
                    for r in rows], np.float32)
    np.testing.assert_array_equal(got, mean)  # 9 significant digits round-trip float32
    assert float(rows[1][named(pair, "ANOMALY_SCORE")]) == score[1]


def test_cube_and_grid_arrays_as_inputs(pair, tmp_path, capsys) -> None:
    flux, ivar = draw(np.random.default_rng(13), pair, 300)
    cube = write_cube(tmp_path / "qsocube.h5", pair, flux, ivar)
    out = tmp_path / "cube_codes.h5"
    code, err = encode(capsys, "--model", pair.encoder, "--out", out, "--batch-size", "128", cube)
    assert code == 0 and "none rejected" in err
    with h5py.File(out, "r") as got, h5py.File(cube, "r") as want:
        stored = want[model_group_name(pair.latent_size)]["latent_mean"][...]
        assert np.max(np.abs(got[named(pair, "LATENT_MEAN")][...] - stored)) <= 1e-5
        assert got["PLATE"][...].tolist() == want["catalog/PLATE"][...].tolist()
        assert got["SOURCE"].asstr()[7] == f"{cube}[7]"
    np.save(tmp_path / "grid.npy", np.stack([flux, ivar]))
    with h5py.File(tmp_path / "grid.h5", "w") as h5:
        h5["flux"], h5["ivar"] = flux, ivar
    for name in ("grid.npy", "grid.h5"):
        out = tmp_path / f"{name}.out.h5"
        assert encode(capsys, "--model", pair.encoder, "--out", out, tmp_path / name)[0] == 0
        with h5py.File(out, "r") as got:
            np.testing.assert_allclose(got[named(pair, "LATENT_MEAN")][...], stored, atol=1e-5)


def test_a_corrupt_chunk_flags_its_rows_and_the_run_goes_on(pair, tmp_path, capsys) -> None:
    flux, ivar = draw(np.random.default_rng(16), pair, 192)
    path = tmp_path / "grid.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("flux", data=flux, chunks=(64, 1500), fletcher32=True)
        h5["ivar"] = ivar
        info = h5["flux"].id.get_chunk_info(1)  # rows 64-127
    with open(path, "r+b") as handle:
        handle.seek(info.byte_offset + 1000)
        handle.write(b"\xff" * 64)
    out = tmp_path / "out.h5"
    code, err = encode(capsys, "--model", pair.encoder, "--out", out, "--batch-size", "64", path)
    assert code == 1 and "64 rejected (64 unreadable_chunk)" in err
    with h5py.File(out, "r") as got:
        flag = got["FLAG"][...]
        assert flag.tolist() == [OK] * 64 + [Rejection.unreadable_chunk] * 64 + [OK] * 64
        assert "rows 64-127 unreadable" in got["REASON"].asstr()[64]
        assert np.isfinite(got[named(pair, "LATENT_MEAN")][128:]).all()


def test_local_processes_give_the_in_process_output(pair, spectra, tmp_path, capsys) -> None:
    np.save(tmp_path / "grid.npy", np.stack(draw(np.random.default_rng(15), pair, 5)))
    common = ["--model", pair.encoder, "--batch-size", "2", spectra, tmp_path / "grid.npy"]
    outputs = {}
    for processes in ("1", "2"):
        outputs[processes] = tmp_path / f"codes_{processes}.h5"
        code, err = encode(capsys, *common, "--out", outputs[processes], "--processes", processes)
        assert code == 1  # the broken file
        assert ("reading on 2 local processes" in err) == (processes == "2")
    with h5py.File(outputs["1"]) as one, h5py.File(outputs["2"]) as two:
        assert set(one) == set(two) and len(one["FLAG"]) == 10
        for name in one:
            np.testing.assert_array_equal(one[name][...], two[name][...], err_msg=name)
    api = Encoder(pair.encoder).encode_files([spectra, tmp_path / "grid.npy"], batch_size=3,
                                             processes=2)
    with h5py.File(outputs["1"]) as one:
        np.testing.assert_array_equal(api.latent_mean, one[named(pair, "LATENT_MEAN")][...])


def test_streaming_keeps_memory_to_a_batch(pair, tmp_path) -> None:
    flux, ivar = draw(np.random.default_rng(14), pair, 1200)
    stack = np.stack([np.tile(flux, (4, 1)), np.tile(ivar, (4, 1))])  # 4800 spectra, 58 MB
    np.save(tmp_path / "many.npy", stack)
    del flux, ivar, stack
    encoder = Encoder(pair.encoder)
    sources = discover([str(tmp_path / "many.npy")], encoder.grid)
    tracemalloc.start()
    sizes = []
    for batch in read_batches(list(plan_parts(sources, 256)), encoder.grid, "rebin", 0.5):
        sizes.append(len(encoder.encode_batch(batch)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sum(sizes) == 4800 and max(sizes) == 256
    assert peak < 20e6, f"peak {peak / 1e6:.0f} MB for 256-spectrum batches"


@pytest.mark.parametrize("case, message", [
    ("decoder", "this is the decoder"),
    ("garbage", "not a readable ONNX model"),
    ("other_grid", "grid differs"),
    ("out_under_file", "cannot write there"),
    ("out_suffix", "unknown output type"),
    ("out_exists", "exists (pass --overwrite"),
    ("no_input", "no such file, folder or matching files"),
])
def test_usage_and_model_errors_are_one_line_exit_2(pair, spectra, tmp_path, capsys,
                                                    case, message) -> None:
    model, out, inputs = pair.encoder, tmp_path / "out.h5", [spectra]
    if case == "decoder":
        model = pair.decoder
    elif case == "garbage":
        model = tmp_path / "x_encoder.onnx"
        model.write_text("hello")
    elif case == "other_grid":
        flux, ivar = draw(np.random.default_rng(15), pair, 3)
        inputs = [write_cube(tmp_path / "c.h5", pair, flux, ivar, grid_sha256="a" * 64)]
    elif case == "out_under_file":
        (tmp_path / "plain").write_text("")
        out = tmp_path / "plain" / "out.h5"
    elif case == "out_suffix":
        out = tmp_path / "out.parquet"
    elif case == "out_exists":
        out.write_text("keep me")
    elif case == "no_input":
        inputs = [tmp_path / "nowhere"]
    code, err = encode(capsys, "--model", model, "--out", out, *inputs)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    if case == "out_exists":
        assert out.read_text() == "keep me"
    else:
        assert not out.exists()


def test_model_from_another_grid_refuses_grid_arrays(tmp_path, capsys) -> None:
    small = build_pair(tmp_path / "m", latent=3,
                       grid=WavelengthGrid(n_pix=400, wave_min=3800.0, wave_max=8000.0))
    np.save(tmp_path / "grid.npy", np.ones((2, 3, 1500), np.float32))
    code, err = encode(capsys, "--model", small.encoder, "--out", tmp_path / "o.h5",
                       tmp_path / "grid.npy")
    assert code == 2 and "1500 pixels per spectrum, the model's grid has 400" in err


@pytest.mark.skipif(not REAL_SPECTRA.is_dir(), reason=f"real spectra absent: {REAL_SPECTRA}")
def test_all_real_sdss_spectra_are_encoded_or_reported(pair, tmp_path, capsys) -> None:
    manifest = REAL_SPECTRA / "MANIFEST.csv"
    out = tmp_path / "real.h5"
    code, err = encode(capsys, "--model", pair.encoder, "--out", out, REAL_SPECTRA)
    with h5py.File(out, "r") as h5:
        flag, classes = h5["FLAG"][...], h5["CLASS"].asstr()[...]
        mean = h5[named(pair, "LATENT_MEAN")][...]
    assert len(flag) == 258 and code == (1 if (flag != OK).any() else 0)
    assert Counter(classes) == {"QSO": 252, "GALAXY": 5, "STAR": 1}
    assert "non-QSO classes: GALAXY 5, STAR 1" in err.strip().splitlines()[-1]
    assert np.isfinite(mean[flag == OK]).all() and np.isnan(mean[flag != OK]).all()
    if manifest.is_file():
        with open(manifest, newline="") as handle:
            listed = {r["CLASS"] for r in csv.DictReader(handle)}
        assert set(classes) <= {c.strip() for c in listed}
    # the builder's coverage rule on the default grid: ten short spectra cover 0.3-18% of
    # it and one 61%; the README quotes these counts
    assert (flag == OK).sum() == 247 and (flag == LOW_COVERAGE).sum() == 11
