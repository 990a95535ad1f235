"""Shared fixtures: small spec-lite files written with astropy, and the real data folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL_SPECTRA = SHARED / "sdss" / "spectra"


@pytest.fixture
def real_spectra() -> Path:
    if not REAL_SPECTRA.is_dir():
        pytest.skip(f"real SDSS spectra not found at {REAL_SPECTRA} (../shared/data is absent)")
    return REAL_SPECTRA


def write_spec_lite(path: Path, start: int, flux: np.ndarray, ivar: np.ndarray | None = None,
                    and_mask: np.ndarray | None = None, z: float = 2.0, snr: float = 20.0,
                    plate: int = 4000, mjd: int = 55555, fiberid: int = 1) -> Path:
    """A minimal BOSS-style spec-lite file: HDU 1 coadd table, HDU 2 SPALL row."""
    from astropy.io import fits

    n = len(flux)
    ivar = np.ones(n, np.float32) if ivar is None else ivar
    and_mask = np.zeros(n, np.int32) if and_mask is None else and_mask
    loglam = ((start + np.arange(n)) * 1e-4).astype(np.float32)
    coadd = fits.BinTableHDU.from_columns([
        fits.Column("flux", "E", array=np.asarray(flux, np.float32)),
        fits.Column("loglam", "E", array=loglam),
        fits.Column("ivar", "E", array=np.asarray(ivar, np.float32)),
        fits.Column("and_mask", "J", array=and_mask.astype(np.int32)),
    ], name="COADD")
    spall = fits.BinTableHDU.from_columns([
        fits.Column("PLATE", "J", array=[plate]), fits.Column("MJD", "J", array=[mjd]),
        fits.Column("FIBERID", "J", array=[fiberid]), fits.Column("Z", "E", array=[z]),
        fits.Column("CLASS", "6A", array=["QSO"]), fits.Column("ZWARNING", "J", array=[0]),
        fits.Column("PLUG_RA", "D", array=[10.0]), fits.Column("PLUG_DEC", "D", array=[1.0]),
        fits.Column("PLATESN2", "E", array=[15.0]),
        fits.Column("SN_MEDIAN_ALL", "E", array=[snr]),
    ], name="SPALL")
    fits.HDUList([fits.PrimaryHDU(), coadd, spall]).writeto(path, overwrite=True)
    return path


@pytest.fixture
def spec_writer():
    return write_spec_lite


@pytest.fixture(scope="session")
def smoke_release(tmp_path_factory) -> Path:
    """A complete smoke release, built once per test session by the real command."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("release") / "smoke"
    result = subprocess.run([sys.executable, "-m", "qsocube.cli", "release", "--profile", "smoke",
                             "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return out
