"""The product schemas (``qsocube/schemas/*.json``): loading them and expanding their columns.

Four files, one per product: ``cube.json`` (the HDF5 cube), ``onnx_metadata.json`` (the
models' metadata_props), ``vac.json`` (the value-added catalogue) and ``encode_output.json``
(what ``qsocube encode`` writes). Writers take names, dtypes and units from them and
``qsocube validate`` checks products against them.

Table columns may be templates: ``{NN}`` is a latent size with two digits and ``{L}`` the
same size, expanded once per model. Units are CF-style strings with ``"1"`` for
dimensionless; a FITS writer leaves TUNIT out for ``"1"`` (``fits_unit``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

from qsocube.core.errors import Rejection

PRODUCTS = ("cube", "onnx_metadata", "vac", "encode_output", "anomaly_model")
# Enumerations a schema entry may name in "flags" (its CF flag_values/flag_meanings).
FLAG_ENUMS = {"Rejection": Rejection}


@cache
def load(product: str) -> dict[str, Any]:
    """The parsed schema of ``product`` (one of ``PRODUCTS``)."""
    if product not in PRODUCTS:
        raise KeyError(f"no schema for {product!r}; products: {', '.join(PRODUCTS)}")
    return json.loads(resources.files("qsocube.schemas").joinpath(f"{product}.json")
                      .read_text())


def flag_attributes(spec: dict[str, Any]) -> dict[str, Any]:
    """CF flag_values (uint8) and flag_meanings of an entry with ``"flags": ENUM``; else {}."""
    if "flags" not in spec:
        return {}
    enum = FLAG_ENUMS[spec["flags"]]
    return {"flag_values": np.asarray(enum.flag_values(), dtype=np.uint8),
            "flag_meanings": enum.flag_meanings()}


def fits_unit(units: str) -> str | None:
    """TUNIT for a CF units string: none for dimensionless ('1' or '')."""
    return None if units in ("1", "") else units


@dataclass(frozen=True)
class Column:
    """One column of a table product, with its templates expanded for one latent size.

    ``dtype`` is a numpy dtype name or ``"str"``; ``units`` a CF units string; ``field``
    the producer's attribute behind the column (encode output); ``latent_size`` is set for
    per-model columns.
    """

    name: str
    dtype: str
    units: str
    description: str
    tform: str = ""
    dims: tuple[str, ...] = ("spectrum",)
    field: str = ""
    flags: str = ""
    null: int | None = None
    latent_size: int | None = None

    @property
    def spec(self) -> dict[str, Any]:
        return {"flags": self.flags} if self.flags else {}


def _expand(entry: dict[str, Any], size: int | None) -> Column:
    def fill(text: str) -> str:
        return text if size is None else text.replace("{NN}", f"{size:02d}").replace(
            "{L}", str(size))

    return Column(fill(entry["name"]), entry["dtype"], entry["units"], fill(entry["description"]),
                  fill(entry.get("tform", "")), tuple(entry.get("dims", ["spectrum"])),
                  entry.get("field", ""), entry.get("flags", ""), entry.get("null"),
                  size if "{NN}" in entry["name"] else None)


def columns(product: str, latent_sizes: list[int] | tuple[int, ...]) -> list[Column]:
    """The columns of a table product (``vac`` or ``encode_output``) for these latent sizes.

    Per-model columns of the VAC come in groups, one group per size (its order); the encode
    output has one model, so its templates take the one size in place.
    """
    entries = load(product)["columns"]
    out: list[Column] = []
    if product == "vac":
        per_model = [e for e in entries if e.get("per_model")]
        for entry in entries:
            if entry.get("per_model"):
                if entry is per_model[0]:
                    out += [_expand(e, size) for size in latent_sizes for e in per_model]
                continue
            out.append(_expand(entry, None))
        return out
    (size,) = latent_sizes
    return [_expand(entry, size if "{NN}" in entry["name"] else None) for entry in entries]


def csv_names(name: str, width: int | None) -> list[str]:
    """CSV column names of a table column: NAME, or NAME_0 ... NAME_{width-1} for arrays."""
    return [name] if width is None else [f"{name}_{k}" for k in range(width)]
