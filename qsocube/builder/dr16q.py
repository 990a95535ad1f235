"""The SDSS DR16Q quasar catalogue (``DR16Q_v4.fits``): data model, reader and writer.

This module is the single source of truth for the catalogue layout. The simulator writes
its ``DR16Q_v4.fits`` through :func:`write_catalog` and the builder reads either that file
or the real one through :func:`read_catalog`, so simulated and real data take one path.

Layout: HDU 0 is an empty primary, HDU 1 the binary table (EXTNAME ``CATALOG``) with the
**full** DR16Q_v4 column list, 183 columns, in the real order, so that column *positions*
match the real file too (RA 1, DEC 2, MJD 4, Z 26, NHI_DLA 54, CONF_DLA 55, BAL_PROB 56,
BI_CIV 57, BI_SIIV 61, PLATESN2 90, M_I 96, SN_MEDIAN_ALL 97, XMM_SOFT_FLUX 158,
XMM_HARD_FLUX 160, XMM_TOTAL_FLUX 162, 0-based). Sources, all public:

* names, order and scalar types: the SDSS CAS schema of table ``dr16q`` ("The DR16 QSO
  Catalog (v4)", as loaded by astro-datalab/digestor ``dr16q.sql``); its order reproduces
  all fifteen positions above;
* array lengths (``Z_DLA``/``NHI_DLA``/``CONF_DLA`` [5], ``*_DUPLICATE`` [74], photometry
  [5]): the CAS schema of ``dr16q_superset``, which shares those columns;
* string widths: the NOIRLab Data Lab schema of the same table (``varchar(n)``);
* "not measured" conventions (the ``missing`` field below): ``-1`` is DR16Q's placeholder
  for a quantity that was not measured, e.g. the empty slots of the five DLA arrays
  (Lyke et al. 2020, ApJS 250, 8; code that reads DR16Q counts DLAs as
  ``CONF_DLA != -1``), the BAL columns of quasars outside the redshift range searched for
  BALs, and redshifts from surveys that did not observe the object. ``M_I`` is written as
  the positive placeholder 1 (bad photometry) or 2 (bad Z_PCA) by the DR16Q code that
  computes it (github.com/bradlyke/dr16q ``abs_mag.py``), so any ``M_I > 0`` means "not
  computed". For the XMM fluxes of unmatched quasars the exact placeholder could not be
  established from a primary source, so the reader treats any flux ``<= 0`` as not
  measured (a detected flux is positive) and the writer uses ``-1`` like the rest.

``SDSS_NAME`` is 18A: the 18 characters ``hhmmss.ss+ddmmss.s`` without the leading "J" of
the full designation "SDSS Jhhmmss.ss+ddmmss.s".

Three TFORMs differ between those sources: ``SPECTRO_DUPLICATE`` (int32 in CAS, int16 in
the DR16Q team's catalogue-maker code, github.com/bradlyke/utilities ``empty_cat_maker.py``)
and ``PSFFLUX_IVAR``/``PSFMAGERR`` (float32 in CAS, float64 in that code). The team's
types are used because they reproduce the published file size exactly: 1,718,484,480 bytes
for 750,414 rows = a 2,290-byte row plus 12 header blocks; the CAS types give 2,398 bytes.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from astropy.io import fits

from qsocube.core.atomic import atomic_path
from qsocube.core.errors import CatalogError

EXTNAME = "CATALOG"
N_DLA_SLOTS = 5

# Missing-value rules (see module docstring): how a stored value says "not measured".
_RULES = {
    "none": "always measured in DR16Q; no sentinel",
    "eq-1": "-1 in DR16Q means not measured; stored as NaN",
    "gt0": "a positive placeholder (1: bad photometry, 2: bad Z_PCA) in DR16Q means not "
    "computed; stored as NaN",
    "le0": "a flux <= 0 (DR16Q placeholder, -1 when written here) means no XMM match; "
    "stored as NaN",
}
# Value written for NaN under each rule, so that write_catalog(NaN) -> read_catalog(NaN).
_SENTINELS = {"eq-1": -1.0, "gt0": 1.0, "le0": -1.0}

# The column table (name, TFORM, unit, missing rule, description; the real HDU 1 order)
# is data, kept beside this module.
COLUMN_TABLE = "dr16q_columns.psv"

_DTYPES = {"D": "f8", "E": "f4", "K": "i8", "J": "i4", "I": "i2", "B": "u1"}


@dataclass(frozen=True)
class ColumnSpec:
    """One DR16Q_v4 column: FITS name, TFORM, unit, description and missing-value rule."""

    name: str
    tform: str
    unit: str
    description: str
    missing: str  # one of _RULES

    @property
    def repeat(self) -> int:
        count = re.match(r"\d*", self.tform).group()
        return int(count) if count else 1

    @property
    def code(self) -> str:
        return self.tform.lstrip("0123456789")

    @property
    def is_string(self) -> bool:
        return self.code == "A"

    @property
    def dtype(self) -> np.dtype:
        """Native numpy dtype of one element (bytes for strings)."""
        return np.dtype(f"S{self.repeat}") if self.is_string else np.dtype(_DTYPES[self.code])

    @property
    def missing_value_rule(self) -> str:
        return _RULES[self.missing]

    @property
    def fill(self) -> float | int | bytes:
        """Value written when the producer does not model this column."""
        if self.is_string:
            return b""
        if self.code == "B" or self.name.endswith("_MATCHED"):
            return 0  # unsigned bytes cannot hold -1; match flags: 0 = not matched
        if self.name in ("RANDOM_SELECT", "IS_QSO_FINAL"):
            return 0  # flags: 0 = not selected
        return -1  # DR16Q's "not available" placeholder


def _parse(table: str) -> tuple[ColumnSpec, ...]:
    specs = []
    for line in table.strip().splitlines():
        if line.startswith("#"):
            continue
        name, tform, unit, missing, description = line.split("|")
        if missing not in _RULES:
            raise ValueError(f"bad missing rule {missing!r} for {name}")
        specs.append(ColumnSpec(name, tform, unit, description, missing))
    return tuple(specs)


COLUMNS: tuple[ColumnSpec, ...] = _parse(
    resources.files("qsocube.builder").joinpath(COLUMN_TABLE).read_text(encoding="utf-8"))
COLUMN_INDEX: dict[str, int] = {c.name: i for i, c in enumerate(COLUMNS)}
_SPECS: dict[str, ColumnSpec] = {c.name: c for c in COLUMNS}

# Identifiers plus the analysis columns, in the real relative order.
CUBE_COLUMNS: tuple[str, ...] = tuple(
    c.name
    for c in COLUMNS
    if c.name
    in {
        "SDSS_NAME", "RA", "DEC", "PLATE", "MJD", "FIBERID", "THING_ID", "Z", "NHI_DLA",
        "CONF_DLA", "BAL_PROB", "BI_CIV", "BI_SIIV", "PLATESN2", "M_I", "SN_MEDIAN_ALL",
        "XMM_SOFT_FLUX", "XMM_HARD_FLUX", "XMM_TOTAL_FLUX",
    }
)
_JOIN_KEYS = ("PLATE", "MJD", "FIBERID")
# Units for the cube attributes where FITS TUNIT has none (log quantities are not FITS units).
_ATTR_UNITS = {"NHI_DLA": "log(cm-2)"}
_INT_IDS = {"PLATE", "MJD", "FIBERID", "THING_ID"}


@dataclass(frozen=True)
class Catalog:
    """Columns of a DR16Q-format catalogue, with "not measured" sentinels turned into NaN."""

    path: Path
    columns: dict[str, np.ndarray]
    attrs: dict[str, dict[str, str]]
    plate: np.ndarray
    mjd: np.ndarray
    fiberid: np.ndarray

    def __len__(self) -> int:
        return len(self.plate)


def column_spec(name: str) -> ColumnSpec:
    """The data-model entry of one column (KeyError if DR16Q_v4 has no such column)."""
    return _SPECS[name]


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _to_nan(spec: ColumnSpec, raw: np.ndarray) -> np.ndarray:
    values = np.array(raw, dtype=np.float64)
    if spec.missing == "eq-1":
        values[values == -1.0] = np.nan
    elif spec.missing == "gt0":
        values[values > 0.0] = np.nan
    elif spec.missing == "le0":
        values[values <= 0.0] = np.nan
    return values


def _convert(spec: ColumnSpec, raw: np.ndarray, n: int, path: Path) -> np.ndarray:
    if spec.is_string:
        return np.char.strip(np.asarray(raw).astype(str))
    expected = (n,) if spec.repeat == 1 else (n, spec.repeat)
    if raw.shape != expected:
        raise CatalogError(
            f"{path}: column {spec.name} has shape {raw.shape}, expected {expected} "
            f"(TFORM {spec.tform})"
        )
    if spec.name in _INT_IDS or (spec.code in "KJIB" and spec.missing == "none"):
        return np.array(raw, dtype=np.int64)  # identifiers and flags stay integers
    return _to_nan(spec, raw)  # floats, and integers with a sentinel, become float64 + NaN


def _table_layout(path: Path, wanted: list[str]) -> tuple[int, int, np.dtype, dict]:
    """Header facts of HDU 1: data offset, row count, on-disk row dtype, columns by name."""
    size = path.stat().st_size
    with warnings.catch_warnings():
        # astropy warns about truncation; the byte count is checked explicitly below.
        warnings.simplefilter("ignore")
        with fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
            if len(hdul) < 2 or not isinstance(hdul[1], fits.BinTableHDU):
                raise CatalogError(f"{path}: HDU 1 is not a binary table")
            hdu = hdul[1]
            n, row_bytes = int(hdu.header["NAXIS2"]), int(hdu.header["NAXIS1"])
            offset = int(hdu.fileinfo()["datLoc"])
            columns = {c.name.upper(): c for c in hdu.columns}
            row_dtype = hdu.columns.dtype.newbyteorder(">")  # FITS tables are big-endian
    if offset + row_bytes * n > size:
        raise CatalogError(
            f"{path}: truncated: HDU 1 needs {offset + row_bytes * n} bytes, file has {size}"
        )
    missing = [name for name in wanted if name not in columns]
    if missing:
        raise CatalogError(f"{path}: missing required column(s) in HDU 1: {', '.join(missing)}")
    if row_dtype.itemsize != row_bytes:
        raise CatalogError(f"{path}: HDU 1 row is {row_bytes} bytes, columns add up to "
                           f"{row_dtype.itemsize}")
    return offset, n, row_dtype, columns


def _read_fields(path: Path, offset: int, n: int, row_dtype: np.dtype, columns: dict,
                 wanted: list[str]) -> dict[str, np.ndarray]:
    """Copy only the wanted fields out of the table, a block of rows at a time.

    Reading blocks keeps memory at one block (~50 MB) plus the output columns, instead of
    mapping the whole 1.7 GB real file into the process.
    """
    fields = {name: columns[name].name for name in wanted}
    out = {name: np.empty(n, dtype=row_dtype[fields[name]]) for name in wanted}
    block = max(1, (48 << 20) // row_dtype.itemsize)
    with open(path, "rb") as fh:
        fh.seek(offset)
        for lo in range(0, n, block):
            rows = min(block, n - lo)
            raw = fh.read(rows * row_dtype.itemsize)
            if len(raw) != rows * row_dtype.itemsize:
                raise CatalogError(f"{path}: truncated while reading row {lo}")
            table = np.frombuffer(raw, dtype=row_dtype)
            for name in wanted:
                out[name][lo : lo + rows] = table[fields[name]]
    for name in wanted:  # apply TSCAL/TZERO if a producer used them
        column = columns[name]
        if column.bscale not in (None, 1) or column.bzero not in (None, 0):
            out[name] = out[name] * (column.bscale or 1) + (column.bzero or 0)
    return out


def check_catalog(path: str | Path, columns: Sequence[str] = CUBE_COLUMNS) -> None:
    """Raise CatalogError (one line) unless ``path`` is a DR16Q-layout catalogue with
    ``columns``: the header and sizes only, before any work uses it."""
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"{path}: no such catalogue file")
    try:
        _table_layout(path, list(dict.fromkeys([*columns, *_JOIN_KEYS])))
    except CatalogError:
        raise
    except Exception as exc:  # astropy raises many types for a file it cannot read
        raise CatalogError(f"{path}: not a readable FITS catalogue: {_one_line(exc)}") from None


def read_catalog(path: str | Path, columns: Sequence[str] = CUBE_COLUMNS) -> Catalog:
    """Read ``columns`` (plus the PLATE/MJD/FIBERID join keys) from HDU 1 of a DR16Q file.

    Works on the real 750,414-row ``DR16Q_v4.fits``: astropy parses the header and only
    the requested fields are copied out of the table, block by block. Extra columns are
    ignored. Raises :class:`CatalogError` (one line) for a missing, unreadable or truncated
    file or a missing required column.
    """
    path = Path(path)
    wanted = list(dict.fromkeys([*columns, *_JOIN_KEYS]))
    unknown = [name for name in wanted if name not in _SPECS]
    if unknown:
        raise CatalogError(f"{path}: not DR16Q_v4 columns: {', '.join(unknown)}")
    if not path.is_file():
        raise CatalogError(f"{path}: no such catalogue file")
    try:
        offset, n, row_dtype, present = _table_layout(path, wanted)
        raw = _read_fields(path, offset, n, row_dtype, present, wanted)
        out = {name: _convert(_SPECS[name], raw[name], n, path) for name in wanted}
    except CatalogError:
        raise
    except Exception as exc:  # astropy raises many types for a file it cannot read
        raise CatalogError(f"{path}: not a readable FITS catalogue: {_one_line(exc)}") from exc
    attrs = {
        name: {
            "units": _ATTR_UNITS.get(name, _SPECS[name].unit or "1"),
            "long_name": _SPECS[name].description,
            "missing_value_rule": _SPECS[name].missing_value_rule,
        }
        for name in wanted
    }
    return Catalog(path, out, attrs, out["PLATE"], out["MJD"], out["FIBERID"])


def _column_array(spec: ColumnSpec, values: np.ndarray | None, n: int) -> np.ndarray:
    shape = (n,) if spec.repeat == 1 or spec.is_string else (n, spec.repeat)
    if values is None:
        return np.full(shape, spec.fill, dtype=spec.dtype)
    values = np.asarray(values)
    if spec.is_string:
        return np.char.encode(values.astype(str), "ascii").astype(spec.dtype)
    if values.shape != shape:
        raise ValueError(f"column {spec.name}: shape {values.shape}, expected {shape}")
    if spec.missing in _SENTINELS and values.dtype.kind == "f":
        values = np.where(np.isnan(values), _SENTINELS[spec.missing], values)
    return values.astype(spec.dtype)


def write_catalog(path: str | Path, table_columns: Mapping[str, np.ndarray]) -> None:
    """Write a DR16Q_v4-layout catalogue atomically (temp file beside ``path``, then rename).

    ``table_columns`` holds any subset of the DR16Q columns, all of one length; NaN in a
    column with a sentinel rule is written as DR16Q's sentinel, columns not given get the
    DR16Q "not available" fill. Unknown column names raise ValueError.
    """
    path = Path(path)
    unknown = sorted(set(table_columns) - set(_SPECS))
    if unknown:
        raise ValueError(f"not DR16Q_v4 columns: {', '.join(unknown)}")
    lengths = {len(np.asarray(v)) for v in table_columns.values()}
    if len(lengths) != 1:
        raise ValueError(f"catalogue columns differ in length: {sorted(lengths)}")
    n = lengths.pop()
    cols = [
        fits.Column(
            name=spec.name,
            format=spec.tform,
            unit=spec.unit or None,
            array=_column_array(spec, table_columns.get(spec.name), n),
        )
        for spec in COLUMNS
    ]
    table = fits.BinTableHDU.from_columns(cols, name=EXTNAME)
    primary = fits.PrimaryHDU()
    primary.header["COMMENT"] = "DR16Q_v4 layout (Lyke et al. 2020); written by qsocube"
    with atomic_path(path) as tmp:
        fits.HDUList([primary, table]).writeto(tmp)
