"""Output of ``qsocube encode``: HDF5 (default), FITS binary table or CSV, by extension.

Column names, types, units and descriptions come from ``qsocube/schemas/encode_output.json``
(upper-case FITS-style names, as in the value-added catalogue: ``LATENT_MEAN_09``, and in
CSV ``LATENT_MEAN_09_0``, ...).

Every writer fills a temporary file beside the target and renames it into place only when
the run finishes, so an interrupted run never leaves a half-written output or replaces an
older one. HDF5 and CSV stream batch by batch; the FITS writer keeps the result table
(about 0.1 kB per spectrum plus names, not the spectra) until the end because a FITS table
needs its row count and string widths up front.
"""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import h5py
import numpy as np

from qsocube.core import schema
from qsocube.core.atomic import atomic_path, exclusive, temporary_beside
from qsocube.core.cube import DEFLATE_LEVEL
from qsocube.core.errors import UsageError
from qsocube.inference.encoder import Encoded

FORMATS = {".h5": "h5", ".hdf5": "h5", ".nc": "h5", ".fits": "fits", ".fit": "fits",
           ".csv": "csv"}
STRING = h5py.string_dtype("utf-8")
CHUNK = 4096


def output_columns(latent_size: int) -> list[schema.Column]:
    """The output's columns (``qsocube/schemas/encode_output.json``) for one model."""
    return schema.columns("encode_output", [latent_size])


def _table(part: Encoded, columns: list[schema.Column]) -> dict[str, np.ndarray]:
    """The part's arrays under their output names, in the schema's order."""
    return {c.name: getattr(part, c.field) for c in columns}


def output_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"{path}: unknown output type; end it in .h5, .fits or .csv")
    return fmt


def check_output(path: Path, overwrite: bool) -> str:
    """Fail before any work if the output cannot be written; return its format."""
    fmt = output_format(path)
    if path.is_dir():
        raise UsageError(f"{path}: is a folder, not an output file")
    if path.exists() and not overwrite:
        raise UsageError(f"{path}: exists (pass --overwrite to replace it)")
    probe = temporary_beside(path)  # this process's own name: nobody else's file
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"{path}: cannot write there ({exc.strerror or exc})") from None
    return fmt


class Writer(Protocol):
    def write(self, part: Encoded) -> None: ...
    def finish(self, attrs: dict[str, Any]) -> None: ...


class H5Writer:
    """Resizable datasets along ``spectrum`` with netCDF-4 dimension scales (xarray opens it)."""

    def __init__(self, path: Path, latent_size: int) -> None:
        self.columns = {c.name: c for c in output_columns(latent_size)}
        self.h5 = h5py.File(path, "w")
        self.n = 0
        spectrum = self.h5.create_dataset("spectrum", (0,), np.int64, maxshape=(None,),
                                          chunks=(CHUNK,))
        spectrum.make_scale("spectrum")
        latent = self.h5.create_dataset("latent", data=np.arange(latent_size, dtype=np.int64))
        latent.make_scale("latent")

    def _create(self, name: str, values: np.ndarray) -> h5py.Dataset:
        column = self.columns[name]
        dtype = STRING if column.dtype == "str" else np.dtype(column.dtype)
        options: dict[str, Any] = {}
        if dtype is not STRING:
            options = {"compression": "gzip", "compression_opts": DEFLATE_LEVEL, "shuffle": True}
        data = self.h5.create_dataset(name, (0,) + values.shape[1:], dtype,
                                      maxshape=(None,) + values.shape[1:],
                                      chunks=(CHUNK,) + values.shape[1:], **options)
        data.dims[0].attach_scale(self.h5["spectrum"])
        if values.ndim == 2:
            data.dims[1].attach_scale(self.h5["latent"])
        data.attrs.update(units=column.units, long_name=column.description,
                          **schema.flag_attributes(column.spec))
        return data

    def write(self, part: Encoded) -> None:
        lo, hi = self.n, self.n + len(part)
        self.h5["spectrum"].resize((hi,))
        self.h5["spectrum"][lo:hi] = np.arange(lo, hi)
        for name, values in _table(part, list(self.columns.values())).items():
            data = self.h5[name] if name in self.h5 else self._create(name, values)
            data.resize((hi,) + values.shape[1:])
            data[lo:hi] = values
        self.n = hi

    def finish(self, attrs: dict[str, Any]) -> None:
        self.h5.attrs.update(attrs)
        self.h5.close()


