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
from qsocube.core.atomic import fsync_and_replace, temporary_beside
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
    """Context manager: ``append`` accepted rows, ``finish`` the metadata, rename on exit."""

    def __init__(self, target: Path, grid: WavelengthGrid) -> None:
        self.target, self.grid = Path(target), grid
        self.tmp = temporary_beside(self.target)
        self.count = 0
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
        f["spectrum"].resize(self.count, axis=0)
        f["spectrum"][...] = np.arange(self.count)
        ids = [r.spec_id for r in self.records]
        write_variable(f, "spec_id", ids)
        write_variable(f, "source_file", [r.name for r in self.records])
        write_variable(f, "source_sha256", [r.sha256 for r in self.records])
        write_variable(f, "norm", _concat(self.norm))
        write_variable(f, "covered_fraction", _concat(self.covered))
        write_variable(f, "split", split_of(ids))
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
            _write_truth(f.create_group("truth"), truth_path, ids)
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
        self.file.close()
        if kind is None:
            fsync_and_replace(self.tmp, self.target)
        elif self.tmp.exists():
            self.tmp.unlink()


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _write_truth(group: h5py.Group, truth_path: Path, ids: list[str]) -> None:
    """The simulator's truth table, joined to the cube's rows on PLATE-MJD-FIBERID."""
    from astropy.table import Table

    from qsocube.core.speclite import spec_id

    table = Table.read(truth_path, hdu=1)
    keys = {spec_id(p, m, f): row for row, (p, m, f) in
            enumerate(zip(table["PLATE"], table["MJD"], table["FIBERID"], strict=True))}
    rows = np.array([keys.get(i, -1) for i in ids])
    if (rows < 0).any():
        raise ValueError(f"{truth_path}: no truth row for {ids[int(np.argmax(rows < 0))]}")
    group.attrs["source_file"] = truth_path.name
    for name in table.colnames:
        values = np.asarray(table[name])[rows]
        if values.dtype.kind == "S":
            values = values.astype(str)
        unit = str(table[name].unit) if table[name].unit is not None else "1"
        write_open_variable(group, name, values, units=unit,
                            long_name=table[name].description or name)
    group.attrs["columns"] = json.dumps(table.colnames)
