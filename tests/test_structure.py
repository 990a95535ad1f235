"""One home per concept: each shared concept's own behaviour, tested where it lives.

Errors and rejection codes (qsocube.core.errors), atomic writes (qsocube.core.atomic),
pools and Dask loops (qsocube.core.parallel), the Dask check (qsocube.core.cluster), input
discovery (qsocube.core.inputs), release names (qsocube.core.layout), ONNX sessions
(qsocube.core.onnxmodel) and defaults (qsocube.core.defaults); and that nothing else
re-implements them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from qsocube.core import atomic, defaults, layout
from qsocube.core.errors import (
    AnalysisError,
    ClusterError,
    InputError,
    MissingInputError,
    ModelError,
    QsocubeError,
    Rejection,
    UsageError,
)

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "qsocube"


def _sources(exclude: tuple[str, ...] = ()) -> dict[Path, str]:
    return {p: p.read_text() for p in PACKAGE.rglob("*.py")
            if str(p.relative_to(PACKAGE)) not in exclude}


# ---------------------------------------------------------------- errors and rejections

def test_rejection_codes_are_stable_and_described() -> None:
    """The codes are stored in cubes and encode outputs: never renumbered."""
    assert {r.name: int(r) for r in Rejection} == {
        "ok": 0, "unreadable": 1, "not_a_regular_file": 2, "missing_data": 3,
        "non_finite_values": 4, "bad_values": 5, "off_frame": 6, "no_valid_pixels": 7,
        "duplicate": 8, "no_catalog_row": 9, "no_snr": 10, "low_snr": 11,
        "low_coverage": 12, "partial_coverage": 13, "bad_normalisation": 14,
        "unreadable_chunk": 15, "no_spectrum_file": 16}
    assert Rejection.flag_meanings().split() == [r.name for r in Rejection]
    assert max(Rejection.flag_values()) < 256  # stored as uint8


def test_every_error_is_a_qsocube_error_with_its_exit_code() -> None:
    error = InputError("a/spec.fits", Rejection.off_frame, "loglam is not increasing")
    assert str(error) == "a/spec.fits: loglam is not increasing" and error.reason == 6
    assert isinstance(error, QsocubeError) and isinstance(error, ValueError)
    assert isinstance(MissingInputError("x"), FileNotFoundError)
    for kind in (UsageError, ClusterError, ModelError, InputError, MissingInputError):
        assert issubclass(kind, QsocubeError) and kind.exit_code == 2
    assert AnalysisError.exit_code == 1


def test_the_cli_reports_any_qsocube_error_in_one_line(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "qsocube", "encode", "--model",
                           str(tmp_path / "none.onnx"), "--out", str(tmp_path / "o.h5"),
                           str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == f"qsocube encode: {tmp_path / 'none.onnx'}: model file not found"


def test_no_decision_reads_message_text() -> None:
    """Flags and printed rejections follow Rejection codes, not the words of a message."""
    pattern = re.compile(r"(reason|str\(exc\)|message)\w*(\[[^]]*\])?\.(startswith|endswith)\(|"
                         r"in str\(exc\)|in (reason|message)\b")
    offenders = [f"{p}:{n}" for p, text in _sources().items()
                 for n, line in enumerate(text.splitlines(), 1) if pattern.search(line)]
    assert offenders == []


# ---------------------------------------------------------------- atomic writes

def test_atomic_write_replaces_whole_or_not_at_all(tmp_path) -> None:
    target = tmp_path / "out" / "file.txt"
    atomic.write_text_atomic(target, "first")
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "first" and sorted(target.parent.iterdir()) == [target]
    atomic.write_bytes_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    ours = atomic.temporary_beside(tmp_path / "other.fits")  # this (live) process's
    dead = ours.with_name(ours.name.replace(f"-{os.getpid()}.", f"-{2**22 + 7}."))
    foreign = tmp_path / ".someone-elses.partial"
    for path in (ours, dead, foreign):
        path.write_bytes(b"x")
    assert atomic.remove_stale_partials(tmp_path) == [dead] and not dead.exists()
    assert ours.exists() and foreign.exists()


def test_every_writer_goes_through_the_atomic_module(tmp_path, monkeypatch) -> None:
    """The simulator's FITS writers and the catalogue writer fsync and rename like the rest."""
    from qsocube.builder.dr16q import write_catalog
    from qsocube.builder.simulate import simulate_survey

    renamed: list[str] = []
    real = atomic.fsync_and_replace
    monkeypatch.setattr(atomic, "fsync_and_replace",
                        lambda tmp, target: (renamed.append(Path(target).name),
                                             real(tmp, target)))
    simulate_survey(3, 1, tmp_path / "survey", progress=None, missing_spectrum_fraction=0.0)
    write_catalog(tmp_path / "cat.fits", {"PLATE": [1], "MJD": [2], "FIBERID": [3]})
    spectra = sorted(p.name for p in (tmp_path / "survey" / "spectra").iterdir())
    assert sorted(renamed) == sorted([*spectra, "DR16Q_v4.fits", "truth.fits", "SURVEY.json",
                                      "cat.fits"])
    hand_rolled = [p for p, text in _sources(("core/atomic.py",)).items()
                   if "os.replace(" in text or ".tmp\"" in text]
    assert hand_rolled == []


