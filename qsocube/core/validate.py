"""Validation of every product against its schema in ``qsocube/schemas/``.

A cube (``cube.json``): groups, variables, dimensions, dtypes, attributes, every chunk's
fletcher32 checksum (by reading all data), internal consistency (grid checksum, masks,
split, counts, rejection codes) and the ONNX files a model group names. A release folder:
its cube, each ONNX file's metadata (``onnx_metadata.json``), the value-added catalogue's
FITS and CSV files (``vac.json``) and MANIFEST.sha256. A file given directly is checked
as what it is: a cube, an encode output (``encode_output.json``; .h5, .fits or .csv), a
VAC file or an ONNX model. Every check returns a list of one-line problems ([] = valid).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import h5py
import numpy as np

from qsocube.core import layout, onnxmodel, schema
from qsocube.core.anomaly import N_QUANTILES
from qsocube.core.cube import file_sha256, load_schema, read_strings
from qsocube.core.errors import ModelError, Rejection
from qsocube.core.grid import WavelengthGrid
from qsocube.core.layout import CUBE_NAME, MANIFEST


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
    if "units" in spec and "units" in dataset.attrs and dataset.attrs["units"] != spec["units"]:
        problems.append(f"{where}: units {dataset.attrs['units']!r}, schema says "
                        f"{spec['units']!r}")
    for key, value in schema.flag_attributes(spec).items():
        if not np.array_equal(np.asarray(dataset.attrs.get(key, "")), value):
            problems.append(f"{where}: '{key}' differs from the schema's {spec['flags']}")
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
    if "reason_code" in cube["rejected"]:
        codes = cube["rejected/reason_code"][...]
        if not set(np.unique(codes)) <= set(Rejection.flag_values()) - {0}:
            problems.append("/rejected/reason_code has values that are not rejection codes")
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
    """Every file listed exists with its checksum, and every release file is listed."""
    manifest = release / MANIFEST
    if not manifest.is_file():
        return [f"{manifest}: missing"]
    try:
        text = manifest.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        return [f"{MANIFEST}: not UTF-8 text (byte {exc.start}); it is not a manifest qsocube "
                "wrote"]
    except OSError as exc:
        return [f"{MANIFEST}: cannot be read ({exc.strerror or exc})"]
    problems = []
    listed = set()
    root = release.resolve()
    for number, line in enumerate(text.splitlines(), 1):
        sha, _, name = line.partition("  ")
        if not re.fullmatch(r"[0-9a-f]{64}", sha) or not name:
            problems.append(f"{MANIFEST}: line {number} is not 'SHA256  PATH'")
            continue
        listed.add(name)
        target = release / name
        if (Path(name).is_absolute() or ".." in Path(name).parts
                or not target.resolve().is_relative_to(root)):
            problems.append(f"{MANIFEST}: line {number} names {name!r}, outside the release "
                            "(not followed)")
            continue
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
                  and p.relative_to(release).parts[0] != layout.INPUT_DIR)


def check_onnx(path: Path, *, release: bool = True) -> list[str]:
    """An ONNX file's metadata against ``onnx_metadata.json`` (with ``release``, every key
    the exporter writes); its partner must be beside it and name it back."""
    try:
        meta = onnxmodel.read_metadata(path)
    except ModelError as exc:
        return [str(exc)]
    problems = [f"{path.name}: {p}" for p in onnxmodel.check_metadata(meta, release=release)]
    partner = path.with_name(meta.get("partner", ""))
    if not problems and partner.is_file():
        try:
            if onnxmodel.read_metadata(partner).get("partner") != path.name:
                problems.append(f"{path.name}: its partner {partner.name} does not name it back")
        except ModelError as exc:
            problems.append(str(exc))
    elif not problems:
        problems.append(f"{path.name}: its partner {partner.name} is not beside it")
    if not problems and meta.get("anomaly_model"):
        problems += check_anomaly_model(path.with_name(meta["anomaly_model"]), meta)
    return problems


def check_anomaly_model(path: Path, encoder_meta: dict[str, str]) -> list[str]:
    """An anomaly model file against ``anomaly_model.json``, the grid and latent size of its
    encoder, and the checksum the encoder records."""
    if not path.is_file():
        return [f"{path.name}: named by the encoder but not beside it"]
    if file_sha256(path) != encoder_meta.get("anomaly_sha256"):
        return [f"{path.name}: does not match the encoder's anomaly_sha256"]
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [f"{path.name}: not JSON ({exc})"]
    spec = schema.load("anomaly_model")["keys"]
    weights = data.get("mixture", {}).get("weights") if isinstance(data, dict) else None
    nodes = data.get("sn_nodes") if isinstance(data, dict) else None
    sizes = {"P": WavelengthGrid.from_json(encoder_meta["grid"]).n_pix, "Q": N_QUANTILES,
             "L": int(encoder_meta["latent_size"]),
             "K": len(weights) if isinstance(weights, list) else -1,
             "M": len(nodes) if isinstance(nodes, list) and nodes else -1}
    with_redshift = isinstance(data, dict) and data.get("redshift_scale") is not None
    sizes["D"] = sizes["L"] + with_redshift
    problems = []

    def check(entries: dict, values: object, where: str) -> None:
        for key, entry in entries.items():
            if entry.get("optional") and not with_redshift:  # the redshift part's keys
                continue
            if not isinstance(values, dict) or key not in values:
                problems.append(f"{path.name}: {where}{key} missing")
                continue
            if entry["type"] == "object":
                check(entry["keys"], values[key], f"{key}.")
            elif "shape" in entry:
                array = np.asarray(values[key], dtype=float)
                want = tuple(sizes[d] for d in entry["shape"])
                if array.shape != want or not np.isfinite(array).all():
                    problems.append(f"{path.name}: {where}{key} has shape {array.shape}, "
                                    f"schema says {want} of finite numbers")
            elif entry["type"] == "float" and not (
                    isinstance(values[key], int | float) and 0 < values[key] < np.inf):
                problems.append(f"{path.name}: {where}{key} is not a positive number")
    check(spec, data, "")
    if not problems and np.any(np.diff(np.asarray(nodes, float)) <= 0):
        problems.append(f"{path.name}: sn_nodes are not increasing")
    return problems


def _latent_sizes(names: list[str], stem: str) -> list[int]:
    return [int(m.group(1)) for n in names if (m := re.fullmatch(rf"{stem}_(\d\d)", n))]


def _fits_table(path: Path, extname: str) -> tuple[object, list[str]]:
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdus:
            if extname not in hdus:
                return None, [f"{path}: no {extname} extension"]
            hdu = hdus[extname]
            return (hdu.header.copy(), hdu.columns, len(hdu.data)), []
    except OSError as exc:
        return None, [f"{path}: not a readable FITS file ({str(exc).splitlines()[0]})"]


def _check_fits_columns(path: Path, expected: list[schema.Column], columns: object
                        ) -> list[str]:
    problems = []
    found = {c.name: c for c in columns}
    for column in expected:
        if column.name not in found:
            problems.append(f"{path.name}: column {column.name} missing")
            continue
        got = found[column.name]
        kind = np.dtype(got.dtype.base).kind if column.dtype != "str" else "S"
        want = "S" if column.dtype == "str" else np.dtype(column.dtype).kind
        if (kind != want and not (want == "U" and kind == "S")
                and not (kind in "iu" and want in "iu")):
            problems.append(f"{path.name}: column {column.name} has format {got.format}, "
                            f"schema says {column.dtype}")
        if (got.unit or None) != schema.fits_unit(column.units):
            problems.append(f"{path.name}: column {column.name} has unit {got.unit!r}, "
                            f"schema says {column.units!r}")
    extra = sorted(set(found) - {c.name for c in expected})
    if extra:
        problems.append(f"{path.name}: columns not in the schema: {', '.join(extra)}")
    return problems


def _csv_header(path: Path) -> tuple[list[str], int]:
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        rows = sum(1 for _ in reader)
    return header, rows


def _expected_csv(columns: list[schema.Column], widths: dict[str, int]) -> list[str]:
    names: list[str] = []
    for column in columns:
        names += schema.csv_names(column.name, widths.get(column.name))
    return names


def check_vac(release: Path) -> list[str]:
    """The value-added catalogue's FITS and CSV files against ``vac.json``."""
    paths = layout.Release(release)
    spec = schema.load("vac")
    fits_path, csv_path = paths.vac_fits, paths.vac_csv
    problems = [f"{p}: missing" for p in (fits_path, csv_path) if not p.is_file()]
    if problems:
        return problems
    table, problems = _fits_table(fits_path, spec["extname"])
    if table is None:
        return problems
    header, fits_columns, n_rows = table
    sizes = _latent_sizes([c.name for c in fits_columns], "LATENT_MEAN")
    expected = schema.columns("vac", sizes)
    problems += _check_fits_columns(fits_path, expected, fits_columns)
    problems += [f"{fits_path.name}: header keyword {key} missing" for key in spec["header"]
                 if key not in header]
    if header.get("NSPEC") != n_rows:
        problems.append(f"{fits_path.name}: NSPEC {header.get('NSPEC')} but {n_rows} rows")
    names, csv_rows = _csv_header(csv_path)
    want = _expected_csv(expected, {f"LATENT_MEAN_{s:02d}": s for s in sizes})
    if names != want:
        problems.append(f"{csv_path.name}: columns differ from the schema's "
                        f"(first difference at {_first_difference(names, want)})")
    if csv_rows != n_rows:
        problems.append(f"{csv_path.name}: {csv_rows} rows, the FITS table has {n_rows}")
    return problems


