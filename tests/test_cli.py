"""The command line: help with examples, one-line errors, lazy imports."""

from __future__ import annotations

import subprocess
import sys

from qsocube.cli import COMMANDS


def _qsocube(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qsocube.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_top_level_help_lists_every_command_with_an_example():
    result = _qsocube("--help")
    assert result.returncode == 0
    for name, (_, _, example) in COMMANDS.items():
        assert f"  {name} " in result.stdout and example in result.stdout


def test_each_subcommand_has_help_with_an_example():
    for name in ("build", "validate", "release"):
        result = _qsocube(name, "--help")
        assert result.returncode == 0, result.stderr
        assert "example:" in result.stdout and f"qsocube {name}" in result.stdout


def test_unknown_command_and_missing_paths_are_one_line_errors(tmp_path):
    result = _qsocube("frobnicate")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    result = _qsocube("build", "--spectra", str(tmp_path / "nowhere"), "--out",
                      str(tmp_path / "x.h5"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "nowhere" in result.stderr
    result = _qsocube("validate", str(tmp_path / "missing.h5"))
    assert result.returncode == 1 and "no such file" in result.stderr


def test_build_and_validate_do_not_import_torch():
    code = ("import sys; from qsocube.cli import main; import qsocube.builder.build, "
            "qsocube.core.validate, qsocube.cli.build, qsocube.cli.validate; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