# ---------------------------------------------------------------- pools, Dask

def _slow_square(task: int) -> int:
    time.sleep(0.05)
    return task * task


def test_keep_busy_runs_at_most_slots_and_hands_back_every_result() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from qsocube.core.parallel import keep_busy

    todo, results, running, peak = list(range(7)), {}, [0], [0]

    def submit(task):
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        return pool.submit(_slow_square, task)

    def done(task, result):
        running[0] -= 1
        results[task] = result
        if task == 0:
            todo.append(10)  # a finished task may make a new one available

    with ThreadPoolExecutor(4) as pool:
        keep_busy(submit, 2, lambda: todo.pop(0) if todo else None, done)
    assert results == {t: t * t for t in [*range(7), 10]} and peak[0] == 2


def test_the_training_workers_use_the_one_pool() -> None:
    text = (PACKAGE / "builder" / "train" / "workers.py").read_text()
    assert "ProcessPoolExecutor" not in text and "get_context" not in text
    assert "local_pool" in text and "dask_pool" in text and "keep_busy" in text
    pools = [p for p, t in _sources(("core/parallel.py",)).items() if "ProcessPoolExecutor" in t]
    assert pools == []


def test_require_dask_is_the_one_check(monkeypatch) -> None:
    from qsocube.core.cluster import require_dask, wants_dask

    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ClusterError, match=r"--workers needs dask: pip install 'qsocube\[scale\]'"):
        require_dask("--workers")
    assert wants_dask("tcp://h:1", None) and wants_dask(None, 2) and not wants_dask(None, 1)
    checks = [p for p, t in _sources(("core/cluster.py",)).items()
              if re.search(r"^\s*(import (distributed|dask)\b|from (distributed|dask)\b)", t, re.M)]
    assert checks == []


# ---------------------------------------------------------------- input discovery

def test_one_input_rule_for_build_and_encode(tmp_path) -> None:
    from qsocube.core.inputs import by_name, find_inputs

    (tmp_path / "a" / "deep").mkdir(parents=True)
    for name in ("a/spec-0002-50000-0001.fits", "a/deep/spec-0001-50000-0002.fits.gz",
                 "a/DR16Q_v4.fits", "a/notes.txt", "other.fits"):
        (tmp_path / name).write_bytes(b"")
    folder = find_inputs([tmp_path / "a"])
    assert [p.name for p in folder] == ["spec-0001-50000-0002.fits.gz",
                                        "spec-0002-50000-0001.fits"]  # path order
    both = find_inputs([tmp_path / "other.fits", tmp_path / "a", str(tmp_path / "a" / "*.fits")])
    assert [p.name for p in both] == ["other.fits", "spec-0001-50000-0002.fits.gz",
                                      "spec-0002-50000-0001.fits", "DR16Q_v4.fits"]
    assert [p.name for p in by_name(folder)] == ["spec-0001-50000-0002.fits.gz",
                                                 "spec-0002-50000-0001.fits"]
    for missing in (tmp_path / "nothing", str(tmp_path / "*.none"), tmp_path / "a" / "deep"
                    / "empty"):
        if "empty" in str(missing):
            missing.mkdir()
        with pytest.raises(MissingInputError):
            find_inputs([missing])
    users = [p for p, t in _sources(("core/inputs.py",)).items() if "glob.glob(" in t]
    assert users == []