def _first_difference(got: list[str], want: list[str]) -> str:
    for i, (a, b) in enumerate(zip(got, want, strict=False)):
        if a != b:
            return f"column {i + 1}: {a!r}, schema {b!r}"
    return f"column {min(len(got), len(want)) + 1}: {len(got)} columns, schema {len(want)}"


def check_encode_output(path: Path) -> list[str]:
    """An output of ``qsocube encode`` (.h5, .fits or .csv) against ``encode_output.json``."""
    spec = schema.load("encode_output")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        names, _ = _csv_header(path)
        sizes = _latent_sizes(sorted({n.rsplit("_", 1)[0] for n in names}), "LATENT_MEAN")
        if len(sizes) != 1:
            return [f"{path.name}: no LATENT_MEAN_NN_k columns of one latent size"]
        want = _expected_csv(schema.columns("encode_output", sizes),
                             {f"LATENT_{k}_{sizes[0]:02d}": sizes[0] for k in ("MEAN", "LOGVAR")})
        if names != want:
            return [f"{path.name}: columns differ from the schema's "
                    f"(first difference at {_first_difference(names, want)})"]
        return []
    if suffix in (".fits", ".fit"):
        table, problems = _fits_table(path, spec["extname"])
        if table is None:
            return problems
        header, fits_columns, _ = table
        sizes = _latent_sizes([c.name for c in fits_columns], "LATENT_MEAN")
        if len(sizes) != 1:
            return [f"{path.name}: no LATENT_MEAN_NN column of one latent size"]
        problems = _check_fits_columns(path, schema.columns("encode_output", sizes),
                                       fits_columns)
        problems += [f"{path.name}: header keyword {key} missing" for key in spec["attributes"]
                     if key.upper() not in header]
        return problems
    problems = []
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        return [f"{path}: not a readable HDF5 file ({str(exc).splitlines()[0]})"]
    with h5:
        problems += [f"root attribute '{a}' missing" for a in spec["attributes"]
                     if a not in h5.attrs]
        if "latent_size" not in h5.attrs:
            return problems
        size = int(h5.attrs["latent_size"])
        for column in schema.columns("encode_output", [size]):
            variable = {"dims": list(column.dims), "dtype": column.dtype,
                        "units": column.units, **column.spec}
            _check_variable(h5, column.name, variable, problems)
        flag = next(c.name for c in schema.columns("encode_output", [size]) if c.flags)
        if not problems and h5[flag].size:
            if not set(np.unique(h5[flag][...])) <= set(Rejection.flag_values()):
                problems.append(f"/{flag}: values that are not rejection codes")
    return problems


