"""`qsocube validate`: check a cube (or a release folder) against schemas/cube.json.

Checks the schema (groups, variables, dimensions, dtypes, attributes), every chunk's
fletcher32 checksum (by reading all data), internal consistency (grid checksum, masks,
split, counts), the ONNX files a model group names, and a release's MANIFEST.sha256.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import h5py
import numpy as np

from qsocube.cube import file_sha256, load_schema, read_strings
from qsocube.grid import WavelengthGrid

CUBE_NAME = "qsocube.h5"
MANIFEST = "MANIFEST.sha256"


class Invalid(Exception):
    """The cube or release breaks the schema; the message says where and how."""


def _dims(dataset: h5py.Dataset) -> list[str]:
    names = []
    for axis in dataset.dims:
        if len(axis) == 0:
            names.append("?")
        else:
            names.append(axis[0].name.rsplit("/", 1)[-1])
    return names


def _check_variable(group: h5py.Group, name: str, spec: dict, problems: list[str]) -> None:
    where = f"{group.name.rstrip('/')}/{name}"
    if name not in group:
        problems.append(f"{where}: missing")
        return
    dataset = group[name]
    expected = spec["dtype"]
    if expected == "str":
        if h5py.check_string_dtype(dataset.dtype) is None:
            problems.append(f"{where}: dtype {dataset.dtype}, schema says str")
    elif dataset.dtype != np.dtype(expected):
        problems.append(f"{where}: dtype {dataset.dtype}, schema says {expected}")
    dims = [name] if spec.get("coordinate") else _dims(dataset)
    if dims != spec["dims"]:
        problems.append(f"{where}: dimensions {dims}, schema says {spec['dims']}")
    for key in ("units", "long_name"):
        if key not in dataset.attrs:
            problems.append(f"{where}: no '{key}' attribute")
    if dataset.dtype.kind in "fiu" and dataset.size:
        try:
            dataset[...]  # reading every chunk verifies its fletcher32 checksum
        except OSError as exc:
            problems.append(f"{where}: unreadable or checksum mismatch ({exc})")


def _groups(cube: h5py.File) -> list[str]:
    names = ["/"]
    cube.visit(lambda n: names.append("/" + n) if isinstance(cube[n], h5py.Group) else None)
    return names


def check_cube(path: Path, models_dir: Path | None = None) -> list[str]:
    """All problems found in a cube; an empty list means it is valid."""
    schema = load_schema()
    problems: list[str] = []
    try:
        cube = h5py.File(path, "r")
    except OSError as exc:
        return [f"{path}: not a readable HDF5 file ({str(exc).splitlines()[0]})"]
    with cube:
        missing = [a for a in schema["root_attributes"] if a not in cube.attrs]
        if missing:
            problems.append(f"root attributes missing: {', '.join(missing)}")
        if cube.attrs.get("schema_version") != schema["schema_version"]:
            problems.append(f"schema_version {cube.attrs.get('schema_version')!r}, "
                            f"this software reads {schema['schema_version']}")
        present = _groups(cube)
        for group_path, spec in schema["groups"].items():
            matches = ([g for g in present if re.match(spec["pattern"], g)]
                       if "pattern" in spec else [g for g in present if g == group_path])
            if spec["required"] and not matches:
                problems.append(f"{group_path}: required group missing")
            for match in matches:
                group = cube[match]
                for name, variable in spec["variables"].items():
                    if variable.get("optional") and name not in group:
                        continue  # e.g. written by newer trainers only; checked when present
                    _check_variable(group, name, variable, problems)
                for attribute in spec.get("attributes", []):
                    if attribute not in group.attrs:
                        problems.append(f"{match}: attribute '{attribute}' missing")
        if not problems:
            problems += _consistency(cube, path, models_dir or path.parent / "models")
    return problems


def _consistency(cube: h5py.File, path: Path, models_dir: Path) -> list[str]:
    problems = []
    grid = WavelengthGrid.from_json(cube.attrs["grid"])
    if not np.array_equal(cube["wavelength"][...], grid.wavelength):
        problems.append("wavelength does not match the grid attribute")
    if grid.sha256 != cube.attrs["grid_sha256"]:
        problems.append("grid_sha256 does not match the grid")
    n = cube["spectrum"].shape[0]
    mask, ivar = cube["mask"], cube["ivar"]
    for lo in range(0, n, 4096):
        m, iv = mask[lo:lo + 4096], ivar[lo:lo + 4096]
        if ((m == 0) != (iv > 0)).any():
            problems.append("mask and ivar disagree: valid pixels must have ivar > 0")
            break
    if n and not set(np.unique(cube["split"][...])) <= {0, 1, 2}:
        problems.append("split has values other than 0, 1, 2")
    ids = read_strings(cube["spec_id"])
    if len(set(ids)) != len(ids):
        problems.append("spec_id has duplicates")
    if "models" in cube:
        for name, group in cube["models"].items():
            for role in ("encoder", "decoder"):
                onnx_path = models_dir / str(group.attrs[f"{role}_onnx"])
                if not onnx_path.is_file():
                    problems.append(f"/models/{name}: {onnx_path} is missing")
                elif file_sha256(onnx_path) != group.attrs[f"{role}_sha256"]:
                    problems.append(f"/models/{name}: {onnx_path.name} does not match its sha256")
    return problems


def check_manifest(release: Path) -> list[str]:
    manifest = release / MANIFEST
    if not manifest.is_file():
        return [f"{manifest}: missing"]
    problems = []
    listed = set()
    for line in manifest.read_text().splitlines():
        sha, _, name = line.partition("  ")
        listed.add(name)
        target = release / name
        if not target.is_file():
            problems.append(f"{MANIFEST}: {name} is listed but missing")
        elif file_sha256(target) != sha:
            problems.append(f"{MANIFEST}: {name} does not match its checksum")
    for path in release_files(release):
        if str(path.relative_to(release)) not in listed:
            problems.append(f"{MANIFEST}: {path.relative_to(release)} is not listed")
    return problems


def release_files(release: Path) -> list[Path]:
    """The files a manifest covers: everything but the manifest, hidden state and inputs."""
    return sorted(p for p in release.rglob("*") if p.is_file() and p.name != MANIFEST
                  and not any(part.startswith(".") for part in p.relative_to(release).parts)
                  and p.relative_to(release).parts[0] != "input")


def validate(target: Path) -> list[str]:
    if target.is_dir():
        cube = target / CUBE_NAME
        if not cube.is_file():
            return [f"{target}: no {CUBE_NAME} in this release folder"]
        problems = check_cube(cube, target / "models")
        if (target / MANIFEST).exists() or (target / "report").exists():
            problems += check_manifest(target)
        return problems
    if not target.exists():
        return [f"{target}: no such file or folder"]
    return check_cube(target)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", type=Path, help="a cube (.h5) or a release folder")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    problems = validate(args.target)
    if args.json:
        print(json.dumps({"target": str(args.target), "valid": not problems,
                          "problems": problems}, indent=2))
    elif problems:
        import sys

        for problem in problems:
            print(f"qsocube validate: {args.target}: {problem}", file=sys.stderr)
    else:
        print(f"{args.target}: valid (schema {load_schema()['schema_version']})")
    return 1 if problems else 0
