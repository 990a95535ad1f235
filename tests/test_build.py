"""Building cubes: real spectra, bad inputs accounted for, atomic output, validation."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from qsocube.builder.build import BuildConfig, build_cube
from qsocube.core.cube import read_strings
from qsocube.core.errors import Rejection
from qsocube.core.validate import check_cube


def _quiet(_: str) -> None:
    pass


def test_real_spectra_build_without_catalogue(real_spectra: Path, tmp_path: Path):
    out = tmp_path / "real.h5"
    summary = build_cube([real_spectra], out, config=BuildConfig(min_snr=0), report=_quiet)
    assert summary["files"] == 258
    assert summary["accepted"] + summary["rejected"] == 258
    assert check_cube(out) == []
    with open(real_spectra.parent / "MANIFEST.csv") as handle:
        manifest = {row["file"]: row for row in csv.DictReader(handle)}
    with h5py.File(out) as cube:
        files = read_strings(cube["source_file"])
        z = cube["catalog/Z"][...]
        mask = cube["mask"][...]
        for name, redshift in zip(files, z, strict=True):
            assert redshift == pytest.approx(float(manifest[name]["Z"]), rel=1e-6)
        wave = cube["wavelength"][...]
        for row, name in enumerate(files):
            covered = wave[(mask[row] & 1) == 0]
            assert covered.min() >= float(manifest[name]["wave_min"]) * (1 - 2e-4)
        # SDSS-I spectra start near 3800 A: their blue end is flagged as not covered
        sdss1 = [i for i, n in enumerate(files) if manifest[n]["meta_hdu"] == "SPECOBJ"]
        assert sdss1 and all((mask[i, :20] & 1).all() for i in sdss1)
        assert (cube["catalog/in_catalog"][...] == 0).all()
        rejected = read_strings(cube["rejected/file"])
        assert set(rejected) | set(files) == set(manifest)


def test_seed_coverage_policy_keeps_only_full_coverage(real_spectra: Path, tmp_path: Path):
    out = tmp_path / "full.h5"
    build_cube([real_spectra], out, config=BuildConfig(min_snr=0, coverage="full"),
               report=_quiet)
    with h5py.File(out) as cube:
        assert ((cube["mask"][...] & 1) == 0).all()
        n = cube["spectrum"].shape[0]
    assert 100 <= n <= 128  # 128 of the 258 cover 3625-9000 A


def _make_inputs(folder: Path, spec_writer) -> None:
    flux = np.linspace(2, 1, 4600).astype(np.float32)
    for fiber in range(1, 6):
        spec_writer(folder / f"spec-4000-55555-{fiber:04d}.fits", 35500, flux, fiberid=fiber)
    spec_writer(folder / "spec-4000-55555-0006.fits", 35500, flux, fiberid=6, snr=3.0)
    spec_writer(folder / "spec-4000-55555-0007.fits", 37000, flux[:1000], fiberid=7)
    (folder / "spec-4000-55555-0008.fits").write_bytes(b"SIMPLE  =" + b" " * 100)
    dup = folder / "copy"
    dup.mkdir()
    spec_writer(dup / "spec-4000-55555-0001.fits", 35500, flux, fiberid=1)


def test_every_bad_input_is_accounted_for(tmp_path: Path, spec_writer):
    _make_inputs(tmp_path, spec_writer)
    out = tmp_path / "cube.h5"
    summary = build_cube([tmp_path], out, report=_quiet)
    assert summary == {**summary, "files": 9, "accepted": 5, "rejected": 4}
    with h5py.File(out) as cube:
        reasons = dict(zip(read_strings(cube["rejected/file"]),
                           read_strings(cube["rejected/reason"]), strict=True))
        assert "below the selection threshold" in reasons["spec-4000-55555-0006.fits"]
        assert "of the grid" in reasons["spec-4000-55555-0007.fits"]
        assert "not a readable FITS file" in reasons["spec-4000-55555-0008.fits"]
        assert "duplicate" in reasons["spec-4000-55555-0001.fits"]
        codes = dict(zip(read_strings(cube["rejected/file"]),
                         cube["rejected/reason_code"][...].tolist(), strict=True))
        assert codes == {"spec-4000-55555-0006.fits": Rejection.low_snr,
                         "spec-4000-55555-0007.fits": Rejection.low_coverage,
                         "spec-4000-55555-0008.fits": Rejection.unreadable,
                         "spec-4000-55555-0001.fits": Rejection.duplicate}
        attrs = cube["rejected/reason_code"].attrs
        assert attrs["flag_meanings"] == Rejection.flag_meanings()
        assert attrs["flag_values"].tolist() == Rejection.flag_values()
        assert attrs["flag_values"].dtype == np.uint8
        assert sorted(cube["split"][...].tolist()) == sorted(cube["split"][...].tolist())
        inside = (10 ** ((35500 + np.arange(4600)) * 1e-4) > 3625) & (
            10 ** ((35500 + np.arange(4600)) * 1e-4) < 9000)
        np.testing.assert_allclose(cube["norm"][...], np.median(np.linspace(2, 1, 4600)[inside]),
                                   rtol=2e-3)
    assert check_cube(out) == []


def test_existing_output_is_kept_without_overwrite(tmp_path: Path, spec_writer):
    _make_inputs(tmp_path, spec_writer)
    out = tmp_path / "cube.h5"
    out.write_bytes(b"previous release")
    with pytest.raises(FileExistsError):
        build_cube([tmp_path], out, report=_quiet)
    assert out.read_bytes() == b"previous release"
    result = subprocess.run([sys.executable, "-m", "qsocube.cli", "build", "--spectra",
                             str(tmp_path), "--out", str(out)], capture_output=True, text=True)
    assert result.returncode == 2 and "--overwrite" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_interrupted_build_leaves_previous_cube(tmp_path: Path, spec_writer, monkeypatch):
    _make_inputs(tmp_path, spec_writer)
    out = tmp_path / "cube.h5"
    build_cube([tmp_path], out, report=_quiet)
    before = out.read_bytes()

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("qsocube.builder.cubewriter.split_of", explode)
    with pytest.raises(KeyboardInterrupt):
        build_cube([tmp_path], out, overwrite=True, report=_quiet)
    assert out.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_validate_catches_corruption(tmp_path: Path, spec_writer):
    _make_inputs(tmp_path, spec_writer)
    out = tmp_path / "cube.h5"
    build_cube([tmp_path], out, report=_quiet)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    assert check_cube(truncated)
    broken = tmp_path / "broken.h5"
    broken.write_bytes(out.read_bytes())
    with h5py.File(broken, "a") as cube:
        del cube["catalog/Z"]
        cube["mask"][0, :5] = 1
    problems = check_cube(broken)
    assert any("/catalog/Z: missing" in p for p in problems)
    flipped = tmp_path / "flipped.h5"
    data = bytearray(out.read_bytes())
    with h5py.File(out) as cube:
        offset = cube["flux"].id.get_chunk_info(0).byte_offset
    data[offset + 50] ^= 0xFF
    flipped.write_bytes(bytes(data))
    assert any("checksum" in p or "unreadable" in p for p in check_cube(flipped))
    result = subprocess.run([sys.executable, "-m", "qsocube.cli", "validate", str(flipped)],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "qsocube validate" in result.stderr


def test_cube_opens_in_xarray_with_named_dimensions(tmp_path: Path, spec_writer):
    xr = pytest.importorskip("xarray")
    _make_inputs(tmp_path, spec_writer)
    out = tmp_path / "cube.h5"
    build_cube([tmp_path], out, report=_quiet)
    tree = xr.open_datatree(out, engine="h5netcdf")
    assert tree["flux"].dims == ("spectrum", "wavelength")
    assert tree["catalog"]["NHI_DLA"].dims == ("spectrum", "dla")
    assert tree["flux"].attrs["units"].startswith("1e-17")
    assert tree.sizes["spectrum"] == 5


@pytest.mark.parametrize("tool, args", [("ncdump", ["-h"]), ("h5dump", ["-H"])])
def test_netcdf_and_hdf5_tools_read_the_cube(tmp_path: Path, spec_writer, tool, args):
    import shutil

    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (Debian: netcdf-bin / hdf5-tools)")
    _make_inputs(tmp_path, spec_writer)
    out = tmp_path / "cube.h5"
    build_cube([tmp_path], out, report=_quiet)
    result = subprocess.run([tool, *args, str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    if tool == "ncdump":
        # a fixed dimension: an unlimited one makes h5netcdf (xarray) ask every attached
        # variable for its length on each shape it reads (15 s to open a smoke release)
        assert "spectrum = 5 ;" in result.stdout
        assert "float flux(spectrum, wavelength)" in result.stdout
        assert "group: catalog" in result.stdout and "NHI_DLA(spectrum, dla)" in result.stdout
        assert "mask:flag_masks = 1UB, 2UB" in result.stdout
    else:
        assert 'DATASET "flux"' in result.stdout and 'GROUP "catalog"' in result.stdout