class CsvWriter:
    """One row per spectrum; an array column NAME spreads over NAME_0, NAME_1, ... columns."""

    def __init__(self, path: Path, latent_size: int) -> None:
        self.handle = open(path, "w", newline="")  # noqa: SIM115 - closed in finish()
        self.out = csv.writer(self.handle)
        self.header_done = False
        self.columns = output_columns(latent_size)

    def write(self, part: Encoded) -> None:
        columns = _table(part, self.columns)
        if not self.header_done:
            header = []
            for name, values in columns.items():
                header += schema.csv_names(name, values.shape[1] if values.ndim == 2 else None)
            self.out.writerow(header)
            self.header_done = True
        text = []
        for values in columns.values():
            if values.dtype.kind == "f":
                values = np.char.mod("%.9g", values)  # float32 round-trips through 9 digits
            text.append(values.reshape(len(part), -1).astype(str))
        self.out.writerows(np.concatenate(text, axis=1).tolist())

    def finish(self, attrs: dict[str, Any]) -> None:
        self.handle.close()


class FitsWriter:
    """A binary table (extension ENCODED) with units; held until ``finish`` (row count and
    string widths must be known up front)."""

    def __init__(self, path: Path, latent_size: int) -> None:
        self.path, self.parts, self.columns = path, [], output_columns(latent_size)

    def write(self, part: Encoded) -> None:
        self.parts.append(part)

    def finish(self, attrs: dict[str, Any]) -> None:
        from astropy.io import fits

        table = _table(Encoded.concat(self.parts), self.columns)
        columns = []
        for column in self.columns:
            values, unit = table[column.name], schema.fits_unit(column.units)
            if column.dtype == "str":
                text = values.astype(str)
                width = max(1, max((len(v.encode()) for v in text), default=1))
                columns.append(fits.Column(column.name, f"{width}A", unit=unit,
                                           array=np.char.encode(text)))
            else:
                code = {"f": "E", "i": "J", "u": "B"}[np.dtype(column.dtype).kind]
                repeat = values.shape[1] if values.ndim == 2 else ""
                columns.append(fits.Column(column.name, f"{repeat}{code}", unit=unit,
                                           array=values))
        extname = schema.load("encode_output")["extname"]
        hdu = fits.BinTableHDU.from_columns(columns, name=extname)
        for key, value in attrs.items():
            plain = isinstance(value, (str, int, float)) and not isinstance(value, bool)
            hdu.header[f"HIERARCH {key}"] = value if plain else json.dumps(value)
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(self.path)


WRITERS = {"h5": H5Writer, "csv": CsvWriter, "fits": FitsWriter}


@contextlib.contextmanager
def open_writer(path: str | Path, latent_size: int, overwrite: bool = True
                ) -> Iterator[Writer]:
    """Yield a writer on a temporary beside ``path``; call ``finish(attrs)`` before leaving.

    The output's lock is held meanwhile (a second writer fails at once) and the finished
    file is put in place without replacing anything unless ``overwrite``."""
    path = Path(path)
    fmt = check_output(path, overwrite)
    with exclusive(path, "this output"), atomic_path(path, overwrite) as tmp:
        writer = WRITERS[fmt](tmp, latent_size)
        try:
            yield writer
        except BaseException:
            with contextlib.suppress(Exception):
                writer.finish({})
            raise
