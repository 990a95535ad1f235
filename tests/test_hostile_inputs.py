"""The hostile-input battery (issue #13): bad input and misuse of every command.

Each case runs a command as a user would (``qsocube.cli.main`` in this process, or a
subprocess where the process itself is what is tested: kill -9, concurrent writers, a
FIFO) and asserts its exit code, a one-line message naming the file and the problem, that
every input is accounted for (the cube's /rejected, the encode rows), and that no file
that existed before the command changed. Inputs are generated here (tiny spec-lite files,
a DR16Q-layout catalogue, a synthetic cube, a linear ONNX pair) or taken from the real
SDSS files in ../shared/data (skipped with a message where absent).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import REAL_SPECTRA, write_spec_lite

from qsocube.cli import main
from qsocube.core.cube import read_strings
from qsocube.core.errors import Rejection
from qsocube.core.inputs import printable

R = Rejection
GOOD = np.linspace(2, 1, 4600).astype(np.float32)
PYTHON = [sys.executable, "-m", "qsocube.cli"]


# ---------------------------------------------------------------- helpers

def good(folder: Path, fiber: int, name: str | None = None, **kw) -> Path:
    """A valid spec-lite file (4000-55555-FIBER) covering the whole grid."""
    path = folder / (name or f"spec-4000-55555-{fiber:04d}.fits")
    return write_spec_lite(path, 35500, kw.pop("flux", GOOD), fiberid=fiber, **kw)


def run(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def snapshot(root: Path) -> dict[str, str]:
    """Every regular file under ``root`` (links not followed) -> sha256 of its bytes."""
    found = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder, name)
            if path.is_symlink() or not path.is_file():
                continue
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def assert_unchanged(before: dict[str, str], root: Path) -> None:
    after = snapshot(root)
    changed = [p for p, sha in before.items() if after.get(p) != sha]
    assert changed == [], f"files changed or removed: {changed}"


def one_line(err: str, *words: str) -> str:
    """The one stderr line holding every word (the file and the problem)."""
    lines = [line for line in err.splitlines() if all(w in line for w in words)]
    assert lines, f"no line with {words} in:\n{err}"
    return lines[0]


def only_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def rejected_codes(cube: Path) -> tuple[dict[str, int], set[str]]:
    with h5py.File(cube, "r") as h5:
        rejected = dict(zip(read_strings(h5["rejected/file"]),
                            h5["rejected/reason_code"][...].tolist(), strict=True))
        accepted = set(read_strings(h5["source_file"]))
    return rejected, accepted


def input_names(folder: Path) -> set[str]:
    return {printable(n) for n in os.listdir(folder) if n.startswith("spec-")}


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail instead of hanging (a FIFO opened by mistake blocks for ever)."""
    def expire(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------- bad spectra

def _truncated(folder):
    path = good(folder, 9)
    path.write_bytes(path.read_bytes()[:5000])
    return path


def _text(folder):
    path = folder / "spec-4000-55555-0009.fits"
    path.write_text("this is not FITS\n")
    return path


def _empty(folder):
    path = folder / "spec-4000-55555-0009.fits"
    path.write_bytes(b"")
    return path


def _truncated_gz(folder):
    raw = gzip.compress(good(folder, 9).read_bytes())
    (folder / "spec-4000-55555-0009.fits").unlink()
    path = folder / "spec-4000-55555-0009.fits.gz"
    path.write_bytes(raw[: len(raw) // 2])
    return path


def _not_gzip(folder):
    path = folder / "spec-4000-55555-0009.fits.gz"
    path.write_bytes(b"\x1f\x8b" + b"\x00" * 200)
    return path


def _plate_not_integer(folder):
    from astropy.io import fits

    path = good(folder, 9)
    with fits.open(path) as hdus:
        columns = [c for c in hdus[2].columns if c.name != "PLATE"]
        table = fits.BinTableHDU.from_columns(
            [fits.Column("PLATE", "8A", array=["abc"]), *columns], name="SPALL")
        fits.HDUList([fits.PrimaryHDU(), hdus[1].copy(), table]).writeto(path, overwrite=True)
    return path


def _all_nan(folder):
    return good(folder, 9, flux=np.full(4600, np.nan, np.float32))


def _scaled_1e30(folder):
    return good(folder, 9, flux=GOOD * np.float32(1e30))


def _one_pixel_1e30(folder):
    flux = GOOD.copy()
    flux[2000] = 1e30
    return good(folder, 9, flux=flux)


def _negative_ivar(folder):
    ivar = np.ones(4600, np.float32)
    ivar[10] = -1
    return good(folder, 9, ivar=ivar)


def _zero_ivar(folder):
    return good(folder, 9, ivar=np.zeros(4600, np.float32))


def _loglam(folder, loglam):
    from astropy.io import fits

    path = folder / "spec-4000-55555-0009.fits"
    table = fits.BinTableHDU.from_columns([
        fits.Column("flux", "E", array=np.ones(len(loglam))),
        fits.Column("ivar", "E", array=np.ones(len(loglam))),
        fits.Column("loglam", "E", array=loglam)])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    return path


def _decreasing(folder):
    return _loglam(folder, 3.9 - np.arange(100) * 1e-4)


def _off_grid(folder):
    return _loglam(folder, 3.6 + np.arange(100) * 1.3e-4)


def _no_loglam(folder):
    from astropy.io import fits

    path = folder / "spec-4000-55555-0009.fits"
    table = fits.BinTableHDU.from_columns([fits.Column("flux", "E", array=np.ones(10)),
                                           fits.Column("ivar", "E", array=np.ones(10))])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    return path


def _primary_only(folder):
    from astropy.io import fits

    path = folder / "spec-4000-55555-0009.fits"
    fits.PrimaryHDU().writeto(path)
    return path


def _folder(folder):
    path = folder / "spec-4000-55555-0009.fits"
    path.mkdir()
    return path


def _fifo(folder):
    path = folder / "spec-4000-55555-0009.fits"
    os.mkfifo(path)
    return path


def _dangling(folder):
    path = folder / "spec-4000-55555-0009.fits"
    path.symlink_to(folder / "nowhere.fits")
    return path


def _loop(folder):
    path = folder / "spec-4000-55555-0009.fits"
    path.symlink_to(path.name)
    return path


def _short(folder):
    return write_spec_lite(folder / "spec-4000-55555-0009.fits", 37000, GOOD[:1000], fiberid=9)


def _duplicate(folder):
    return good(folder, 1, name="spec-4000-55555-0001b.fits")


def _non_utf8_name(folder):
    name = os.fsdecode(b"spec-4000-55555-0009\xff.fits")
    return good(folder, 9, name=name)


# kind: (make the input, its Rejection code or None if accepted, words of its message)
BAD_SPECTRA = {
    "truncated_fits": (_truncated, R.unreadable, "not a readable FITS"),
    "text_file": (_text, R.unreadable, "not a readable FITS"),
    "empty_file": (_empty, R.unreadable, "not a readable FITS"),
    "truncated_gzip": (_truncated_gz, R.unreadable, "gzip"),
    "not_gzip": (_not_gzip, R.unreadable, "gzip"),
    "plate_not_integer": (_plate_not_integer, R.bad_values, "PLATE"),
    "all_flux_nan": (_all_nan, R.bad_values, "non-finite or absurd"),
    "spectrum_times_1e30": (_scaled_1e30, R.bad_values, "non-finite or absurd"),
    "one_pixel_1e30": (_one_pixel_1e30, None, "masked 1 pixels"),
    "negative_ivar": (_negative_ivar, R.bad_values, "negative"),
    "all_ivar_zero": (_zero_ivar, R.no_valid_pixels, "no pixel with ivar > 0"),
    "loglam_decreasing": (_decreasing, R.off_frame, "not increasing"),
    "loglam_off_grid": (_off_grid, R.off_frame, "not on the SDSS"),
    "no_loglam_column": (_no_loglam, R.missing_data, "no 'loglam' column"),
    "no_spectrum_hdu": (_primary_only, R.missing_data, "no spectrum table"),
    "folder_named_spec": (_folder, R.not_a_regular_file, "a folder"),
    "fifo_named_spec": (_fifo, R.not_a_regular_file, "FIFO"),
    "dangling_link": (_dangling, R.not_a_regular_file, "dangling"),
    "looping_link": (_loop, R.not_a_regular_file, "loops"),
    "low_coverage": (_short, R.low_coverage, "of the grid"),
    "duplicate_id": (_duplicate, R.duplicate, "duplicate PLATE-MJD-FIBER"),
    "non_utf8_name": (_non_utf8_name, None, None),
}


@pytest.mark.parametrize("kind", sorted(BAD_SPECTRA))
def test_build_accounts_for_a_bad_spectrum(kind, tmp_path, capsys):
    folder = tmp_path / "spectra"
    folder.mkdir()
    good(folder, 1), good(folder, 2)
    make, code, words = BAD_SPECTRA[kind]
    bad = make(folder)
    before, out = snapshot(tmp_path), tmp_path / "cube.h5"
    with deadline(60):
        rc, err = run(capsys, "build", "--spectra", folder, "--out", out, "--processes", 1)
    assert rc == 0, err
    rejected, accepted = rejected_codes(out)
    name = printable(bad.name)
    if code is None:
        assert name in accepted
    else:
        assert rejected[name] == code
        one_line(err, name, words)
    if words and code is None:
        one_line(err, name, words)
    assert accepted | set(rejected) == input_names(folder)  # every input accounted for
    assert_unchanged(before, tmp_path)
    if kind == "one_pixel_1e30":
        with h5py.File(out) as cube:
            row = list(read_strings(cube["source_file"])).index(name)
            assert cube["masked_values"][row] == 1 and np.isfinite(cube["flux"][row]).all()
            assert np.abs(cube["flux"][row]).max() < 10


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from test_inference_fixture import build_pair

    return build_pair(tmp_path_factory.mktemp("models"), latent=3)


@pytest.mark.parametrize("kind", sorted(BAD_SPECTRA))
def test_encode_gives_every_bad_spectrum_its_row(kind, pair, tmp_path, capsys):
    folder = tmp_path / "spectra"
    folder.mkdir()
    good(folder, 1), good(folder, 2)
    make, code, words = BAD_SPECTRA[kind]
    if code == R.duplicate:  # encode keeps duplicates: each file is its own row
        code, words = None, None
    bad = make(folder)
    before, out = snapshot(tmp_path), tmp_path / "codes.h5"
    with deadline(60):
        rc, err = run(capsys, "encode", "--model", pair.encoder, "--out", out,
                      "--processes", 1, folder)
    assert rc == (0 if code is None else 1), err
    with h5py.File(out) as h5:
        sources = [Path(s).name for s in read_strings(h5["SOURCE"])]
        flags = dict(zip(sources, h5["FLAG"][...].tolist(), strict=True))
        score = dict(zip(sources, h5["RECON_MSE_03"][...].tolist(), strict=True))
    assert set(flags) == input_names(folder) and len(sources) == len(flags)
    name = printable(bad.name)
    assert flags[name] == (code or 0)
    if code is None:
        assert np.isfinite(score[name])
    else:
        line = one_line(err, name, words)
        assert line.count(name) == 1  # the path once (it was printed twice)
    assert_unchanged(before, tmp_path)


def test_real_spectra_with_hostile_company_are_all_accounted_for(tmp_path, capsys):
    if not REAL_SPECTRA.is_dir():
        pytest.skip(f"real SDSS spectra not found at {REAL_SPECTRA} (../shared/data is absent)")
    folder = tmp_path / "spectra"
    folder.mkdir()
    real = sorted(REAL_SPECTRA.glob("spec-*.fits"))
    for path in real:
        (folder / path.name).symlink_to(path)
    broken = folder / "spec-9999-59999-0001.fits"
    broken.write_bytes(real[0].read_bytes()[:20000])
    os.mkfifo(folder / "spec-9999-59999-0002.fits")
    before, out = snapshot(tmp_path), tmp_path / "real.h5"
    with deadline(120):
        rc, err = run(capsys, "build", "--spectra", folder, "--min-snr", 0, "--out", out,
                      "--processes", 1)
    assert rc == 0, err
    rejected, accepted = rejected_codes(out)
    assert accepted | set(rejected) == input_names(folder)
    assert len(accepted) + len(rejected) == len(real) + 2
    assert rejected[broken.name] == R.unreadable and "FIFO" in err
    assert_unchanged(before, tmp_path)
    assert snapshot(REAL_SPECTRA.parent) == snapshot(REAL_SPECTRA.parent)  # read only


# ---------------------------------------------------------------- catalogue and truth

def _survey(folder: Path, n: int = 3) -> Path:
    spectra = folder / "spectra"
    spectra.mkdir(parents=True)
    for fiber in range(1, n + 1):
        good(spectra, fiber)
    return spectra


def _catalog(path: Path, fibers: list[int]) -> Path:
    from qsocube.builder.dr16q import write_catalog

    n = len(fibers)
    write_catalog(path, {"PLATE": [4000] * n, "MJD": [55555] * n, "FIBERID": fibers,
                         "SN_MEDIAN_ALL": [20.0] * n, "Z": [2.0] * n})
    return path


def test_duplicate_catalogue_rows_are_counted_not_silently_resolved(tmp_path, capsys):
    spectra = _survey(tmp_path)
    catalog = _catalog(tmp_path / "DR16Q_v4.fits", [1, 2, 3, 2])
    before, out = snapshot(tmp_path), tmp_path / "cube.h5"
    rc, err = run(capsys, "build", "--spectra", spectra, "--catalog", catalog, "--out", out)
    assert rc == 0, err
    one_line(err, "DR16Q_v4.fits", "1 catalogue rows repeat", "4000-55555-0002")
    rejected, accepted = rejected_codes(out)
    assert rejected == {"DR16Q_v4.fits": R.duplicate} and len(accepted) == 3
    assert_unchanged(before, tmp_path)


def test_a_spectrum_without_a_catalogue_row_is_rejected(tmp_path, capsys):
    spectra = _survey(tmp_path)
    catalog = _catalog(tmp_path / "DR16Q_v4.fits", [1, 2])
    before, out = snapshot(tmp_path), tmp_path / "cube.h5"
    rc, err = run(capsys, "build", "--spectra", spectra, "--catalog", catalog, "--out", out)
    assert rc == 0
    one_line(err, "spec-4000-55555-0003.fits", "no row for 4000-55555-0003")
    rejected, accepted = rejected_codes(out)
    assert rejected == {"spec-4000-55555-0003.fits": R.no_catalog_row}
    assert accepted | set(rejected) == input_names(spectra)
    assert_unchanged(before, tmp_path)


def _truth(path: Path, fibers: list[int], extra: dict) -> Path:
    from astropy.table import Table

    n = len(fibers)
    Table({"PLATE": [4000] * n, "MJD": [55555] * n, "FIBERID": fibers, **extra}).write(path)
    return path


def test_a_truth_column_named_like_a_cube_path_stays_data(tmp_path, capsys):
    spectra = _survey(tmp_path)
    truth = _truth(tmp_path / "truth.fits", [1, 2, 3],
                   {"/flux": np.full(3, 7.0), "../x": np.arange(3), "Z": np.ones(3)})
    before, out = snapshot(tmp_path), tmp_path / "cube.h5"
    rc, err = run(capsys, "build", "--spectra", spectra, "--truth", truth, "--out", out)
    assert rc == 0, err
    with h5py.File(out) as cube:
        assert cube["flux"].shape == (3, 1500) and cube["flux"].dtype == np.float32
        names = {name: cube[f"truth/{name}"].attrs["original_name"] for name in cube["truth"]
                 if "original_name" in cube[f"truth/{name}"].attrs}
        assert names == {"_flux": "/flux", "___x": "../x", "Z": "Z", "PLATE": "PLATE",
                         "MJD": "MJD", "FIBERID": "FIBERID"}
        assert (cube["truth/_flux"][...] == 7).all()
    from qsocube.core.validate import check_cube

    assert check_cube(out) == []
    assert_unchanged(before, tmp_path)


def test_a_truth_table_with_missing_rows_gives_nan_and_a_message(tmp_path, capsys):
    spectra = _survey(tmp_path)
    truth = _truth(tmp_path / "truth.fits", [1, 3], {"Z": [1.5, 2.5]})
    before, out = snapshot(tmp_path), tmp_path / "cube.h5"
    rc, err = run(capsys, "build", "--spectra", spectra, "--truth", truth, "--out", out)
    assert rc == 0, err
    one_line(err, "truth.fits", "no truth row for 1 of 3")
    with h5py.File(out) as cube:
        assert np.isnan(cube["truth/Z"][1]) and cube["truth"].attrs["n_missing"] == 1
    assert_unchanged(before, tmp_path)


# ---------------------------------------------------------------- build: options and outputs

@pytest.mark.parametrize("options, words", [
    (["--batch-size", "-1"], "--batch-size: must be at least 1"),
    (["--batch-size", "0"], "--batch-size: must be at least 1"),
    (["--n-pix", "1"], "--n-pix: must be at least 2"),
    (["--wave-min", "9000", "--wave-max", "3000"], "--wave-min 9000 must be below"),
    (["--min-covered-fraction", "1.5"], "--min-covered-fraction: must be in [0, 1]"),
    (["--min-snr", "nan"], "--min-snr: must be a finite number"),
    (["--processes", "0"], "--processes: must be at least 1"),
])
def test_build_options_are_checked_before_any_work(options, words, tmp_path, capsys):
    spectra = _survey(tmp_path)
    before, out = snapshot(tmp_path), tmp_path / "cube.h5"
    rc, err = run(capsys, "build", "--spectra", spectra, "--out", out, *options)
    assert rc == 2 and words in only_line(err)
    assert not out.exists()
    assert_unchanged(before, tmp_path)


def test_build_refuses_an_out_that_is_one_of_its_inputs(tmp_path, capsys):
    spectra = _survey(tmp_path)
    catalog = _catalog(tmp_path / "DR16Q_v4.fits", [1, 2, 3])
    before = snapshot(tmp_path)
    rc, err = run(capsys, "build", "--spectra", spectra, "--catalog", catalog, "--out", catalog,
                  "--overwrite")
    assert rc == 2 and "is one of the inputs" in only_line(err) and str(catalog) in err
    assert_unchanged(before, tmp_path)


def test_build_refuses_a_folder_as_out(tmp_path, capsys):
    spectra = _survey(tmp_path)
    (tmp_path / "cube.h5").mkdir()
    before = snapshot(tmp_path)
    rc, err = run(capsys, "build", "--spectra", spectra, "--out", tmp_path / "cube.h5",
                  "--overwrite")
    assert rc == 2 and "is a folder" in only_line(err)
    assert_unchanged(before, tmp_path)


def test_build_keeps_an_existing_out_and_foreign_temporaries(tmp_path, capsys):
    from qsocube.core.atomic import temporary_beside

    spectra = _survey(tmp_path)
    out = tmp_path / "cube.h5"
    out.write_bytes(b"previous cube")
    foreign = tmp_path / ".cube.h5.partial"  # someone else's: not ours to delete
    foreign.write_bytes(b"theirs")
    before = snapshot(tmp_path)
    rc, err = run(capsys, "build", "--spectra", spectra, "--out", out)
    assert rc == 2 and "--overwrite" in only_line(err) and str(out) in err
    assert_unchanged(before, tmp_path)
    # a temporary of a dead qsocube run is removed, with a line saying so
    ours = temporary_beside(out)
    stale = ours.with_name(ours.name.replace(f"-{os.getpid()}.", "-4194311."))
    stale.write_bytes(b"left by a killed build")
    rc, err = run(capsys, "build", "--spectra", spectra, "--out", out, "--overwrite")
    assert rc == 0 and not stale.exists() and foreign.read_bytes() == b"theirs"
    one_line(err, "removed", stale.name, "interrupted")


# ---------------------------------------------------------------- encode: misuse and damage

def test_encode_refuses_an_out_that_is_one_of_its_inputs(pair, tmp_path, capsys):
    from test_inference_fixture import draw

    flux, ivar = draw(np.random.default_rng(3), pair, 4)
    arrays = tmp_path / "grid.npy"
    np.save(arrays, np.stack([flux, ivar]))
    spectra = _survey(tmp_path)
    before = snapshot(tmp_path)
    for out in (arrays.with_suffix(".h5"), ):
        arrays.with_suffix(".h5").symlink_to(arrays)
        rc, err = run(capsys, "encode", "--model", pair.encoder, "--out", out, "--overwrite",
                      spectra, arrays)
        assert rc == 2 and "is one of the inputs" in only_line(err)
    assert_unchanged(before, tmp_path)


@pytest.mark.parametrize("options, words", [
    (["--batch-size", "0"], "--batch-size: must be at least 1"),
    (["--threads", "-2"], "--threads: must be at least 1"),
    (["--min-covered-fraction", "-0.1"], "--min-covered-fraction: must be in [0, 1]"),
])
def test_encode_options_are_checked_before_any_work(options, words, pair, tmp_path, capsys):
    spectra = _survey(tmp_path)
    before, out = snapshot(tmp_path), tmp_path / "codes.h5"
    rc, err = run(capsys, "encode", "--model", pair.encoder, "--out", out, spectra, *options)
    assert rc == 2 and words in only_line(err) and not out.exists()
    assert_unchanged(before, tmp_path)


def test_encode_masks_an_absurd_pixel_of_an_array_input(pair, tmp_path, capsys):
    from test_inference_fixture import draw

    flux, ivar = draw(np.random.default_rng(5), pair, 4)
    flux[1, 700] = 1e30
    arrays = tmp_path / "grid.npy"
    np.save(arrays, np.stack([flux, ivar]))
    before, out = snapshot(tmp_path), tmp_path / "codes.csv"
    rc, err = run(capsys, "encode", "--model", pair.encoder, "--out", out, arrays)
    assert rc == 0, err
    import csv

    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and [r["FLAG"] for r in rows] == ["0"] * 4
    assert np.isfinite(float(rows[1]["RECON_MSE_03"]))
    assert_unchanged(before, tmp_path)


def _corrupt_chunk(path: Path, dataset: str, chunk: int = 0) -> None:
    with h5py.File(path, "r") as h5:
        info = h5[dataset].id.get_chunk_info(chunk)
    with open(path, "r+b") as handle:
        handle.seek(info.byte_offset + min(100, info.size // 2))
        handle.write(b"\xff" * 16)


def test_encode_flags_only_the_rows_of_a_damaged_cube_chunk(pair, tmp_path, capsys):
    from fixtures.synthetic_cube import write_synthetic_cube

    cube = write_synthetic_cube(tmp_path / "cube.h5", 200, seed=2)
    _corrupt_chunk(cube, "flux", 1)  # rows 64-127
    before, out = snapshot(tmp_path), tmp_path / "codes.h5"
    rc, err = run(capsys, "encode", "--model", pair.encoder, "--out", out, cube)
    assert rc == 1 and "64 rejected (64 unreadable_chunk)" in err
    one_line(err, "cube.h5[64]", "rows 64-127 unreadable", "unreadable_chunk")
    with h5py.File(out) as h5:
        flag = h5["FLAG"][...]
    assert flag.tolist() == [0] * 64 + [R.unreadable_chunk] * 64 + [0] * 72
    assert_unchanged(before, tmp_path)


# ---------------------------------------------------------------- validate

def _small_release(tmp_path: Path, capsys) -> Path:
    spectra = _survey(tmp_path)
    release = tmp_path / "release"
    release.mkdir()
    assert run(capsys, "build", "--spectra", spectra, "--out", release / "qsocube.h5")[0] == 0
    return release


def test_validate_does_not_follow_a_manifest_outside_the_release(tmp_path, capsys):
    release = _small_release(tmp_path, capsys)
    (tmp_path / "secret.txt").write_text("outside")
    (release / "MANIFEST.sha256").write_text(f"{'0' * 64}  ../secret.txt\n")
    before = snapshot(tmp_path)
    rc, err = run(capsys, "validate", release)
    assert rc == 1
    one_line(err, "MANIFEST.sha256", "../secret.txt", "outside the release")
    assert_unchanged(before, tmp_path)


def test_validate_reports_a_manifest_that_is_not_utf8(tmp_path, capsys):
    release = _small_release(tmp_path, capsys)
    (release / "MANIFEST.sha256").write_bytes(b"\xff\xfe not text\n")
    before = snapshot(tmp_path)
    rc, err = run(capsys, "validate", release)
    assert rc == 1
    one_line(err, "MANIFEST.sha256", "not UTF-8")
    assert_unchanged(before, tmp_path)


def test_validate_never_opens_a_fifo(tmp_path, capsys):
    fifo = tmp_path / "cube.h5"
    os.mkfifo(fifo)
    with deadline(30):
        rc, err = run(capsys, "validate", fifo)
    assert rc == 1 and "not a regular file" in only_line(err)


# ---------------------------------------------------------------- train

TRAIN = ["--latent-sizes", "3", "--calls", "1", "--max-epochs", "2", "--batch-size", "32",
         "--hidden", "32,16", "--processes", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny cube as built, and a copy trained once (its state and models beside it)."""
    pytest.importorskip("torch")
    from fixtures.synthetic_cube import write_synthetic_cube

    folder = tmp_path_factory.mktemp("trained")
    built = write_synthetic_cube(folder / "built.h5", 160, seed=4)
    release = folder / "release"
    release.mkdir()
    shutil.copyfile(built, release / "qsocube.h5")
    assert main(["train", str(release / "qsocube.h5"), *TRAIN]) == 0
    return {"built": built, "release": release}


def _fresh_copy(trained, tmp_path: Path) -> Path:
    """The trained release with the cube as built: the search is recorded, the model group
    is not, so training resumes at the chosen call's checkpoint."""
    release = tmp_path / "release"
    shutil.copytree(trained["release"], release)
    shutil.copyfile(trained["built"], release / "qsocube.h5")
    return release


def test_a_damaged_checkpoint_is_discarded_and_its_call_retrained(trained, tmp_path, capsys):
    release = _fresh_copy(trained, tmp_path)
    checkpoint = release / ".state" / "train_latent03_best.pt"
    checkpoint.write_bytes(b"\x80\x04garbage, not a checkpoint")
    rc, err = run(capsys, "train", release / "qsocube.h5", *TRAIN)
    assert rc == 0, err
    one_line(err, str(checkpoint), "does not load", "discarded")
    one_line(err, "retraining call 1")
    with h5py.File(release / "qsocube.h5") as cube:
        assert np.isfinite(cube["models/latent_03/recon_mse"][...]).all()


def test_a_damaged_search_state_is_discarded_and_the_search_rerun(trained, tmp_path, capsys):
    release = _fresh_copy(trained, tmp_path)
    state = release / ".state" / "train_latent03.json"
    state.write_text("{not json")
    rc, err = run(capsys, "train", release / "qsocube.h5", *TRAIN)
    assert rc == 0, err
    one_line(err, str(state), "does not load", "discarded")


def test_training_is_not_poisoned_by_one_absurd_spectrum(trained, tmp_path, capsys):
    release = _fresh_copy(trained, tmp_path)
    shutil.rmtree(release / ".state")
    cube = release / "qsocube.h5"
    with h5py.File(cube, "r+") as h5:  # a cube from elsewhere: one pixel of 1e30
        row = int(np.flatnonzero(h5["split"][...] == 0)[0])
        column = int(np.flatnonzero(h5["mask"][row] == 0)[0])
        h5["flux"][row, column] = 1e30
    rc, err = run(capsys, "train", cube, *TRAIN)
    assert rc == 0, err
    assert "diverged" not in err
    with h5py.File(cube) as h5:
        assert np.isfinite(h5["models/latent_03/search/objective"][...]).all()


@pytest.mark.parametrize("damage, code, words", [
    ("flux_chunk", 2, "qsocube validate"),
    ("calls_zero", 2, "--calls: must be at least 1"),
    ("seed_negative", 2, "--seed: must be at least 0"),
    ("folder", 2, "no such cube"),
])
def test_train_stops_in_one_line(damage, code, words, trained, tmp_path, capsys):
    cube = tmp_path / "qsocube.h5"
    shutil.copyfile(trained["built"], cube)
    options = list(TRAIN)
    if damage == "flux_chunk":
        _corrupt_chunk(cube, "flux", 1)
    elif damage == "calls_zero":
        options[options.index("--calls") + 1] = "0"
    elif damage == "seed_negative":
        options += ["--seed", "-1"]
    elif damage == "folder":
        cube.unlink()
        cube.mkdir()
    before = snapshot(tmp_path)
    rc, err = run(capsys, "train", cube, *options)
    assert rc == code and words in only_line(err)
    assert words.startswith("--") or str(cube) in err
    assert_unchanged(before, tmp_path)


# ---------------------------------------------------------------- analyze

def test_analyze_stops_in_one_line_on_a_damaged_cube(tmp_path, capsys):
    from fixtures.analysis_release import write_fixture_release

    cube = write_fixture_release(tmp_path / "release", n=120, n_pix=200)
    _corrupt_chunk(cube, "models/latent_03/recon_mse")
    before = snapshot(tmp_path)
    rc, err = run(capsys, "analyze", tmp_path / "release", "--quick")
    assert rc == 1 and "qsocube validate" in only_line(err) and "qsocube.h5" in err
    assert_unchanged(before, tmp_path)


def test_analyze_checks_its_options(tmp_path, capsys):
    rc, err = run(capsys, "analyze", tmp_path, "--corner-model", "0")
    assert rc == 2 and "--corner-model: must be at least 1" in only_line(err)


# ---------------------------------------------------------------- release and simulate

@pytest.mark.parametrize("case, words", [
    ("calls_zero", "--calls: must be at least 1"),
    ("epochs_text", "--max-epochs: expected an integer"),
    ("bad_catalog", "not a readable FITS catalogue"),
    ("catalog_without_spectra", "--catalog goes with --spectra"),
    ("missing_spectra", "no such file, folder"),
    ("foreign_folder", "was not created by 'qsocube release'"),
    ("out_is_a_file", "exists and is not a folder"),
])
def test_release_checks_every_option_before_any_work(case, words, tmp_path, capsys):
    spectra = _survey(tmp_path)
    out = tmp_path / "release"
    options = ["--profile", "smoke", "--out", out]
    if case == "calls_zero":
        options += ["--calls", "0"]
    elif case == "epochs_text":
        options += ["--max-epochs", "many"]
    elif case == "bad_catalog":
        (tmp_path / "bad.fits").write_text("not a catalogue")
        options += ["--spectra", spectra, "--catalog", tmp_path / "bad.fits"]
    elif case == "catalog_without_spectra":
        options += ["--catalog", _catalog(tmp_path / "DR16Q_v4.fits", [1])]
    elif case == "missing_spectra":
        options += ["--spectra", tmp_path / "nowhere"]
    elif case == "foreign_folder":
        out.mkdir()
        (out / "my_notes.txt").write_text("mine")
        (out / ".old.partial").write_text("mine too")
    elif case == "out_is_a_file":
        out.write_text("a file")
    before = snapshot(tmp_path)
    rc, err = run(capsys, "release", *options)
    assert rc == 2 and words in only_line(err)
    assert_unchanged(before, tmp_path)
    if case not in ("foreign_folder", "out_is_a_file"):
        assert not out.exists()  # nothing was started


@pytest.mark.parametrize("options, words", [
    (["--n", "0"], "--n: must be at least 1"),
    (["--n", "5", "--seed", "-1"], "--seed: must be at least 0"),
    (["--n", "5", "--missing-spectrum-fraction", "1"], "must be in [0, 1)"),
    (["--n", "5", "--out-is-file"], "exists and is not a folder"),
])
def test_simulate_checks_its_options(options, words, tmp_path, capsys):
    out = tmp_path / "survey"
    if "--out-is-file" in options:
        options = options[:-1]
        out.write_text("a file")
    before = snapshot(tmp_path)
    rc, err = run(capsys, "simulate", "--out", out, *options)
    assert rc == 2 and words in only_line(err)
    assert_unchanged(before, tmp_path)


# ---------------------------------------------------------------- processes: kill -9, two writers

def _many_spectra(folder: Path, n: int) -> Path:
    folder.mkdir()
    first = good(folder, 1)
    for fiber in range(2, n + 1):  # the same bytes under many names: read n times
        os.link(first, folder / f"spec-4000-55555-{fiber:04d}.fits")
    return folder


def _kill_when(command: list[str], ready, timeout: float = 60) -> None:
    """Start ``command``, SIGKILL it as soon as ``ready()`` is true."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        end = time.monotonic() + timeout
        while not ready() and time.monotonic() < end and process.poll() is None:
            time.sleep(0.005)
        assert process.poll() is None, "finished before it could be killed"
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait()


def _partials(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(".partial")]


def test_kill_9_during_build_keeps_the_previous_cube_and_the_rerun_completes(tmp_path, capsys):
    spectra = _many_spectra(tmp_path / "spectra", 600)
    out = tmp_path / "cube.h5"
    assert run(capsys, "build", "--spectra", spectra, "--out", out)[0] == 0
    previous = out.read_bytes()
    _kill_when([*PYTHON, "build", "--spectra", str(spectra), "--out", str(out), "--overwrite",
                "--processes", "1", "--batch-size", "8"], lambda: _partials(tmp_path))
    assert out.read_bytes() == previous and _partials(tmp_path)
    rc, err = run(capsys, "build", "--spectra", spectra, "--out", out, "--overwrite")
    assert rc == 0 and not _partials(tmp_path)
    one_line(err, "removed", ".partial", "interrupted")
    rejected, accepted = rejected_codes(out)
    assert len(accepted) == 1 and len(rejected) == 599  # the same spectrum 600 times


def test_kill_9_during_encode_keeps_the_previous_output(pair, tmp_path, capsys):
    spectra = _many_spectra(tmp_path / "spectra", 600)
    out = tmp_path / "codes.csv"
    assert run(capsys, "encode", "--model", pair.encoder, "--out", out, spectra)[0] == 0
    previous = out.read_bytes()
    _kill_when([*PYTHON, "encode", "--model", str(pair.encoder), "--out", str(out),
                "--overwrite", "--processes", "1", "--batch-size", "8", str(spectra)],
               lambda: _partials(tmp_path))
    assert out.read_bytes() == previous
    rc, err = run(capsys, "encode", "--model", pair.encoder, "--out", out, "--overwrite",
                  spectra)
    assert rc == 0 and not _partials(tmp_path) and len(out.read_text().splitlines()) == 601


def test_kill_9_during_train_keeps_the_cube_and_the_rerun_completes(trained, tmp_path, capsys):
    cube = tmp_path / "qsocube.h5"
    shutil.copyfile(trained["built"], cube)
    before = snapshot(tmp_path)
    state = tmp_path / ".state" / "train_latent03.json"
    options = [*TRAIN]
    options[options.index("--calls") + 1] = "3"
    options[options.index("--max-epochs") + 1] = "40"
    _kill_when([*PYTHON, "train", str(cube), *options], state.exists, timeout=120)
    assert_unchanged(before, tmp_path)  # the cube is written back only at the end
    recorded = json.loads(state.read_text())["calls"]
    assert 1 <= len(recorded) < 3
    rc, err = run(capsys, "train", cube, *options)
    assert rc == 0, err
    with h5py.File(cube) as h5:
        assert len(h5["models/latent_03/search/lambda"]) == 3


def test_two_builds_to_one_out_never_replace_each_other(tmp_path):
    spectra = _many_spectra(tmp_path / "spectra", 1500)
    out = tmp_path / "cube.h5"
    command = [*PYTHON, "build", "--spectra", str(spectra), "--out", str(out), "--processes",
               "1"]
    first = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 60
    while not _partials(tmp_path) and time.monotonic() < end:
        time.sleep(0.005)
    second = subprocess.run(command, capture_output=True, text=True, timeout=120)
    _, first_err = first.communicate(timeout=120)
    assert first.returncode == 0, first_err
    assert second.returncode == 2
    line = only_line(second.stderr)
    assert str(out) in line and ("another qsocube run" in line or "exists" in line)
    from qsocube.core.validate import check_cube

    assert check_cube(out) == []


def test_a_tool_deletes_only_what_it_recognisably_wrote(tmp_path):
    """The core of ownership (qsocube.core.atomic): a marked folder, its patterns only."""
    from qsocube.core.atomic import claim_folder, owner_of, remove_owned
    from qsocube.core.errors import UsageError

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "DR16Q_v4.fits").write_text("someone's catalogue")
    before = snapshot(tmp_path)
    with pytest.raises(UsageError, match="not empty and was not created by 'qsocube simulate'"):
        claim_folder(theirs, "simulate", ["DR16Q_v4.fits"])
    with pytest.raises(UsageError, match="refusing to delete"):
        remove_owned(theirs, "simulate")
    assert_unchanged(before, tmp_path)
    ours = tmp_path / "ours"
    assert claim_folder(ours, "simulate", ["spectra/spec-*.fits", "DR16Q_v4.fits"]) is False
    assert owner_of(ours) == "simulate"
    (ours / "spectra").mkdir()
    (ours / "spectra" / "spec-1.fits").write_text("x")
    (ours / "notes.txt").write_text("kept")
    messages: list[str] = []
    assert claim_folder(ours, "simulate", ["spectra/spec-*.fits", "DR16Q_v4.fits"]) is True
    assert remove_owned(ours, "simulate", messages.append) == [ours / "spectra" / "spec-1.fits"]
    assert (ours / "notes.txt").read_text() == "kept" and "removed 1 file" in messages[0]
    with pytest.raises(UsageError, match="belongs to 'qsocube simulate'"):
        claim_folder(ours, "release", ["qsocube.h5"])