# ---------------------------------------------------------------- names and defaults

def test_release_names_live_in_layout() -> None:
    release = layout.Release(Path("R"))
    assert release.cube == Path("R/qsocube.h5") and release.vac_csv.name == "qsocube_vac.csv"
    assert layout.onnx_names(9) == ("infovae_latent09_encoder.onnx",
                                    "infovae_latent09_decoder.onnx")
    literals = ("qsocube.h5\"", "MANIFEST.sha256\"", "qsocube_vac.fits\"", "\"DR16Q_v4.fits\"",
                "\"stages.json\"", "infovae_latent{")
    elsewhere = [f"{p.relative_to(PACKAGE)}: {lit}" for p, text in
                 _sources(("core/layout.py", "cli/__init__.py")).items()
                 for lit in literals if lit in text]
    assert elsewhere == []


def test_onnx_sessions_open_in_one_place(tmp_path) -> None:
    from qsocube.core.onnxmodel import open_session

    with pytest.raises(ModelError, match="model file not found"):
        open_session(tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        open_session(tmp_path / "bad.onnx")
    openers = [p for p, t in _sources(("core/onnxmodel.py",)).items() if "InferenceSession(" in t]
    assert openers == []


def test_defaults_have_one_home() -> None:
    from qsocube.builder.build import BuildConfig
    from qsocube.core.grid import DEFAULT_GRID, WavelengthGrid

    assert BuildConfig().grid == DEFAULT_GRID == WavelengthGrid()
    assert BuildConfig().min_covered_fraction == defaults.MIN_COVERED_FRACTION
    assert defaults.LATENT_SIZES == (3, 6, 9, 12, 15)
    profiles = defaults.load_profiles()
    assert set(profiles) == {"smoke", "default", "study"}
    assert defaults.training_budgets()["study"]["n_calls"] == profiles["study"]["n_calls"]
    repeated = [p for p, t in _sources(("core/defaults.py", "core/grid.py")).items()
                if "(3, 6, 9, 12, 15)" in t or "profiles.toml\")" in t or "3625.0" in t]
    assert repeated == []


def test_the_studys_resampling_keeps_its_old_name_as_an_alias(capsys) -> None:
    from qsocube.cli import options
    from qsocube.core.preprocess import METHODS, canonical_method

    assert METHODS == ("rebin", "study") and canonical_method("seed") == "study"
    assert options.method("seed") == "study"
    assert "deprecated" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown resampling method"):
        canonical_method("spline")


def test_one_option_name_per_meaning() -> None:
    import argparse

    from qsocube.cli import COMMANDS

    seen: dict[str, set[str]] = {}
    for name, (module_name, _, _) in COMMANDS.items():
        module = __import__(module_name, fromlist=["configure"])
        parser = argparse.ArgumentParser()
        module.configure(parser)
        seen[name] = {o for action in parser._actions for o in action.option_strings}
    every = set().union(*seen.values())
    assert not every & {"--batch", "--min-covered"}
    for command in ("build", "encode", "train"):
        assert {"--processes", "--workers", "--scheduler"} <= seen[command], command
    assert "--batch-size" in seen["encode"] and "--min-covered-fraction" in seen["encode"]


def test_fixtures_are_not_in_the_product() -> None:
    assert not list(PACKAGE.rglob("fixture*.py")) and not list(PACKAGE.rglob("synthetic*.py"))
    assert not list(PACKAGE.rglob("browser.py"))
    assert np.__name__ == "numpy"  # (the fixtures live in tests/fixtures)
