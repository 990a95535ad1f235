"""The spec-lite reader on real files and on every kind of bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from qsocube.core import fitsfast
from qsocube.core.errors import InputError
from qsocube.core.speclite import _read_astropy, _read_fast, read_spec_lite


def test_real_files_fast_reader_matches_astropy(real_spectra: Path):
    files = sorted(real_spectra.glob("spec-*.fits"))
    assert len(files) == 258
    for path in files[::20]:
        fast, fast_meta = _read_fast(path)
        slow, slow_meta = _read_astropy(path)
        for name in ("flux", "loglam", "ivar", "and_mask"):
            np.testing.assert_array_equal(fast[name], slow[name])
        assert set(fast_meta) == set(slow_meta)


def test_real_metadata_matches_manifest(real_spectra: Path):
    """Every file, in one pass: the reader caches table headers across files, so each
    file's own rows and pixel count must come back, never a neighbour's."""
    with open(real_spectra.parent / "MANIFEST.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 258
    for row in rows:
        spectrum = read_spec_lite(real_spectra / row["file"])
        assert spectrum.meta["CLASS"] == row["CLASS"]
        assert spectrum.meta["Z"] == pytest.approx(float(row["Z"]), rel=1e-6)
        assert int(spectrum.meta["PLATE"]) == int(row["PLATE"])
        assert int(spectrum.meta["FIBERID"]) == int(row["FIBERID"])
        assert len(spectrum.flux) == int(row["npix"]), row["file"]
        assert 10 ** (spectrum.start * 1e-4) == pytest.approx(float(row["wave_min"]), rel=2e-4)


def test_files_sharing_header_bytes_keep_their_own_values(tmp_path, spec_writer):
    flux = np.ones(4600, np.float32)
    paths = [spec_writer(tmp_path / f"spec-4000-55555-{i:04d}.fits", 35500, flux * i, z=i / 2,
                         fiberid=i) for i in (1, 2, 3)]
    fitsfast._table_header.cache_clear()
    for i, path in zip((1, 2, 3), paths, strict=True):
        spectrum = read_spec_lite(path)
        assert spectrum.meta["FIBERID"] == i and spectrum.meta["Z"] == pytest.approx(i / 2)
        np.testing.assert_array_equal(spectrum.flux, flux * i)
    assert fitsfast._table_header.cache_info().hits == 4  # both tables' headers, files 2 and 3


def test_a_primary_hdu_with_data_is_skipped_by_its_size(tmp_path, spec_writer):
    from astropy.io import fits

    path = _flat(tmp_path, spec_writer)
    with fits.open(path) as hdus:
        image = fits.PrimaryHDU(np.arange(3000, dtype=np.int16).reshape(30, 100))
        image.header["COMMENT"] = "NAXIS1 = 7 in a comment must not be read as a card"
        fits.HDUList([image, hdus[1].copy(), hdus[2].copy()]).writeto(tmp_path / "img.fits")
    fast, meta = _read_fast(tmp_path / "img.fits")
    assert len(fast["flux"]) == 4600 and int(meta["FIBERID"][0]) == 1


def _flat(tmp_path: Path, spec_writer, **kwargs) -> Path:
    flux = kwargs.pop("flux", np.ones(4600, np.float32))
    return spec_writer(tmp_path / "spec-4000-55555-0001.fits", 35500, flux, **kwargs)


def test_good_file_reads(tmp_path, spec_writer):
    spectrum = read_spec_lite(_flat(tmp_path, spec_writer))
    assert spectrum.start == 35500 and spectrum.spec_id == "4000-55555-0001"
    assert spectrum.meta["SN_MEDIAN_ALL"] == pytest.approx(20.0)


def test_and_mask_bad_bits_zero_ivar_and_sky_bits_do_not(tmp_path, spec_writer):
    and_mask = np.zeros(4600, np.int32)
    and_mask[10:20] = 1 << 24  # NODATA
    and_mask[30:40] = 1 << 23  # BRIGHTSKY: informational
    spectrum = read_spec_lite(_flat(tmp_path, spec_writer, and_mask=and_mask))
    assert (spectrum.ivar[10:20] == 0).all() and (spectrum.ivar[30:40] > 0).all()


@pytest.mark.parametrize("damage, message", [
    ("truncate", "not a readable FITS file"),
    ("text", "not a readable FITS file"),
    ("nan_flux", "non-finite or absurd"),
    ("zero_ivar", "no pixel with ivar > 0"),
    ("negative_ivar", "negative"),
])
def test_bad_files_raise_one_line_errors(tmp_path, spec_writer, damage, message):
    flux = np.ones(4600, np.float32)
    ivar = np.ones(4600, np.float32)
    if damage == "nan_flux":  # one NaN pixel is masked (qsocube.core.values); all: rejected
        flux[:] = np.nan
    if damage == "zero_ivar":
        ivar[:] = 0
    if damage == "negative_ivar":
        ivar[5] = -1
    path = _flat(tmp_path, spec_writer, flux=flux, ivar=ivar)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:9000])
    if damage == "text":
        path.write_text("this is not FITS\n")
    with pytest.raises(InputError) as info:
        read_spec_lite(path)
    text = str(info.value)
    assert message in text and str(path) in text and "\n" not in text


def test_missing_column_and_off_grid_loglam(tmp_path):
    from astropy.io import fits

    path = tmp_path / "spec-4000-55555-0002.fits"
    table = fits.BinTableHDU.from_columns([fits.Column("flux", "E", array=np.ones(10)),
                                           fits.Column("ivar", "E", array=np.ones(10))])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    with pytest.raises(InputError, match="no 'loglam' column"):
        read_spec_lite(path)
    for loglam, reason in ((3.55 + np.arange(10) * 1.3e-4, "not on the SDSS 1e-4 dex grid"),
                           (3.55 - np.arange(10) * 1e-4, "not increasing")):
        table = fits.BinTableHDU.from_columns([
            fits.Column("flux", "E", array=np.ones(10)),
            fits.Column("ivar", "E", array=np.ones(10)),
            fits.Column("loglam", "E", array=loglam)])
        fits.HDUList([fits.PrimaryHDU(), table]).writeto(path, overwrite=True)
        with pytest.raises(InputError, match=reason):
            read_spec_lite(path)
