"""The ``qsocube`` command: the top of the layers (cli -> pipeline -> stages -> core).

Each subcommand is a module of this package providing ``configure(parser)`` (its argparse
options) and ``run(args) -> int``; it is imported only when that subcommand runs, and the
stage it calls only inside ``run``, so ``qsocube encode`` and ``qsocube validate`` never
import torch, matplotlib or xarray. The help line and example of every subcommand are
kept here, so ``qsocube --help`` imports nothing heavy.

Only this package knows argparse and exit codes: stages raise ``QsocubeError`` subclasses,
reported here as one line ``qsocube CMD: message`` with the error's exit code (2, or 1
for AnalysisError); 130 on an interrupt. ``validate`` returns 1 for an invalid product and
``encode`` 1 when some rows were rejected.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from qsocube.core.errors import QsocubeError, UsageError

__all__ = ["COMMANDS", "UsageError", "main"]

COMMANDS: dict[str, tuple[str, str, str]] = {
    "simulate": ("qsocube.cli.simulate", "write a simulated DR16Q-like survey in SDSS formats",
                 "qsocube simulate --n 2000 --seed 1 --out data/sim"),
    "build": ("qsocube.cli.build", "resample spectra (+ DR16Q catalogue) into a cube",
              "qsocube build --spectra data/sim/spectra --catalog data/sim/DR16Q_v4.fits "
              "--out qsocube.h5"),
    "validate": ("qsocube.cli.validate", "check a release or one product against its schema",
                 "qsocube validate products/default"),
    "train": ("qsocube.cli.train", "search lambda, train InfoVAEs, export ONNX, write back",
              "qsocube train products/default/qsocube.h5 --calls 8 --max-epochs 40"),
    "encode": ("qsocube.cli.encode",
               "encode new spectra with a release's ONNX encoder (no torch)",
               "qsocube encode --model products/default/models/infovae_latent09_encoder.onnx "
               "--out codes.h5 my_spectra/"),
    "analyze": ("qsocube.cli.analyze",
                "figures, HTML report and value-added catalogue of a release",
                "qsocube analyze products/default"),
    "release": ("qsocube.cli.release",
                "the whole pipeline for a profile (what `make product` runs)",
                "qsocube release --profile smoke --out products/smoke"),
}


def _top_help() -> str:
    lines = ["usage: qsocube COMMAND [options]", "",
             "qsocube builds and uses a versioned HDF5 cube of quasar spectra with a learned",
             "InfoVAE latent space. Run `qsocube COMMAND --help` for a command's options.", "",
             "commands:"]
    for name, (_, summary, example) in COMMANDS.items():
        lines += [f"  {name:<9} {summary}", f"            e.g. {example}"]
    return "\n".join(lines)


class OneLineParser(argparse.ArgumentParser):
    """An option error is one line, ``qsocube CMD: error: ...``, and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} "
                     f"(see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_top_help())
        return 0
    if argv[0] == "--version":
        from qsocube import __version__

        print(f"qsocube {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"qsocube: unknown command '{name}' (choose from {', '.join(COMMANDS)})",
              file=sys.stderr)
        return 2
    module_name, summary, example = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = OneLineParser(
        prog=f"qsocube {name}", description=f"{summary[0].upper()}{summary[1:]}.",
        epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter)
    module.configure(parser)
    try:
        args = parser.parse_args(argv[1:])
    except SystemExit as exc:  # --help, or an option error already printed in one line
        return int(exc.code or 0)
    try:
        return int(module.run(args) or 0)
    except QsocubeError as exc:
        print(f"qsocube {name}: {exc}", file=sys.stderr)
        return exc.exit_code
    except (FileExistsError, FileNotFoundError) as exc:
        print(f"qsocube {name}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qsocube {name}: interrupted; finished files are intact, rerun to resume",
              file=sys.stderr)
        return 130