def _is_encode_output(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5", ".nc"):
        try:
            with h5py.File(path, "r") as h5:
                return "encoder_onnx" in h5.attrs and "catalog" not in h5
        except OSError:
            return False
    if suffix == ".csv":
        names, _ = _csv_header(path)
        return "SOURCE" in names and "FLAG" in names
    if suffix in (".fits", ".fit"):
        from astropy.io import fits

        try:
            with fits.open(path, memmap=False) as hdus:
                return schema.load("encode_output")["extname"] in hdus
        except OSError:
            return False
    return False


def validate(target: Path) -> list[str]:
    """All problems of a release folder or of one product file; [] means valid."""
    if target.is_dir():
        paths = layout.Release(target)
        if not paths.cube.is_file():
            return [f"{target}: no {CUBE_NAME} in this release folder"]
        problems = check_cube(paths.cube, paths.models)
        for model in sorted(paths.models.glob("*.onnx")) if paths.models.is_dir() else []:
            problems += check_onnx(model)
        if paths.catalog.exists():
            problems += check_vac(target)
        if paths.manifest.exists() or paths.report.exists():
            problems += check_manifest(target)
        return problems
    if not target.exists():
        return [f"{target}: no such file or folder"]
    if not target.is_file():  # a FIFO or a device is never opened
        return [f"{target}: not a regular file"]
    if target.suffix.lower() == ".onnx":
        return check_onnx(target, release=False)
    if _is_encode_output(target):
        return check_encode_output(target)
    if target.name in (layout.VAC_FITS, layout.VAC_CSV):
        return check_vac(target.parent.parent)
    return check_cube(target)
