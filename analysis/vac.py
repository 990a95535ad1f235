"""The value-added catalogue: one row per spectrum, FITS binary table plus a CSV copy.

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

from analysis.io import Release
from qsocube.atomic import atomic_path

EXTNAME = "QSOCUBE_VAC"
FITS_NAME = "qsocube_vac.fits"
CSV_NAME = "qsocube_vac.csv"
NO_RANK = -1  # ANOMALY_RANK_NN of a spectrum without a score (TNULL)


@dataclass(frozen=True)
class VacColumn:
    name: str
    tform: str  # FITS TFORM, e.g. "D", "9E", "18A"
    unit: str
    description: str  # <= 68 characters: one FITS card
    values: np.ndarray | None = None


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


def _specs(latent_sizes: list[int]) -> list[tuple]:
    """(name, TFORM, unit, description, fetch(release) -> array) of every column."""
    def cat(name: str, dtype: str) -> Callable[[Release], np.ndarray]:
        return lambda r: _catalog(r, name, dtype)

    specs = [
        ("SDSS_NAME", "18A", "", "SDSS designation from DR16Q (empty if not in the catalogue)",
         cat("SDSS_NAME", "U32")),
        ("SPEC_ID", "15A", "", "PLATE-MJD-FIBERID of the spectrum (cube variable spec_id)",
         lambda r: np.asarray(r.spectra["spec_id"].values)),
        ("SPECTRUM", "K", "", "row of the spectrum in the cube (coordinate spectrum)",
         lambda r: np.asarray(r.spectra["spectrum"].values, np.int64)),
        ("PLATE", "J", "", "spectroscopic plate", cat("PLATE", "i4")),
        ("MJD", "J", "d", "modified Julian day of the observation", cat("MJD", "i4")),
        ("FIBERID", "J", "", "fibre number", cat("FIBERID", "i4")),
        ("RA", "D", "deg", "right ascension (J2000)", cat("RA", "f8")),
        ("DEC", "D", "deg", "declination (J2000)", cat("DEC", "f8")),
        ("Z", "D", "", "redshift (DR16Q Z; NaN if not measured)", cat("Z", "f8")),
    ]
    for size in latent_sizes:
        key = f"{size:02d}"
        specs += [
            (f"LATENT_MEAN_{key}", f"{size}E", "", f"encoder mean of the {size}-dim latent code",
             _model_var(size, "latent_mean", "f4")),
            (f"RECON_MSE_{key}", "E", "", f"reconstruction MSE of normalised flux, {size}-dim VAE",
             _model_var(size, "recon_mse", "f4")),
            (f"RECON_CHI2_{key}", "E", "", f"reduced chi-square of the reconstruction, "
             f"{size}-dim VAE", _model_var(size, "recon_chi2", "f4")),
            (f"ANOMALY_SCORE_{key}", "E", "", f"fraction of training spectra with smaller MSE, "
             f"{size}-dim", _model_var(size, "anomaly_score", "f4")),
            (f"ANOMALY_RANK_{key}", "J", "", f"rank of ANOMALY_SCORE_{key}: 1 = most anomalous, "
             "-1 = none", _rank(size)),
        ]
    specs.append(("SPLIT", "B", "", "data split: 0 train, 1 validation, 2 test",
                  lambda r: np.asarray(r.spectra["split"].values, np.uint8)))
    return specs


def vac_columns(release: Release | None, latent_sizes: list[int]) -> list[VacColumn]:
    """The catalogue's columns, with data when ``release`` is given (None: docs only)."""
    columns = []
    for name, tform, unit, text, fetch in _specs(latent_sizes):
        values = None
        if release is not None:
            values = fetch(release)
            if tform.endswith("A"):
                tform, values = _strings(values)
        columns.append(VacColumn(name, tform, unit, text, values))
    return columns


def write_fits(release: Release, columns: list[VacColumn], target: Path, cube_sha256: str
               ) -> None:
    fits_columns = [fits.Column(name=c.name, format=c.tform, unit=c.unit or None,
                                array=c.values, null=NO_RANK if c.name.startswith(
                                    "ANOMALY_RANK") else None) for c in columns]
    hdu = fits.BinTableHDU.from_columns(fits_columns, name=EXTNAME)
    for i, column in enumerate(columns, start=1):  # beside the column's other cards
        last = f"TUNIT{i}" if f"TUNIT{i}" in hdu.header else f"TFORM{i}"
        hdu.header.insert(last, (f"TCOMM{i}", column.description), after=True)
    attrs = release.attrs
    for key, value, comment in (
            ("PRODVER", attrs.get("product_version", ""), "qsocube product version"),
            ("SCHEMAV", attrs.get("schema_version", ""), "cube schema version"),
            ("SOURCE", attrs.get("source", ""), "simulated or SDSS"),
            ("CUBEFILE", release.cube_path.name, "cube this catalogue was made from"),
            ("NSPEC", release.n_spectra, "number of spectra (rows)")):
        hdu.header[key] = (value, comment)
    hdu.header["CUBESHA"] = cube_sha256  # sha256 of the cube file (no room for a comment)
    # No CHECKSUM cards: their comments carry a timestamp, and reruns should give the same
    # bytes; MANIFEST.sha256 covers integrity.
    with atomic_path(target) as tmp:
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp)


def csv_table(columns: list[VacColumn]) -> tuple[list[str], list[np.ndarray]]:
    names, arrays = [], []
    for column in columns:
        values = np.asarray(column.values)
        if values.ndim == 2:
            for k in range(values.shape[1]):
                names.append(f"{column.name}_{k}")
                arrays.append(values[:, k])
        else:
            names.append(column.name)
            arrays.append(values)
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
    paths = {"fits": folder / FITS_NAME, "csv": folder / CSV_NAME}
    write_fits(release, columns, paths["fits"], cube_sha256)
    write_csv(columns, paths["csv"])
    return paths
