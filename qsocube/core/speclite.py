"""Reader for SDSS/BOSS/eBOSS ``spec-PLATE-MJD-FIBER.fits`` ("lite") spectra.

HDUs are read by index (some files have blank extension names); column names are
matched case-insensitively (some files have upper-case names). Pixels whose
``and_mask`` has any of the chosen bad-data bits set get ivar = 0.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qsocube.core import fitsfast
from qsocube.core.errors import InputError, Rejection
from qsocube.core.grid import SDSS_DLOGLAM

SPEC_NAME = re.compile(r"^spec-(\d{4,})-(\d{5})-(\d{4})\.fits(\.gz)?$")
META_COLUMNS = ("PLATE", "MJD", "FIBERID", "PLUG_RA", "PLUG_DEC", "Z", "CLASS", "ZWARNING",
                "PLATESN2", "SN_MEDIAN_ALL", "THING_ID")
# SPPIXMASK bits that mean the pixel's data are bad (NOPLUG, BADTRACE, BADFLAT, BADARC,
# MANYREJECTED, NEARWHOPPER, WHOPPER, FULLREJECT, NODATA, COMBINEREJ, BADFLUXFACTOR).
# Fibre-level warnings (MANYBADCOLUMNS, LARGESHIFT, BADSKYFIBER) and sky/informational
# bits (NEARBADPIXEL, LOWFLAT, PARTIALREJECT, BRIGHTSKY, ...) would mask good pixels.
BAD_PIXEL_BITS = (0, 1, 2, 3, 5, 8, 9, 18, 24, 25, 26)
DEFAULT_AND_MASK_BITS = sum(1 << bit for bit in BAD_PIXEL_BITS)
# A loglam value may sit this far (in pixels) off the 1e-4 dex frame: float32 rounding
# of values near 3.6 is ~3e-3 pixels, so 0.05 catches real misalignment only.
FRAME_TOLERANCE = 0.05


@dataclass(frozen=True)
class SpecLite:
    """One spectrum as read from a spec-lite file, on its own pixels.

    ``start`` is the absolute SDSS 1e-4 dex frame index of the first pixel (pixel k has
    log10(wavelength / Angstrom) = (start + k) * 1e-4); ``flux`` (n_pixels,) float32 in
    1e-17 erg s-1 cm-2 Angstrom-1; ``ivar`` (n_pixels,) float32, the inverse variance of
    flux, 0 on bad pixels; ``meta`` the HDU 2 identifiers and survey metadata (PLATE, MJD,
    FIBERID always present).
    """

    path: Path
    start: int
    flux: np.ndarray
    ivar: np.ndarray
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def spec_id(self) -> str:
        """PLATE-MJD-FIBERID, e.g. ``0266-51602-0013``."""
        return spec_id(self.meta["PLATE"], self.meta["MJD"], self.meta["FIBERID"])


def spec_id(plate: object, mjd: object, fiberid: object) -> str:
    """The PPPP-MMMMM-FFFF identifier of a spectrum."""
    return f"{int(plate):04d}-{int(mjd):05d}-{int(fiberid):04d}"


def _column(table: np.ndarray, name: str) -> np.ndarray | None:
    for candidate in table.dtype.names or ():
        if candidate.lower() == name.lower():
            return table[candidate]
    return None


def read_spec_lite(path: str | Path, and_mask_bits: int = DEFAULT_AND_MASK_BITS) -> SpecLite:
    """Read one spec-lite file; raise ``InputError`` (a ``Rejection`` code and one line) if
    it is unusable. Pixels whose and_mask has one of ``and_mask_bits`` get ivar = 0."""
    path = Path(path)
    try:
        coadd, meta_row = _read_fast(path)
    except fitsfast.Broken as exc:
        raise InputError(path, Rejection.unreadable, f"not a readable FITS file ({exc})") from None
    except (fitsfast.Unsupported, KeyError, ValueError):
        coadd, meta_row = _read_astropy(path)
    flux, loglam, ivar = coadd["flux"], coadd["loglam"], coadd["ivar"]
    if len(flux) < 2:
        raise InputError(path, Rejection.missing_data, "fewer than 2 pixels")
    start = _frame_start(path, loglam)
    bad_flux = ~np.isfinite(flux) & (ivar != 0)
    if bad_flux.any():
        raise InputError(path, Rejection.non_finite_values,
                         f"{int(bad_flux.sum())} pixels of flux are NaN or inf")
    if not np.isfinite(ivar).all() or (ivar < 0).any():
        code = Rejection.bad_values if np.isfinite(ivar).all() else Rejection.non_finite_values
        raise InputError(path, code, "ivar has negative, NaN or inf values")
    if coadd.get("and_mask") is not None:
        ivar = np.where((coadd["and_mask"].astype(np.int64) & and_mask_bits) != 0, 0, ivar)
    if not (ivar > 0).any():
        raise InputError(path, Rejection.no_valid_pixels,
                         "no pixel with ivar > 0 (everything masked)")
    flux = np.where(np.isfinite(flux), flux, 0)
    meta = read_meta(path, meta_row)
    return SpecLite(path, start, flux.astype(np.float32), ivar.astype(np.float32), meta)


Columns = dict[str, np.ndarray | None]


def _read_fast(path: Path) -> tuple[Columns, Columns | None]:
    tables = fitsfast.read_tables(path, wanted=2)
    if not tables:
        raise InputError(path, Rejection.missing_data, "no spectrum table in HDU 1")
    coadd: Columns = {}
    for name in ("flux", "loglam", "ivar"):
        if not tables[0].has(name):
            raise KeyError(name)  # let astropy decide: the column may be scaled or absent
        coadd[name] = tables[0].column(name).astype(np.float64)
    coadd["and_mask"] = tables[0].column("and_mask") if tables[0].has("and_mask") else None
    meta_row = None
    if len(tables) > 1 and tables[1].n_rows:
        meta_row = {name: tables[1].column(name)[:1] for name in META_COLUMNS
                    if tables[1].has(name)}
    return coadd, meta_row


def _read_astropy(path: Path) -> tuple[Columns, Columns | None]:
    from astropy.io import fits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=False) as hdus:
                if len(hdus) < 2 or hdus[1].data is None:
                    raise InputError(path, Rejection.missing_data, "no spectrum table in HDU 1")
                table = hdus[1].data
                names = {n.lower(): n for n in table.columns.names}
                coadd: Columns = {}
                for name in ("flux", "loglam", "ivar"):
                    if name not in names:
                        raise InputError(path, Rejection.missing_data,
                                         f"HDU 1 has no '{name}' column")
                    coadd[name] = np.asarray(table[names[name]], dtype=np.float64)
                coadd["and_mask"] = (np.asarray(table[names["and_mask"]])
                                     if "and_mask" in names else None)
                meta_row = None
                if len(hdus) > 2 and hdus[2].data is not None and len(hdus[2].data):
                    meta_names = {n.upper(): n for n in hdus[2].columns.names}
                    meta_row = {key: np.asarray(hdus[2].data[meta_names[key]][:1])
                                for key in META_COLUMNS if key in meta_names}
    except InputError:
        raise
    except Exception as exc:  # astropy raises many types for broken files
        raise InputError(path, Rejection.unreadable,
                         f"not a readable FITS file ({_short(exc)})") from None
    return coadd, meta_row


def _frame_start(path: Path, loglam: np.ndarray) -> int:
    if not np.isfinite(loglam).all():
        raise InputError(path, Rejection.non_finite_values, "loglam has NaN or inf values")
    steps = np.diff(loglam) / SDSS_DLOGLAM
    if (steps <= 0).any():
        raise InputError(path, Rejection.off_frame, "loglam is not increasing")
    position = loglam / SDSS_DLOGLAM
    start = int(np.rint(position[0]))
    expected = start + np.arange(len(loglam))
    if np.max(np.abs(position - expected)) > FRAME_TOLERANCE:
        raise InputError(path, Rejection.off_frame, "loglam is not on the SDSS 1e-4 dex grid")
    return start


def read_meta(path: Path, meta_row: Columns | None) -> dict[str, object]:
    """Identifiers and survey metadata from HDU 2, falling back on the file name."""
    meta: dict[str, object] = {}
    for name, values in (meta_row or {}).items():
        if values is not None and len(values):
            value = values[0]
            value = value.decode() if isinstance(value, bytes) else value
            meta[name] = value.strip() if isinstance(value, str) else np.asarray(value).item()
    named = SPEC_NAME.match(path.name)
    for key, index in (("PLATE", 1), ("MJD", 2), ("FIBERID", 3)):
        if key not in meta:
            if not named:
                raise InputError(path, Rejection.missing_data, f"no {key} in HDU 2 and the "
                                 "name is not spec-PLATE-MJD-FIBER.fits")
            meta[key] = int(named.group(index))
    return meta


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]
