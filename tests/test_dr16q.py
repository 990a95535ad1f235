"""The DR16Q_v4 data model, reader and writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from qsocube.builder import dr16q
from qsocube.builder.dr16q import CUBE_COLUMNS, Catalog, CatalogError, read_catalog, write_catalog

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DR12Q_STYLE = SHARED / "sdss" / "catalogs" / "DRQ_test.fits"

# 0-based positions in the real DR16Q_v4.fits HDU 1, as the original analysis used them.
REAL_POSITIONS = {"RA": 1, "DEC": 2, "MJD": 4, "Z": 26, "NHI_DLA": 54, "CONF_DLA": 55,
                  "BAL_PROB": 56, "BI_CIV": 57, "BI_SIIV": 61, "PLATESN2": 90, "M_I": 96,
                  "SN_MEDIAN_ALL": 97, "XMM_SOFT_FLUX": 158, "XMM_HARD_FLUX": 160,
                  "XMM_TOTAL_FLUX": 162}


def sample_columns(n: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    nhi = np.full((n, 5), np.nan)
    nhi[0, :2] = [20.5, 21.1]
    conf = np.where(np.isfinite(nhi), 0.9, np.nan)
    bi = rng.uniform(0, 3000, n)
    bi[1] = np.nan  # outside the BAL search range
    xray = np.full(n, np.nan)
    xray[2] = 3.5e-14
    return {
        "SDSS_NAME": np.array([f"00000{i}.00+000000.0" for i in range(n)]),
        "RA": rng.uniform(0, 360, n), "DEC": rng.uniform(-10, 60, n),
        "PLATE": np.arange(n) + 10000, "MJD": np.full(n, 57000), "FIBERID": np.arange(n) + 1,
        "THING_ID": np.arange(n) + 5_000_000_000, "Z": rng.uniform(0.5, 4, n),
        "NHI_DLA": nhi, "CONF_DLA": conf, "BAL_PROB": np.where(np.isnan(bi), np.nan, 0.25),
        "BI_CIV": bi, "BI_SIIV": bi / 2, "PLATESN2": rng.uniform(10, 20, n),
        "M_I": np.r_[np.nan, rng.uniform(-28, -22, n - 1)], "SN_MEDIAN_ALL": rng.uniform(5, 40, n),
        "XMM_SOFT_FLUX": xray, "XMM_HARD_FLUX": xray * 2, "XMM_TOTAL_FLUX": xray * 3,
    }


def test_data_model_matches_the_real_file():
    assert len(dr16q.COLUMNS) == 183
    for name, position in REAL_POSITIONS.items():
        assert dr16q.COLUMN_INDEX[name] == position, name
    spec = dr16q.column_spec
    assert spec("SDSS_NAME").tform == "18A" and spec("NHI_DLA").tform == "5D"
    assert spec("CONF_DLA").tform == "5D" and spec("BAL_PROB").tform == "E"
    assert spec("BI_CIV").tform == "D" and spec("XMM_SOFT_FLUX").tform == "E"
    assert spec("THING_ID").tform == "K" and spec("FIBERID").tform == "I"
    # The published DR16Q_v4.fits is 1,718,484,480 bytes for 750,414 rows: a 2,290-byte row.
    assert sum(c.dtype.itemsize * (1 if c.is_string else c.repeat) for c in dr16q.COLUMNS) \
        == 2290
    assert set(CUBE_COLUMNS) == {"SDSS_NAME", "PLATE", "THING_ID", "FIBERID", *REAL_POSITIONS}
    assert list(CUBE_COLUMNS) == sorted(CUBE_COLUMNS, key=dr16q.COLUMN_INDEX.get)


def test_round_trip_turns_sentinels_into_nan(tmp_path):
    path = tmp_path / "DR16Q_v4.fits"
    values = sample_columns()
    write_catalog(path, values)
    cat = read_catalog(path)
    assert isinstance(cat, Catalog) and cat.path == path and len(cat) == 7
    for name, expected in values.items():
        got = cat.columns[name]
        if name == "SDSS_NAME":
            assert got.tolist() == expected.tolist()
        elif name in ("PLATE", "MJD", "FIBERID", "THING_ID"):
            assert got.dtype == np.int64 and np.array_equal(got, expected)
        else:
            assert got.dtype == np.float64 and got.dtype.isnative
            tolerance = 1e-6 if dr16q.column_spec(name).code == "E" else 0
            np.testing.assert_allclose(got, expected, rtol=tolerance)  # NaN == NaN here
    assert cat.columns["NHI_DLA"].shape == (7, 5)
    assert np.array_equal(cat.plate, values["PLATE"]) and np.array_equal(cat.fiberid,
                                                                          values["FIBERID"])
    with fits.open(path) as hdul:  # on disk: DR16Q's own sentinels, big-endian, HDU 1
        raw = hdul[1].data
        assert hdul[1].name == "CATALOG" and raw["RA"].dtype.byteorder == ">"
        assert raw["NHI_DLA"][1].tolist() == [-1.0] * 5 and raw["BI_CIV"][1] == -1
        assert raw["M_I"][0] > 0 and raw["XMM_SOFT_FLUX"][0] == -1
        assert len(hdul[1].columns) == 183 and raw["Z_VI"][0] == -1
    rule = cat.attrs["BI_CIV"]["missing_value_rule"]
    assert "-1" in rule and "NaN" in rule and cat.attrs["RA"]["units"] == "deg"
    assert set(cat.attrs["NHI_DLA"]) == {"units", "long_name", "missing_value_rule"}
    flags = read_catalog(path, columns=("ZWARNING", "Z_CONF", "SOURCE_Z"))
    assert flags.columns["ZWARNING"].dtype == np.int64  # no sentinel: stays an integer
    assert np.isnan(flags.columns["Z_CONF"]).all()  # -1 fill = not measured
    assert flags.columns["SOURCE_Z"].tolist() == [""] * 7


def test_reads_only_what_is_asked_and_ignores_extra_columns(tmp_path):
    path = tmp_path / "other.fits"
    values = sample_columns()
    cols = [fits.Column(name="EXTRA", format="D", array=np.arange(7.0))]
    for name in reversed(CUBE_COLUMNS):  # different order, plus a foreign column
        spec = dr16q.column_spec(name)
        cols.append(fits.Column(name=name, format=spec.tform,
                                array=np.nan_to_num(values[name], nan=-1.0)))
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(path)
    cat = read_catalog(path, columns=("Z", "BI_CIV"))
    assert set(cat.columns) == {"Z", "BI_CIV", "PLATE", "MJD", "FIBERID"}
    assert np.isnan(cat.columns["BI_CIV"][1]) and cat.columns["Z"][0] == values["Z"][0]


def _one_line_error(path: Path, *fragments: str) -> None:
    with pytest.raises(CatalogError) as err:
        read_catalog(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_missing_required_column_is_named(tmp_path):
    path = tmp_path / "partial.fits"
    values = sample_columns()
    cols = [fits.Column(name=n, format=dr16q.column_spec(n).tform,
                        array=np.nan_to_num(values[n], nan=-1.0))
            for n in CUBE_COLUMNS if n != "BI_SIIV"]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(path)
    _one_line_error(path, "BI_SIIV", "missing")


def test_not_fits_truncated_and_absent_files_are_catalog_errors(tmp_path):
    text = tmp_path / "notes.fits"
    text.write_text("this is not a FITS file\nsecond line\n")
    _one_line_error(text)
    full = tmp_path / "full.fits"
    write_catalog(full, sample_columns(300))
    cut = tmp_path / "cut.fits"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    _one_line_error(cut, "truncated")
    _one_line_error(tmp_path / "absent.fits", "no such")
    image = tmp_path / "image.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((3, 3)))]).writeto(image)
    _one_line_error(image, "HDU 1")


def test_a_real_dr12q_style_catalogue_is_rejected_by_name():
    if not DR12Q_STYLE.is_file():
        pytest.skip(f"real DR12Q-style catalogue not found at {DR12Q_STYLE} (../shared/data "
                    "is absent)")
    _one_line_error(DR12Q_STYLE, "missing", "NHI_DLA")


def test_write_is_atomic_and_strict(tmp_path):
    path = tmp_path / "DR16Q_v4.fits"
    write_catalog(path, sample_columns())
    before = path.read_bytes()
    with pytest.raises(ValueError, match="NOT_A_COLUMN"):
        write_catalog(path, {**sample_columns(), "NOT_A_COLUMN": np.zeros(7)})
    bad = sample_columns()
    bad["NHI_DLA"] = np.zeros((7, 4))
    with pytest.raises(ValueError, match="NHI_DLA"):
        write_catalog(path, bad)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["DR16Q_v4.fits"]  # no temp files left
