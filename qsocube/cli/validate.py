"""`qsocube validate`: check a release folder, a cube, an encode output, a value-added
catalogue file or an ONNX model against its schema (``qsocube/schemas/``).

Exit codes: 0 valid, 1 problems found (one line each on stderr, or JSON with --json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", type=Path,
                        help="a release folder, or one product file: a cube (.h5), an encode "
                             "output (.h5, .fits, .csv), a catalogue file or an .onnx model")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from qsocube.core.cube import schema_version
    from qsocube.core.validate import validate

    problems = validate(args.target)
    if args.json:
        print(json.dumps({"target": str(args.target), "valid": not problems,
                          "problems": problems}, indent=2))
    elif problems:
        for problem in problems:
            print(f"qsocube validate: {args.target}: {problem}", file=sys.stderr)
    else:
        print(f"{args.target}: valid (schema {schema_version()})")
    return 1 if problems else 0
