"""Output of ``qsocube encode``: HDF5 (default), FITS binary table or CSV, by extension.

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

from inference.encoder import Encoded
from inference.sources import FLAG_MEANINGS
from qsocube.atomic import atomic_path
from qsocube.cli import UsageError
from qsocube.cube import DEFLATE_LEVEL

FORMATS = {".h5": "h5", ".hdf5": "h5", ".nc": "h5", ".fits": "fits", ".fit": "fits",
           ".csv": "csv"}
STRING = h5py.string_dtype("utf-8")
CHUNK = 4096
DESCRIPTIONS = {
    "source": ("1", "input file, or file[row] for array and cube inputs"),
    "PLATE": ("1", "SDSS plate (-1 unknown)"), "MJD": ("d", "SDSS MJD (-1 unknown)"),
    "FIBERID": ("1", "SDSS fiber (-1 unknown)"),
    "CLASS": ("1", "SDSS pipeline class from HDU 2 ('' unknown)"),
    "Z": ("1", "SDSS pipeline redshift from HDU 2 (NaN unknown)"),
    "flag": ("1", "0 if encoded, else why the spectrum was rejected"),
    "reason": ("1", "why the spectrum was rejected ('' if encoded)"),
    "covered_fraction": ("1", "fraction of grid pixels with valid data"),
    "latent_mean": ("1", "encoder mean of the latent code"),
    "latent_logvar": ("1", "encoder log-variance of the latent code"),
    "recon_mse": ("1", "reconstruction MSE of normalised flux over valid pixels"),
    "recon_chi2": ("1", "reduced chi-square of the reconstruction with the inverse variances"),
    "anomaly_score": ("1", "fraction of training spectra with a smaller recon_mse"),
}


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
    probe = path.with_name(f".{path.name}.probe")
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
        self.h5 = h5py.File(path, "w")
        self.n = 0
        spectrum = self.h5.create_dataset("spectrum", (0,), np.int64, maxshape=(None,),
                                          chunks=(CHUNK,))
        spectrum.make_scale("spectrum")
        latent = self.h5.create_dataset("latent", data=np.arange(latent_size, dtype=np.int64))
        latent.make_scale("latent")

    def _create(self, name: str, values: np.ndarray) -> h5py.Dataset:
        dtype = STRING if values.dtype == object else values.dtype
        options: dict[str, Any] = {}
        if dtype is not STRING:
            options = {"compression": "gzip", "compression_opts": DEFLATE_LEVEL, "shuffle": True}
        data = self.h5.create_dataset(name, (0,) + values.shape[1:], dtype,
                                      maxshape=(None,) + values.shape[1:],
                                      chunks=(CHUNK,) + values.shape[1:], **options)
        data.dims[0].attach_scale(self.h5["spectrum"])
        if values.ndim == 2:
            data.dims[1].attach_scale(self.h5["latent"])
        units, long_name = DESCRIPTIONS[name]
        data.attrs.update(units=units, long_name=long_name)
        if name == "flag":
            data.attrs.update(flag_values=np.arange(len(FLAG_MEANINGS), dtype=np.uint8),
                              flag_meanings=" ".join(FLAG_MEANINGS))
        return data

    def write(self, part: Encoded) -> None:
        lo, hi = self.n, self.n + len(part)
        self.h5["spectrum"].resize((hi,))
        self.h5["spectrum"][lo:hi] = np.arange(lo, hi)
        for name, values in part.as_dict().items():
            data = self.h5[name] if name in self.h5 else self._create(name, values)
            data.resize((hi,) + values.shape[1:])
            data[lo:hi] = values
        self.n = hi

    def finish(self, attrs: dict[str, Any]) -> None:
        self.h5.attrs.update(attrs)
        self.h5.close()


class CsvWriter:
    """One row per spectrum; latent vectors spread over latent_mean_00, ... columns."""

    def __init__(self, path: Path, latent_size: int) -> None:
        self.handle = open(path, "w", newline="")  # noqa: SIM115 - closed in finish()
        self.out = csv.writer(self.handle)
        self.header_done = False
        self.latent_size = latent_size

    def write(self, part: Encoded) -> None:
        columns = part.as_dict()
        if not self.header_done:
            header = []
            for name, values in columns.items():
                header += ([f"{name}_{i:02d}" for i in range(values.shape[1])]
                           if values.ndim == 2 else [name])
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
    def __init__(self, path: Path, latent_size: int) -> None:
        self.path, self.parts, self.latent_size = path, [], latent_size

    def write(self, part: Encoded) -> None:
        self.parts.append(part)

    def finish(self, attrs: dict[str, Any]) -> None:
        from astropy.io import fits

        table = Encoded.concat(self.parts).as_dict()
        columns = []
        for name, values in table.items():
            if values.dtype == object:
                text = values.astype(str)
                width = max(1, max((len(v.encode()) for v in text), default=1))
                columns.append(fits.Column(name, f"{width}A", array=np.char.encode(text)))
            else:
                code = {"f": "E", "i": "J", "u": "B"}[values.dtype.kind]
                repeat = values.shape[1] if values.ndim == 2 else ""
                columns.append(fits.Column(name, f"{repeat}{code}", array=values))
        hdu = fits.BinTableHDU.from_columns(columns, name="ENCODED")
        for key, value in attrs.items():
            plain = isinstance(value, (str, int, float)) and not isinstance(value, bool)
            hdu.header[f"HIERARCH {key}"] = value if plain else json.dumps(value)
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(self.path)


WRITERS = {"h5": H5Writer, "csv": CsvWriter, "fits": FitsWriter}


@contextlib.contextmanager
def open_writer(path: str | Path, latent_size: int, overwrite: bool = True
                ) -> Iterator[Writer]:
    """Yield a writer on a temporary beside ``path``; call ``finish(attrs)`` before leaving."""
    path = Path(path)
    fmt = check_output(path, overwrite)
    with atomic_path(path) as tmp:
        writer = WRITERS[fmt](tmp, latent_size)
        try:
            yield writer
        except BaseException:
            with contextlib.suppress(Exception):
                writer.finish({})
            raise
