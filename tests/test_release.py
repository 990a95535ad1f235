"""End to end: the smoke release as `make product PROFILE=smoke` builds it, and resuming."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from qsocube.core.defaults import LATENT_SIZES  # noqa: E402
from qsocube.core.validate import validate

TRAINING_MARKER = "call 1"


def test_smoke_release_is_complete_and_valid(smoke_release: Path):
    assert validate(smoke_release) == []
    onnx = pytest.importorskip("onnx")
    models = sorted((smoke_release / "models").glob("*.onnx"))
    assert len(models) == 10
    for path in models:
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    with h5py.File(smoke_release / "qsocube.h5") as cube:
        assert sorted(cube["models"]) == [f"latent_{n:02d}" for n in LATENT_SIZES]
        assert cube.attrs["source"] == "simulated"
        assert "truth" in cube and cube["truth/Z"].shape == cube["catalog/Z"].shape
        n = cube["spectrum"].shape[0]
        assert 250 < n < 400
        for size in LATENT_SIZES:
            group = cube[f"models/latent_{size:02d}"]
            assert group["latent_mean"].shape == (n, size)
            assert np.isfinite(group["recon_mse"][...]).all()
            assert len(group["search/lambda"]) >= 2
    for name in ("report/index.html", "catalog/qsocube_vac.fits", "catalog/qsocube_vac.csv",
                 "MANIFEST.sha256"):
        assert (smoke_release / name).is_file(), name


def test_release_encoders_reproduce_the_cube(smoke_release: Path):
    from qsocube.inference import check_against_cube

    for encoder in sorted((smoke_release / "models").glob("*_encoder.onnx")):
        assert check_against_cube(smoke_release / "qsocube.h5", encoder) <= 1e-5


def test_a_damaged_model_fails_validation(smoke_release: Path, tmp_path: Path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(smoke_release, copy)
    model = sorted((copy / "models").glob("*.onnx"))[0]
    model.write_bytes(model.read_bytes() + b"\0")
    problems = validate(copy)
    assert any(model.name in p for p in problems)


def _run_until(out: Path, marker: str, extra_seconds: float) -> None:
    """Start a release, wait for ``marker`` on its progress output, then SIGKILL it."""
    process = subprocess.Popen([sys.executable, "-m", "qsocube.cli", "release", "--profile",
                                "smoke", "--out", str(out)], stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + 600
    for line in process.stderr:
        if marker in line or time.monotonic() > deadline:
            break
    time.sleep(extra_seconds)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_killed_release_resumes_to_the_same_result(smoke_release: Path, tmp_path: Path):
    from qsocube.core.validate import check_cube

    out = tmp_path / "smoke"
    for marker, delay in (("[1/5] simulating", 2.0), ("[2/5] building", 0.5),
                          (TRAINING_MARKER, 0.0)):
        _run_until(out, marker, delay)
        cube = out / "qsocube.h5"
        if cube.exists():  # whatever was killed, the cube under its name is whole
            assert check_cube(cube) == [], marker
    result = subprocess.run([sys.executable, "-m", "qsocube.cli", "release", "--profile", "smoke",
                             "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert validate(out) == []
    with h5py.File(out / "qsocube.h5") as resumed, h5py.File(smoke_release / "qsocube.h5") as ref:
        for name in ("flux", "ivar", "mask", "spec_id", "catalog/Z"):
            np.testing.assert_array_equal(resumed[name][...], ref[name][...], err_msg=name)
        for size in LATENT_SIZES:
            group = f"models/latent_{size:02d}"
            np.testing.assert_allclose(resumed[f"{group}/latent_mean"][...],
                                       ref[f"{group}/latent_mean"][...], atol=1e-6)
            np.testing.assert_array_equal(resumed[f"{group}/search/lambda"][...],
                                          ref[f"{group}/search/lambda"][...])


def test_stage_records_change_with_the_software_version(monkeypatch):
    from qsocube import pipeline as release

    settings = {"n_quasars": 400, "seed": 1, "n_calls": 2}
    before = (release.simulate_key(settings),
              release.build_key("{}", "abc", Path("in/spectra"), None))
    assert release.simulate_key({**settings, "n_calls": 9}) == before[0]  # not an input
    assert release.build_key("{}", "abd", Path("in/spectra"), None) != before[1]
    monkeypatch.setattr(release, "__version__", "99.0.0")
    after = (release.simulate_key(settings),
             release.build_key("{}", "abc", Path("in/spectra"), None))
    assert after[0] != before[0] and after[1] != before[1]
