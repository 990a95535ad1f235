"""The cube's I/O: schema lookup, dimension scales, typed datasets (one module for all stages).

Writers take dtype, dimensions, units and flags from ``qsocube/schemas/cube.json`` so that
the layout has one source of truth; readers get plain numpy arrays and attributes.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from qsocube.core import schema

STRING = h5py.string_dtype("utf-8")
SPECTRUM_CHUNK = 64  # whole spectra per chunk: 384 kB of float32, inside h5py's 1 MB cache
# Deflate level 1: on noisy float spectra (after shuffle) higher levels save almost nothing
# (level 4: 0.3% smaller) and cost the writer 45% more time per spectrum.
DEFLATE_LEVEL = 1
SPLIT_NAMES = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


def load_schema() -> dict[str, Any]:
    """The cube's schema (``qsocube/schemas/cube.json``)."""
    return schema.load("cube")


def schema_version() -> str:
    """The cube schema's version (MAJOR.MINOR.PATCH), written into every product."""
    return load_schema()["schema_version"]


def schema_group(path: str) -> dict[str, Any]:
    """The schema entry of a group path such as '/catalog' or '/models/latent_06/search'."""
    groups = load_schema()["groups"]
    if path in groups:
        return groups[path]
    for spec in groups.values():
        if "pattern" in spec and re.match(spec["pattern"], path):
            return spec
    raise KeyError(f"group {path} is not in the cube schema")


def _dtype(name: str) -> Any:
    return STRING if name == "str" else np.dtype(name)


def find_scale(group: h5py.Group, dim: str) -> h5py.Dataset:
    """The dimension scale ``dim`` visible from ``group`` (netCDF scoping: self, then parents)."""
    while True:
        if dim in group and isinstance(group[dim], h5py.Dataset) and group[dim].is_scale:
            return group[dim]
        if group.name == "/":
            raise KeyError(f"no dimension scale '{dim}' visible from {group.name}")
        group = group.parent


def write_variable(group: h5py.Group, name: str, data: Any, spec: dict[str, Any] | None = None,
                   attrs: dict[str, Any] | None = None, maxshape: tuple | None = None
                   ) -> h5py.Dataset:
    """Create one dataset as the schema says (or as ``spec`` says for open variables)."""
    if spec is None:
        spec = schema_group(group.name)["variables"][name]
    dtype = _dtype(spec["dtype"])
    values = np.asarray(data, dtype=object if dtype is STRING else dtype)
    if values.ndim != len(spec["dims"]):
        raise ValueError(f"{group.name}/{name}: {values.ndim} dims, schema says {spec['dims']}")
    options: dict[str, Any] = {}
    if dtype is not STRING and (values.size or maxshape is not None):
        options.update(compression="gzip", compression_opts=DEFLATE_LEVEL, shuffle=True,
                       fletcher32=True)
        if spec.get("chunked") or maxshape is not None:
            rows = SPECTRUM_CHUNK if maxshape is not None else min(SPECTRUM_CHUNK, values.shape[0])
            options["chunks"] = (max(rows, 1),) + values.shape[1:]
    if not is_safe_name(name):
        raise ValueError(f"{group.name}: {name!r} is not a plain variable name (see safe_name)")
    if name in group:
        del group[name]
    dataset = group.create_dataset(name, data=values, dtype=dtype, maxshape=maxshape, **options)
    for key in ("units", "long_name", "flag_meanings"):
        if key in spec:
            dataset.attrs[key] = spec[key]
    for key in ("flag_values", "flag_masks"):  # CF: of the variable's own type
        if key in spec:
            dataset.attrs[key] = np.asarray(spec[key], dtype=dtype)
    for key, value in schema.flag_attributes(spec).items():  # "flags": an enumeration
        dataset.attrs[key] = value
    for key, value in (attrs or {}).items():
        dataset.attrs[key] = value
    if spec.get("coordinate"):
        dataset.make_scale(name)
    else:
        for axis, dim in enumerate(spec["dims"]):
            dataset.dims[axis].attach_scale(find_scale(group, dim))
    return dataset


_SAFE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def is_safe_name(name: str) -> bool:
    """A name that is data, never a path: letters, digits and underscores, not starting
    with a digit, at most 63 characters (so no '/', '.', '..', spaces or empty names)."""
    return bool(_SAFE.match(name))


def safe_name(name: object, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """An external name (a FITS column's) as a variable name (``is_safe_name``), distinct
    from ``taken``: every other character becomes '_', a leading digit gets a '_' before
    it, and a clash gets a suffix _2, _3, ... Plain names such as ``Z`` stay as they are."""
    text = re.sub(r"[^A-Za-z0-9_]", "_", str(name))[:60] or "_"
    if text[0].isdigit():
        text = f"_{text}"[:60]
    candidate, count = text, 1
    while candidate in taken:
        count += 1
        candidate = f"{text}_{count}"
    return candidate


def write_open_variable(group: h5py.Group, name: str, data: Any, units: str = "1",
                        long_name: str = "") -> h5py.Dataset:
    """A variable of an open group (such as /truth): dims from the group's schema.

    ``name`` may come from outside (a FITS column): it is stored under ``safe_name(name)``,
    never used as an HDF5 path, and kept as the variable's ``original_name`` attribute.
    """
    original = str(name)
    name = safe_name(original, set(group))
    values = np.asarray(data)
    kind = "str" if values.dtype.kind in "USO" else str(values.dtype)
    dims = list(schema_group(group.name)["open_variables"]["dims"])
    dims += [f"{name}_{axis}" for axis in range(1, values.ndim)]
    for extra, size in zip(dims[1:], values.shape[1:], strict=True):
        if extra not in group:
            group.create_dataset(extra, data=np.arange(size)).make_scale(extra)
    spec = {"dims": dims, "dtype": kind, "units": units, "long_name": long_name or original}
    return write_variable(group, name, values, spec, attrs={"original_name": original})


def split_of(spec_ids: np.ndarray | list[str]) -> np.ndarray:
    """Stable train/validation/test split: a hash of the identifier, so adding spectra
    never moves an existing one to another part."""
    edges = np.cumsum(SPLIT_FRACTIONS)[:-1]
    draws = np.array([int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "big") / 2**64
                      for s in spec_ids])
    return np.searchsorted(edges, draws, side="right").astype(np.uint8)


def file_sha256(path: str | Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in ``block``-byte pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def read_strings(dataset: h5py.Dataset) -> np.ndarray:
    """A string dataset as a numpy array of str (empty array for an empty dataset)."""
    return dataset.asstr()[...] if dataset.size else np.array([], dtype=str)


def model_input_from_cube(cube: h5py.File, rows: slice | np.ndarray = slice(None)
                          ) -> tuple[np.ndarray, np.ndarray]:
    """(x, w) for the models from a cube: normalised flux and weights, 0 on masked pixels."""
    from qsocube.core.preprocess import model_input

    return model_input(cube["flux"][rows], cube["ivar"][rows], cube["mask"][rows],
                       cube["norm"][rows])
