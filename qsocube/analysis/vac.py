"""The value-added catalogue: one row per spectrum, FITS binary table plus a CSV copy.

Names, formats, units and descriptions come from ``qsocube/schemas/vac.json``.

The FITS file carries units (TUNITn), a description of every column (TCOMMn, which
TOPCAT/STILTS show as the column description) and provenance keywords.
In the CSV, each array column LATENT_MEAN_NN becomes scalar columns LATENT_MEAN_NN_k.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from qsocube.analysis.io import Release
from qsocube.core import schema
from qsocube.core.atomic import atomic_path
from qsocube.core.layout import VAC_CSV, VAC_FITS

EXTNAME = schema.load("vac")["extname"]
NO_RANK = -1  # ANOMALY_RANK_NN of a spectrum without a score (TNULL in vac.json)


@dataclass(frozen=True)
class VacColumn:
    name: str
    tform: str  # FITS TFORM, e.g. "D", "9E", "18A"
    unit: str
    description: str  # <= 68 characters: one FITS card
    values: np.ndarray | None = None
    null: int | None = None  # TNULL


def _strings(values: np.ndarray) -> tuple[str, np.ndarray]:
    values = np.asarray(values).astype(str)
    width = max(int(np.char.str_len(values).max()) if values.size else 1, 1)
    return f"{width}A", values


def _catalog(release: Release, name: str, dtype: str) -> np.ndarray:
    if name in release.catalog:
        return np.asarray(release.catalog[name].values).astype(dtype)
    return np.full(release.n_spectra, -1 if dtype.startswith("i") else np.nan, dtype)


def anomaly_rank(score: np.ndarray, mse: np.ndarray) -> np.ndarray:
    """1 = most anomalous (highest score, then highest MSE, then lowest row); -1 = no score."""
    rank = np.full(len(score), NO_RANK, np.int32)
    rows = np.flatnonzero(np.isfinite(score))
    order = rows[np.lexsort((rows, -np.nan_to_num(mse[rows], nan=-np.inf), -score[rows]))]
    rank[order] = np.arange(1, len(order) + 1)
    return rank


def _model_var(size: int, name: str, dtype: str) -> Callable[[Release], np.ndarray]:
    return lambda r: np.asarray(r.models[size].data[name].values, dtype)


def _rank(size: int) -> Callable[[Release], np.ndarray]:
    return lambda r: anomaly_rank(_model_var(size, "anomaly_score", "f8")(r),
                                  _model_var(size, "recon_mse", "f8")(r))


def _fetchers(size: int | None) -> dict[str, Callable[[Release], np.ndarray]]:
    """How to get each column's values from a release; per-model columns for ``size``."""
    def cat(name: str, dtype: str) -> Callable[[Release], np.ndarray]:
        return lambda r: _catalog(r, name, dtype)

    if size is not None:
        key = f"{size:02d}"
        return {f"LATENT_MEAN_{key}": _model_var(size, "latent_mean", "f4"),
                f"RECON_MSE_{key}": _model_var(size, "recon_mse", "f4"),
                f"RECON_CHI2_{key}": _model_var(size, "recon_chi2", "f4"),
                f"RECON_SCORE_{key}": _model_var(size, "recon_score", "f4"),
                f"DENSITY_SCORE_{key}": _model_var(size, "density_score", "f4"),
                f"REDSHIFT_SCORE_{key}": _model_var(size, "redshift_score", "f4"),
                f"ANOMALY_SCORE_{key}": _model_var(size, "anomaly_score", "f4"),
                f"ANOMALY_RANK_{key}": _rank(size)}
    return {
        "SDSS_NAME": cat("SDSS_NAME", "U32"),
        "SPEC_ID": lambda r: np.asarray(r.spectra["spec_id"].values),
        "SPECTRUM": lambda r: np.asarray(r.spectra["spectrum"].values, np.int64),
        "PLATE": cat("PLATE", "i4"), "MJD": cat("MJD", "i4"), "FIBERID": cat("FIBERID", "i4"),
        "RA": cat("RA", "f8"), "DEC": cat("DEC", "f8"), "Z": cat("Z", "f8"),
        "SPLIT": lambda r: np.asarray(r.spectra["split"].values, np.uint8),
    }


def vac_columns(release: Release | None, latent_sizes: list[int]) -> list[VacColumn]:
    """The catalogue's columns (``qsocube/schemas/vac.json``), with data when ``release`` is
    given (None: for the documentation only)."""
    columns = []
    for column in schema.columns("vac", latent_sizes):
        values, tform = None, column.tform
        if release is not None:
            values = _fetchers(column.latent_size)[column.name](release)
            if tform.endswith("A"):
                tform, values = _strings(values)
        columns.append(VacColumn(column.name, tform, schema.fits_unit(column.units) or "",
                                 column.description, values, column.null))
    return columns


def write_fits(release: Release, columns: list[VacColumn], target: Path, cube_sha256: str
               ) -> None:
    fits_columns = [fits.Column(name=c.name, format=c.tform, unit=c.unit or None,
                                array=c.values, null=c.null) for c in columns]
    hdu = fits.BinTableHDU.from_columns(fits_columns, name=EXTNAME)
    for i, column in enumerate(columns, start=1):  # beside the column's other cards
        last = f"TUNIT{i}" if f"TUNIT{i}" in hdu.header else f"TFORM{i}"
        hdu.header.insert(last, (f"TCOMM{i}", column.description), after=True)
    attrs, comments = release.attrs, schema.load("vac")["header"]
    for key, value in (("PRODVER", attrs.get("product_version", "")),
                       ("SCHEMAV", attrs.get("schema_version", "")),
                       ("SOURCE", attrs.get("source", "")), ("CUBEFILE", release.cube_path.name),
                       ("NSPEC", release.n_spectra)):
        hdu.header[key] = (value, comments[key])
    hdu.header["CUBESHA"] = cube_sha256  # sha256 of the cube file (no room for a comment)
    # No CHECKSUM cards: their comments carry a timestamp, and reruns should give the same
    # bytes; MANIFEST.sha256 covers integrity.
    with atomic_path(target) as tmp:
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp)


def csv_table(columns: list[VacColumn]) -> tuple[list[str], list[np.ndarray]]:
    """CSV names and 1-d arrays: an array column NAME becomes NAME_0, NAME_1, ..."""
    names, arrays = [], []
    for column in columns:
        values = np.asarray(column.values)
        width = values.shape[1] if values.ndim == 2 else None
        names += schema.csv_names(column.name, width)
        arrays += [values[:, k] for k in range(width)] if width else [values]
    return names, arrays


def write_csv(columns: list[VacColumn], target: Path) -> None:
    names, arrays = csv_table(columns)
    # astype(str) gives the shortest text that reads back to the same float32/float64
    text = [a.astype(str) for a in arrays]
    with atomic_path(target) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        writer.writerows(zip(*text, strict=True))


def write_vac(release: Release, folder: Path, cube_sha256: str) -> dict[str, Path]:
    """Write catalog/qsocube_vac.fits and .csv; return their paths."""
    columns = vac_columns(release, sorted(release.models))
    paths = {"fits": folder / VAC_FITS, "csv": folder / VAC_CSV}
    write_fits(release, columns, paths["fits"], cube_sha256)
    write_csv(columns, paths["csv"])
    return paths
