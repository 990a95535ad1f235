"""Write spec-lite files (``spec-PPPP-MMMMM-FFFF.fits``) in the BOSS/eBOSS DR16 layout.

Layout mirrors the real v5_13_2 files: HDU 0 an empty primary with the plate/fibre header
(PLATEID, MJD, FIBERID, PLUG_RA, COEFF0, ...), HDU 1 ``COADD`` with ``flux loglam ivar
and_mask or_mask wdisp sky model`` (E E E J J E E E), HDU 2 a one-row ``SPALL`` table.

astropy takes ~10 ms to write one such file, too slow for 20k files, so headers are built
with astropy once (per pixel count, cached) and each file is assembled from header bytes
and big-endian numpy rows. The result is a standard FITS file that astropy reads back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from qsocube.core.atomic import atomic_path, write_bytes_atomic

BLOCK = 2880

COADD_DTYPE = np.dtype(
    [("flux", ">f4"), ("loglam", ">f4"), ("ivar", ">f4"), ("and_mask", ">i4"),
     ("or_mask", ">i4"), ("wdisp", ">f4"), ("sky", ">f4"), ("model", ">f4")]
)
# A subset of the BOSS spAll columns, in spAll order and with spAll types.
SPALL_DTYPE = np.dtype(
    [("PROGRAMNAME", "S27"), ("CHUNK", "S14"), ("PLATEQUALITY", "S4"), ("PLATESN2", ">f4"),
     ("SPECPRIMARY", "u1"), ("PLATE", ">i4"), ("TILE", ">i4"), ("MJD", ">i4"),
     ("FIBERID", ">i4"), ("RUN2D", "S7"), ("RUN1D", "S7"), ("OBJTYPE", "S16"),
     ("PLUG_RA", ">f8"), ("PLUG_DEC", ">f8"), ("CLASS", "S6"), ("SUBCLASS", "S21"),
     ("Z", ">f4"), ("Z_ERR", ">f4"), ("WAVEMIN", ">f4"), ("WAVEMAX", ">f4"),
     ("ZWARNING", ">i4"), ("SN_MEDIAN", ">f4", (5,)), ("SN_MEDIAN_ALL", ">f4"),
     ("THING_ID", ">i4")]
)
RUN2D = "v5_13_2"


def spec_name(plate: int, mjd: int, fiberid: int) -> str:
    """SDSS spec-lite file name; 4-digit plates zero-padded, 5-digit plates as they are."""
    return f"spec-{plate:04d}-{mjd:05d}-{fiberid:04d}.fits"


def _pad(data: bytes, fill: bytes = b"\0") -> bytes:
    return data + fill * (-len(data) % BLOCK)


def _header_bytes(header: fits.Header) -> bytes:
    return header.tostring().encode("ascii")  # already padded to whole blocks


def _card(key: str, value: object, comment: str = "") -> bytes:
    """One 80-character FITS header card (fixed format), without astropy's per-card cost."""
    if isinstance(value, bool | np.bool_):
        text = f"{'T' if value else 'F':>20}"
    elif isinstance(value, int | np.integer):
        text = f"{int(value):>20}"
    elif isinstance(value, float | np.floating):
        text = f"{float(value)!r:>20}".replace("e", "E")
    else:
        quoted = str(value).replace("'", "''")
        text = f"'{quoted:<8}'"
    card = f"{key:<8}= {text}" + (f" / {comment}" if comment else "")
    return card[:80].ljust(80).encode("ascii")


def _header(cards: list[bytes]) -> bytes:
    return _pad(b"".join(cards) + b"END".ljust(80), b" ")


