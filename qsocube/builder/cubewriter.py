"""Writing a new cube: rows stream into a temporary file that is renamed on success."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
from pathlib import Path

import h5py
import numpy as np

from qsocube import PRODUCT_VERSION, __version__
from qsocube.builder.catalog_join import catalog_columns
from qsocube.builder.partition import Partition, Record, Rejected
from qsocube.core.atomic import publish, temporary_beside
from qsocube.core.cube import (
    file_sha256,
    load_schema,
    schema_version,
    split_of,
    write_open_variable,
    write_variable,
)
from qsocube.core.errors import Rejection
from qsocube.core.grid import WavelengthGrid
from qsocube.core.preprocess import NORMALISATION

ROW_VARIABLES = ("flux", "ivar", "mask")


def git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class CubeWriter:
    """Context manager: ``append`` accepted rows, ``finish`` the metadata, publish on exit.

    The caller holds the output's lock (``atomic.exclusive``); on exit the finished file is
    put in place by ``atomic.publish``, which without ``overwrite`` never replaces a file
    that appeared under the target name meanwhile.
    """

    def __init__(self, target: Path, grid: WavelengthGrid, overwrite: bool = True) -> None:
        self.target, self.grid, self.overwrite = Path(target), grid, overwrite
        self.tmp = temporary_beside(self.target)
        self.count = 0
        self.messages: list[str] = []
        self.records: list[Record] = []
        self.norm: list[np.ndarray] = []
        self.covered: list[np.ndarray] = []

    def __enter__(self) -> CubeWriter:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.file = h5py.File(self.tmp, "w", libver=("earliest", "v110"), track_order=True)
        write_variable(self.file, "spectrum", np.zeros(0, np.int64), maxshape=(None,))
        write_variable(self.file, "wavelength", self.grid.wavelength)
        write_variable(self.file, "dla", np.arange(5))
        empty = np.zeros((0, self.grid.n_pix), np.float32)
        for name in ROW_VARIABLES:
            write_variable(self.file, name, empty, maxshape=(None, self.grid.n_pix))
        return self

    def append(self, part: Partition, seen: dict[str, str]) -> list[Rejected]:
        """Append a partition's accepted rows; return the duplicates it rejected."""
        duplicates: list[Rejected] = []
        keep = np.ones(len(part.records), bool)
        for row, record in enumerate(part.records):
            if record.spec_id in seen:
                keep[row] = False
                duplicates.append(Rejected(record.name, Rejection.duplicate,
                                           f"duplicate PLATE-MJD-FIBER {record.spec_id} "
                                           f"(first seen in {seen[record.spec_id]})"))
            else:
                seen[record.spec_id] = record.name
        n_new = int(keep.sum())
        if n_new == 0:
            return duplicates
        lo, hi = self.count, self.count + n_new
        for name in ROW_VARIABLES:
            dataset = self.file[name]
            dataset.resize(hi, axis=0)
            dataset[lo:hi] = getattr(part.prepared, name)[keep]
        self.records += [r for r, k in zip(part.records, keep, strict=True) if k]
        self.norm.append(part.prepared.norm[keep])
        self.covered.append(part.prepared.covered_fraction[keep])
        self.count = hi
        return duplicates

    def finish(self, *, catalog, truth_path: Path | None, rejected: list[Rejected],
               config, source: str, catalog_path: Path | None) -> str:
        f = self.file
        # The rows grew along a resizable scale; the published one has a fixed size, because
        # netCDF readers (h5netcdf, so xarray) take a resizable scale for an unlimited
        # dimension and ask every variable attached to it for its length whenever any
        # variable's shape is read: opening a cube then cost seconds per hundred columns.
        for name in ROW_VARIABLES:
            f[name].dims[0].detach_scale(f["spectrum"])
        del f["spectrum"]
        write_variable(f, "spectrum", np.arange(self.count, dtype=np.int64))
        for name in ROW_VARIABLES:
            f[name].dims[0].attach_scale(f["spectrum"])
        ids = [r.spec_id for r in self.records]
        write_variable(f, "spec_id", ids)
        write_variable(f, "source_file", [r.name for r in self.records])
        write_variable(f, "source_sha256", [r.sha256 for r in self.records])
        write_variable(f, "norm", _concat(self.norm))
        write_variable(f, "covered_fraction", _concat(self.covered))
        write_variable(f, "split", split_of(ids))
        write_variable(f, "masked_values", np.array([r.masked for r in self.records], np.int32))
        group = f.create_group("catalog")
        columns, extra = catalog_columns(self.records, catalog)
        for name, values in columns.items():
            write_variable(group, name, values, attrs=extra.get(name))
        group = f.create_group("rejected")
        write_variable(group, "rejected", np.arange(len(rejected)))
        write_variable(group, "file", [r.name for r in rejected])
        write_variable(group, "reason", [r.reason for r in rejected])
        write_variable(group, "reason_code", np.array([int(r.code) for r in rejected], np.uint8))
        if truth_path is not None:
            self.messages += _write_truth(f.create_group("truth"), truth_path, ids)
        input_lines = sorted(f"{r.name} {r.sha256}" for r in self.records)
        for extra_input in (catalog_path, truth_path):
            if extra_input is not None:
                input_lines.append(f"{Path(extra_input).name} {file_sha256(extra_input)}")
        inputs_sha = hashlib.sha256("\n".join(input_lines).encode()).hexdigest()
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        attrs = {
            "product_version": PRODUCT_VERSION, "schema_version": schema_version(),
            "Conventions": "CF-1.10", "title": "qsocube: quasar spectra on a common grid",
            "history": f"{now} built by qsocube {__version__} from {len(self.records)} spectra",
            "source": source, "build_config": config.to_json(),
            "build_config_sha256": config.sha256(), "software_version": __version__,
            "git_commit": git_commit(), "inputs_sha256": inputs_sha,
            "grid_sha256": self.grid.sha256, "grid": self.grid.to_json(),
            "normalisation": NORMALISATION, "resampling_method": config.method, "created": now,
            "catalog_file": Path(catalog_path).name if catalog_path else "",
        }
        missing = set(load_schema()["root_attributes"]) - set(attrs)
        assert not missing, f"root attributes missing from the writer: {missing}"
        f.attrs.update(attrs)
        return inputs_sha

    def __exit__(self, kind, value, traceback) -> None:
        try:
            self.file.close()
            if kind is None:
                publish(self.tmp, self.target, self.overwrite)
        finally:
            if self.tmp.exists():
                self.tmp.unlink()


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _write_truth(group: h5py.Group, truth_path: Path, ids: list[str]) -> list[str]:
    """The simulator's truth table, joined to the cube's rows on PLATE-MJD-FIBERID.

    Column names are the table's, but only as data: each is stored under
    ``safe_name`` with the name itself in ``original_name``. Rows without a truth row get
    NaN (-1 for integers, "" for text) and are counted (``n_missing``); returns the
    messages to print.
    """
    from astropy.table import Table

    from qsocube.core.errors import CatalogError
    from qsocube.core.speclite import spec_id

    try:
        table = Table.read(truth_path, hdu=1)
        keys = {spec_id(p, m, f): row for row, (p, m, f) in
                enumerate(zip(table["PLATE"], table["MJD"], table["FIBERID"], strict=True))}
    except Exception as exc:  # astropy raises many types for a file it cannot read
        raise CatalogError(f"{truth_path}: not a usable truth table ({type(exc).__name__}: "
                           f"{' '.join(str(exc).split())[:150]})") from None
    rows = np.array([keys.get(i, -1) for i in ids], dtype=np.int64)
    missing = rows < 0
    messages = []
    if missing.any():
        example = ", ".join(i for i, m in zip(ids, missing, strict=True) if m)
        messages.append(f"{truth_path}: no truth row for {int(missing.sum())} of {len(ids)} "
                        f"spectra (e.g. {example[:60]}); their /truth values are NaN")
    group.attrs["source_file"] = truth_path.name
    group.attrs["n_missing"] = int(missing.sum())
    for name in table.colnames:
        values = np.asarray(table[name])
        values = values[np.where(missing, 0, rows)] if len(values) else values
        if values.dtype.kind == "S":
            values = values.astype(str)
        if missing.any() and len(values):
            values = _blank(values, missing)
        elif not len(values):
            values = _blank(np.zeros((len(ids),) + values.shape[1:], values.dtype),
                            np.ones(len(ids), bool))
        unit = str(table[name].unit) if table[name].unit is not None else "1"
        write_open_variable(group, name, values, units=unit,
                            long_name=table[name].description or name)
    group.attrs["columns"] = json.dumps(table.colnames)
    return messages


def _blank(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``values`` with ``rows`` set to "no value": NaN, -1, or an empty string."""
    if values.dtype.kind in "US":
        values = values.astype(object)
        values[rows] = ""
        return values
    if values.dtype.kind in "iu":
        values = values.astype(np.int64)
        values[rows] = -1
        return values
    if values.dtype.kind == "b":
        values = values.astype(np.int8)
        values[rows] = -1
        return values
    values = values.astype(np.float64)
    values[rows] = np.nan
    return values
