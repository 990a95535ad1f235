"""Reader for SDSS/BOSS/eBOSS ``spec-PLATE-MJD-FIBER.fits`` ("lite") spectra.

HDUs are read by index (some files have blank extension names); column names are
matched case-insensitively (some files have upper-case names). Pixels whose
``and_mask`` has any of the chosen bad-data bits set get ivar = 0.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qsocube.core import fitsfast
from qsocube.core.errors import InputError, Rejection
from qsocube.core.grid import SDSS_DLOGLAM
from qsocube.core.values import screen

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
    FIBERID always present, integers); ``sha256`` the file's checksum (of the bytes read);
    ``masked`` the pixels with data that the value rule (``qsocube.core.values``) masked.
    """

    path: Path
    start: int
    flux: np.ndarray
    ivar: np.ndarray
    meta: dict[str, object] = field(default_factory=dict)
    sha256: str = ""
    masked: int = 0

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


_NOT_REGULAR = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((text for test, text in _NOT_REGULAR if test(mode)), "not a regular file")


def read_regular_file(path: Path) -> bytes:
    """The bytes of ``path`` if it is a regular file (after symbolic links); otherwise
    ``InputError`` with ``not_a_regular_file`` (a folder, FIFO, device, socket, or a link
    that is dangling or loops) or ``unreadable``. Anything but a regular file is never
    opened for reading, so a FIFO cannot block the run."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise InputError(path, Rejection.not_a_regular_file,
                             "a symbolic link to nothing (dangling)") from None
        raise InputError(path, Rejection.unreadable, "no longer exists") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(path, Rejection.not_a_regular_file,
                             "a symbolic link that loops") from None
        raise InputError(path, Rejection.unreadable, f"cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(path, Rejection.not_a_regular_file, f"{_kind(info.st_mode)}, not a "
                         "spectrum file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise InputError(path, Rejection.unreadable, f"cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if not stat.S_ISREG(mode):  # replaced since the check above
            raise InputError(path, Rejection.not_a_regular_file,
                             f"{_kind(mode)}, not a spectrum file")
        try:
            return handle.read()
        except OSError as exc:
            raise InputError(path, Rejection.unreadable,
                             f"cannot be read ({exc.strerror})") from None


def read_spec_lite(path: str | Path, and_mask_bits: int = DEFAULT_AND_MASK_BITS) -> SpecLite:
    """Read one spec-lite file; raise ``InputError`` (a ``Rejection`` code and one line) if
    it is unusable. Pixels whose and_mask has one of ``and_mask_bits`` get ivar = 0, and
    non-finite or absurd values are masked and counted (``qsocube.core.values``).

    This is the boundary of one input: whatever goes wrong while reading it becomes an
    ``InputError``; only interrupts (and other BaseExceptions) pass through.
    """
    path = Path(path)
    try:
        return _read_spec_lite(path, and_mask_bits)
    except InputError:
        raise
    except Exception as exc:  # one input's failure, whatever it is, rejects that input
        raise InputError(path, Rejection.unreadable,
                         f"cannot be read ({type(exc).__name__}: {_short(exc)})") from None


def _read_spec_lite(path: Path, and_mask_bits: int) -> SpecLite:
    raw = read_regular_file(path)
    sha256 = hashlib.sha256(raw).hexdigest()
    try:
        coadd, meta_row = _read_fast(path, raw)
    except fitsfast.Broken as exc:
        raise InputError(path, Rejection.unreadable, f"not a readable FITS file ({exc})") from None
    except (fitsfast.Unsupported, KeyError, ValueError):
        coadd, meta_row = _read_astropy(path, raw)
    flux, loglam, ivar = coadd["flux"], coadd["loglam"], coadd["ivar"]
    if len(flux) < 2:
        raise InputError(path, Rejection.missing_data, "fewer than 2 pixels")
    start = _frame_start(path, loglam)
    if (ivar < 0).any():
        raise InputError(path, Rejection.bad_values,
                         f"ivar has {int((ivar < 0).sum())} negative values")
    if coadd.get("and_mask") is not None:
        ivar = np.where((coadd["and_mask"].astype(np.int64) & and_mask_bits) != 0, 0, ivar)
    flux, ivar, masked = screen(flux, ivar)
    if not (ivar > 0).any():
        if masked:
            raise InputError(path, Rejection.bad_values, f"all {masked} pixels with data have "
                             "non-finite or absurd values (qsocube.core.values)")
        raise InputError(path, Rejection.no_valid_pixels,
                         "no pixel with ivar > 0 (everything masked)")
    flux = np.where(np.isfinite(flux), flux, 0)
    meta = read_meta(path, meta_row)
    return SpecLite(path, start, flux.astype(np.float32), ivar.astype(np.float32), meta,
                    sha256, masked)


Columns = dict[str, np.ndarray | None]


def _read_fast(path: Path, raw: bytes | None = None) -> tuple[Columns, Columns | None]:
    tables = fitsfast.read_tables(path, wanted=2, raw=raw)
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


def _read_astropy(path: Path, raw: bytes | None = None) -> tuple[Columns, Columns | None]:
    from astropy.io import fits

    try:
        raw = path.read_bytes() if raw is None else raw
        data = fitsfast.decompress(raw) if path.suffix == ".gz" else raw
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(io.BytesIO(data), memmap=False) as hdus:
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
            value = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            meta[name] = value.strip() if isinstance(value, str) else np.asarray(value).item()
    named = SPEC_NAME.match(path.name)
    for key, index in (("PLATE", 1), ("MJD", 2), ("FIBERID", 3)):
        if key not in meta:
            if not named:
                raise InputError(path, Rejection.missing_data, f"no {key} in HDU 2 and the "
                                 "name is not spec-PLATE-MJD-FIBER.fits")
            meta[key] = int(named.group(index))
        meta[key] = _identifier(path, key, meta[key])
    return meta


def _identifier(path: Path, key: str, value: object) -> int:
    """An identifier as a non-negative integer, or InputError (bad_values)."""
    try:
        number = float(value) if not isinstance(value, (int, np.integer)) else value
        if isinstance(number, float) and not number.is_integer():
            raise ValueError
        number = int(number)
    except (TypeError, ValueError, OverflowError):
        raise InputError(path, Rejection.bad_values, f"{key} in HDU 2 is not an integer "
                         f"({str(value)[:40]!r})") from None
    if not 0 <= number < 10**9:
        raise InputError(path, Rejection.bad_values, f"{key} in HDU 2 is out of range "
                         f"({number})")
    return number


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]