class SpecLiteWriter:
    """Assemble spec-lite files from cached header templates and numpy rows."""

    def __init__(self) -> None:
        spall = fits.BinTableHDU(np.zeros(1, dtype=SPALL_DTYPE), name="SPALL")
        self._spall_header = _header_bytes(spall.header)
        # the COADD header differs between files only in NAXIS2 (the pixel count)
        coadd = fits.BinTableHDU(np.zeros(1, dtype=COADD_DTYPE), name="COADD")
        coadd.header["COMMENT"] = "Coadded spectrum"
        self._coadd_template = _header_bytes(coadd.header)
        self._naxis2_at = self._coadd_template.index(b"NAXIS2  =")

    def _coadd_header(self, npix: int) -> bytes:
        at = self._naxis2_at
        card = _card("NAXIS2", npix, "length of dimension 2")
        return self._coadd_template[:at] + card + self._coadd_template[at + 80:]

    @staticmethod
    def primary_header(meta: dict) -> bytes:
        """Plate/fibre keywords as in a real BOSS primary header (subset)."""
        return _header([
            _card("SIMPLE", True, "conforms to FITS standard"),
            _card("BITPIX", 8, "array data type"),
            _card("NAXIS", 0, "number of array dimensions"),
            _card("EXTEND", True),
            _card("TELESCOP", "SDSS 2.5-M", "Sloan Digital Sky Survey"),
            _card("FLAVOR", "science", "exposure type, SDSS spectro style"),
            _card("MJD", int(meta["MJD"]), "APO fMJD day at start of exposure"),
            _card("MJDLIST", str(meta["MJD"])),
            _card("NAME", f"{meta['PLATE']}-{meta['MJD']}-01", "The name of the loaded plate"),
            _card("PLATEID", int(meta["PLATE"]), "The currently loaded plate"),
            _card("TILEID", int(meta["TILE"]), "Cartridge used in this plugging"),
            _card("MAPID", 1, "The mapping version of the loaded plate"),
            _card("PLATETYP", "eBOSS", "Type of plate"),
            _card("EQUINOX", 2000.0),
            _card("RADECSYS", "FK5"),
            _card("EXPTIME", float(meta["EXPTIME"]), "Minimum of exposure times for all cameras"),
            _card("RUN2D", RUN2D, "Spectro-2D reduction name"),
            _card("VACUUM", True, "Wavelengths are in vacuum"),
            _card("NWORDER", 2, "Linear-log10 coefficients"),
            _card("WFITTYPE", "LOG-LINEAR", "Linear-log10 dispersion"),
            _card("COEFF0", float(meta["COEFF0"]), "Central wavelength (log10) of first pixel"),
            _card("COEFF1", 1e-4, "Log10 dispersion per pixel"),
            _card("BUNIT", "1E-17 erg/cm^2/s/Ang"),
            _card("PLUG_RA", float(meta["PLUG_RA"]), "RA of object [deg]"),
            _card("PLUG_DEC", float(meta["PLUG_DEC"]), "dec of object [deg]"),
            _card("THING_ID", int(meta["THING_ID"]), "Unique object identifier"),
            _card("FIBERID", int(meta["FIBERID"]), "Fiber number (1-1000)"),
            _card("NEXP", int(meta["NEXP"]), "Number of individual exposures"),
            _card("SIMULATD", True, "simulated by qsocube.builder.simulate"),
            _card("QCVERS", str(meta["VERSION"]), "qsocube version that wrote this file"),
        ])

    def write(self, path: Path, meta: dict, rows: np.ndarray, spall: np.ndarray) -> None:
        """Write one file atomically (temp file beside ``path``, then rename)."""
        parts = [
            self.primary_header(meta),
            self._coadd_header(len(rows)),
            _pad(rows.astype(COADD_DTYPE, copy=False).tobytes()),
            self._spall_header,
            _pad(spall.astype(SPALL_DTYPE, copy=False).tobytes()),
        ]
        write_bytes_atomic(path, b"".join(parts))


def write_table(path: Path, columns: list[fits.Column], extname: str) -> None:
    """Write a one-table FITS file atomically with astropy (used for truth.fits)."""
    hdu = fits.BinTableHDU.from_columns(columns, name=extname)
    with atomic_path(path) as tmp:
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp)
