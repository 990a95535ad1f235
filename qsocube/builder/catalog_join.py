"""Joining spectra to DR16Q rows on PLATE-MJD-FIBERID, and the catalogue group's columns.

Without a catalogue, each spectrum's HDU 2 provides what it has (PLUG_RA/PLUG_DEC,
Z, PLATESN2, SN_MEDIAN_ALL, ...) and the DR16Q-only columns are NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qsocube.builder.dr16q import Catalog, read_catalog
from qsocube.core.cube import load_schema
from qsocube.core.errors import CatalogError
from qsocube.core.speclite import spec_id

HDU2_SOURCES = {"RA": "PLUG_RA", "DEC": "PLUG_DEC", "Z": "Z", "MJD": "MJD", "PLATE": "PLATE",
                "FIBERID": "FIBERID", "PLATESN2": "PLATESN2", "SN_MEDIAN_ALL": "SN_MEDIAN_ALL",
                "THING_ID": "THING_ID", "CLASS": "CLASS", "ZWARNING": "ZWARNING"}


def catalog_variables() -> dict[str, dict]:
    return load_schema()["groups"]["/catalog"]["variables"]


@dataclass
class CatalogIndex:
    """The catalogue's rows by PLATE-MJD-FIBERID. A key on several rows is resolved
    openly: the first row is used and the others are counted in ``duplicates`` (the
    build reports them and lists them in /rejected as one ``duplicate`` row)."""

    catalog: Catalog
    index: dict[str, int]
    duplicates: list[str] = field(default_factory=list)  # keys of the rows left out

    @property
    def path(self) -> Path:
        return self.catalog.path

    @classmethod
    def load(cls, path: Path) -> CatalogIndex:
        catalog = read_catalog(path)
        index: dict[str, int] = {}
        duplicates: list[str] = []
        for row, ids in enumerate(zip(catalog.plate, catalog.mjd, catalog.fiberid,
                                      strict=True)):
            try:
                key = spec_id(*ids)
            except (ValueError, OverflowError):
                raise CatalogError(f"{path}: row {row} has an identifier that is not a "
                                   f"number ({ids})") from None
            if index.setdefault(key, row) != row:
                duplicates.append(key)
        return cls(catalog, index, duplicates)

    def duplicates_text(self) -> str:
        return (f"{len(self.duplicates)} catalogue rows repeat a PLATE-MJD-FIBERID of an "
                f"earlier row and were not used; the first row of each is (e.g. "
                f"{', '.join(self.duplicates[:3])})")

    def snr_by_key(self) -> dict[str, float]:
        """SN_MEDIAN_ALL by PLATE-MJD-FIBERID: all a partition needs of the catalogue."""
        snr = self.catalog.columns["SN_MEDIAN_ALL"]
        return {key: float(snr[row]) for key, row in self.index.items()}

    def without_spectrum(self, seen: dict[str, str]) -> list[str]:
        return sorted(key for key in self.index if key not in seen)


def _fill(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == "str":
        return np.full(shape, "", dtype=object)
    if dtype.startswith("float"):
        return np.full(shape, np.nan)
    return np.full(shape, -1, dtype=np.int64)


def catalog_columns(spectra: Sequence, catalog: CatalogIndex | None
                    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, str]]]:
    """Arrays for /catalog along the cube's spectra (records with ``spec_id`` and ``meta``),
    and extra attributes per column."""
    n = len(spectra)
    specs = catalog_variables()
    columns: dict[str, np.ndarray] = {}
    attrs: dict[str, dict[str, str]] = {}
    rows = (np.array([catalog.index[s.spec_id] for s in spectra], dtype=np.int64)
            if catalog is not None else None)
    for name, spec in specs.items():
        if name == "in_catalog":
            continue
        shape = (n, 5) if spec["dims"] == ["spectrum", "dla"] else (n,)
        values = _fill(spec["dtype"], shape)
        if catalog is not None and name in catalog.catalog.columns:
            values = np.asarray(catalog.catalog.columns[name])[rows]
            attrs[name] = {k: v for k, v in catalog.catalog.attrs.get(name, {}).items()
                           if k == "missing_value_rule"}
        elif name in HDU2_SOURCES:
            raw = [s.meta.get(HDU2_SOURCES[name]) for s in spectra]
            for row, value in enumerate(raw):
                if value is not None:
                    values[row] = value
            attrs[name] = {"source": f"HDU 2 {HDU2_SOURCES[name]} of each spectrum"}
        else:
            attrs[name] = {"missing_value_rule": "not available without a DR16Q catalogue: NaN"}
        columns[name] = values
    columns["in_catalog"] = np.full(n, 1 if catalog is not None else 0, np.uint8)
    return columns, attrs
