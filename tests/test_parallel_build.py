"""The parallel paths of the build (local processes, Dask) give the serial path's cube."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from qsocube.builder.build import BuildConfig, build_cube

VARIABLES = ("flux", "ivar", "mask", "norm", "split", "spec_id", "catalog/Z", "catalog/PLATE")
PATHS = {"processes": {"processes": 2}, "dask": {"workers": 2}}


def _parallel(path: str) -> dict:
    if path == "dask":
        pytest.importorskip("dask.distributed")
    return PATHS[path]


@pytest.mark.parametrize("path", PATHS)
def test_parallel_build_equals_serial(real_spectra: Path, tmp_path: Path, path: str):
    config = BuildConfig(min_snr=0, batch_size=40)
    serial, parallel = tmp_path / "serial.h5", tmp_path / "parallel.h5"
    build_cube([real_spectra], serial, config=config, report=lambda _: None)
    messages: list[str] = []
    build_cube([real_spectra], parallel, config=config, report=messages.append,
               **_parallel(path))
    if path == "processes":
        assert any("on 2 local processes" in m for m in messages)
    with h5py.File(serial) as a, h5py.File(parallel) as b:
        for name in VARIABLES:
            np.testing.assert_array_equal(a[name][...], b[name][...], err_msg=name)
        assert a.attrs["inputs_sha256"] == b.attrs["inputs_sha256"]
        np.testing.assert_array_equal(a["rejected/reason"][...], b["rejected/reason"][...])


@pytest.mark.parametrize("path", PATHS)
def test_parallel_build_with_a_catalogue_equals_serial(tmp_path: Path, path: str):
    from qsocube.builder.simulate import simulate_survey

    survey = tmp_path / "survey"
    simulate_survey(60, 3, survey, progress=None)
    config = BuildConfig(batch_size=16)
    cubes = {}
    for name, options in (("serial", {}), ("parallel", _parallel(path))):
        cubes[name] = tmp_path / f"{name}.h5"
        build_cube([survey / "spectra"], cubes[name], catalog_path=survey / "DR16Q_v4.fits",
                   truth_path=survey / "truth.fits", config=config, report=lambda _: None,
                   **options)
    with h5py.File(cubes["serial"]) as a, h5py.File(cubes["parallel"]) as b:
        for name in (*VARIABLES, "catalog/BI_CIV", "catalog/NHI_DLA", "truth/Z"):
            np.testing.assert_array_equal(a[name][...], b[name][...], err_msg=name)
