"""The inference API: known answers from a linear ONNX pair, rejected rows, model checks."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.stats import kstest
from test_inference_fixture import (
    build_pair,
    calibrated_pair,
    draw,
    expected,
    write_cube,
    write_spec_lite,
)

from qsocube.cli.encode import prefetched
from qsocube.core.errors import Rejection
from qsocube.core.grid import WavelengthGrid
from qsocube.core.layout import model_group_name
from qsocube.core.metrics import reconstruction_metrics
from qsocube.core.prepare import prepare
from qsocube.core.preprocess import model_input
from qsocube.core.speclite import read_spec_lite
from qsocube.inference import Encoder, ModelError, check_against_cube

OK, UNREADABLE, LOW_COVERAGE = Rejection.ok, Rejection.unreadable, Rejection.low_coverage
ALL_MASKED, BAD_NORM = Rejection.no_valid_pixels, Rejection.bad_normalisation


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return calibrated_pair(tmp_path_factory.mktemp("models"), np.random.default_rng(7),
                           n_train=12000)


@pytest.fixture(scope="module")
def encoder(pair):
    return Encoder(pair.encoder)


def test_encode_arrays_gives_the_known_linear_answer(pair, encoder) -> None:
    flux, ivar = draw(np.random.default_rng(1), pair, 300)
    ivar[:5, :200] = 0  # some masked pixels: they must not count in x, w or the metrics
    result = encoder.encode(flux, ivar)
    want = expected(pair, flux, ivar)
    assert result.flag.tolist() == [OK] * 300
    np.testing.assert_allclose(result.latent_mean, want["mu"], atol=1e-5)
    np.testing.assert_array_equal(result.latent_logvar, -3.0)
    np.testing.assert_allclose(result.recon_mse, want["mse"], rtol=1e-5)
    np.testing.assert_allclose(result.recon_chi2, want["chi2"], rtol=1e-5)
    np.testing.assert_allclose(result.covered_fraction[:5], 1300 / 1500, rtol=1e-6)
    assert np.all((result.anomaly_score >= 0) & (result.anomaly_score <= 1))


def test_bad_rows_are_flagged_and_do_not_disturb_the_good_ones(pair, encoder) -> None:
    flux, ivar = draw(np.random.default_rng(2), pair, 6)
    alone = encoder.encode(flux[:2], ivar[:2])
    ivar[2] = 0  # all masked
    ivar[3, 100:] = 0  # covers 100/1500 pixels
    flux[4] = -np.abs(flux[4])  # median flux negative
    flux[5, :] = np.nan  # NaN flux everywhere: masked, not propagated
    result = encoder.encode(flux, ivar, batch_size=4)
    assert result.flag.tolist() == [OK, OK, ALL_MASKED, LOW_COVERAGE, BAD_NORM, ALL_MASKED]
    assert "below the minimum 80%" in result.reason[3]
    assert "not positive" in result.reason[4]
    assert np.isnan(result.latent_mean[2:]).all() and np.isnan(result.anomaly_score[2:]).all()
    np.testing.assert_array_equal(result.latent_mean[:2], alone.latent_mean)
    assert result.reason[0] == "" and len(result) == 6


def test_a_batch_in_pieces_on_threads_gives_what_one_piece_gives(pair) -> None:
    from qsocube.inference.encoder import MIN_ROWS_PER_THREAD

    n = 3 * MIN_ROWS_PER_THREAD + 7  # three pieces, uneven
    flux, ivar = draw(np.random.default_rng(9), pair, n)
    ivar[::97] = 0  # rejected rows scattered through every piece
    flux[5::101] = -np.abs(flux[5::101])
    z = np.random.default_rng(9).uniform(0.5, 3.0, n)
    one = Encoder(pair.encoder, threads=1).encode(flux, ivar, z=z)
    threaded = Encoder(pair.encoder, threads=3)
    assert threaded._pieces(n) == 3
    pieces = threaded.encode(flux, ivar, z=z)
    for field in ("flag", "reason", "source", "covered_fraction"):
        np.testing.assert_array_equal(getattr(pieces, field), getattr(one, field))
    assert (one.flag != OK).sum() >= 10
    for field in ("latent_mean", "latent_logvar", "recon_mse", "recon_chi2", "recon_score",
                  "density_score", "redshift_score", "anomaly_score"):
        np.testing.assert_allclose(getattr(pieces, field), getattr(one, field), rtol=1e-5,
                                   atol=1e-6, equal_nan=True)


def test_anomaly_score_is_a_calibrated_percentile(pair, encoder) -> None:
    rng = np.random.default_rng(3)
    held_out = encoder.encode(*draw(rng, pair, 1000)).anomaly_score
    assert kstest(held_out, "uniform").pvalue > 0.01
    assert abs(np.mean(held_out > 0.9) - 0.1) < 0.03
    noisy = encoder.encode(*draw(rng, pair, 200, noise=(0.2, 0.3))).anomaly_score
    assert np.median(noisy) > 0.99  # far noisier than training: worse than ~all of it


def test_encode_files_uses_the_builders_reader_and_resampler(pair, encoder, tmp_path) -> None:
    flux, _ = draw(np.random.default_rng(4), pair, 3)
    files = [write_spec_lite(tmp_path / f"spec-7001-57000-{i + 1:04d}.fits", (3550, 10300),
                             flux[i], pair.grid, {"PLATE": 7001, "MJD": 57000, "FIBERID": i + 1,
                                                  "CLASS": "QSO" if i else "STAR", "Z": 2.0})
             for i in range(3)]
    short = write_spec_lite(tmp_path / "spec-7001-57000-0009.fits", (3550, 4200), flux[0],
                            pair.grid, {"PLATE": 7001, "MJD": 57000, "FIBERID": 9})
    masked = write_spec_lite(tmp_path / "spec-7001-57000-0010.fits", (3550, 10300), flux[0],
                             pair.grid, {"PLATE": 7001, "MJD": 57000, "FIBERID": 10},
                             ivar_value=0.0)
    broken = tmp_path / "spec-7001-57000-0011.fits"
    broken.write_bytes(b"SIMPLE  = T" + b" " * 100)
    result = encoder.encode_files([*files, short, masked, broken])
    assert result.flag.tolist() == [OK, OK, OK, LOW_COVERAGE, ALL_MASKED, UNREADABLE]
    assert "not a readable FITS" in result.reason[5] and str(broken) == result.source[5]
    assert result.FIBERID.tolist() == [1, 2, 3, 9, 10, 11]
    assert result.CLASS.tolist()[:3] == ["STAR", "QSO", "QSO"]
    assert np.allclose(result.Z[:3], 2.0) and np.isnan(result.latent_mean[3:]).all()
    # The same answer by hand through qsocube's shared path and the numpy weights.
    prepared = prepare([read_spec_lite(p) for p in files], pair.grid, "rebin")
    x, w = model_input(prepared.flux, prepared.ivar, prepared.mask, prepared.norm)
    mu = pair.mu(x)
    np.testing.assert_allclose(result.latent_mean[:3], mu, atol=1e-5)
    mse, _ = reconstruction_metrics(x, w, pair.x_hat(mu), pair.latent_size)
    np.testing.assert_allclose(result.recon_mse[:3], mse, rtol=1e-4)


def test_check_against_cube_reproduces_written_back_latents(pair, tmp_path) -> None:
    flux, ivar = draw(np.random.default_rng(5), pair, 700)
    cube = write_cube(tmp_path / "qsocube.h5", pair, flux, ivar)
    assert check_against_cube(cube, pair.encoder) <= 1e-5
    with h5py.File(cube, "r+") as h5:  # a wrong written-back value is found
        h5[model_group_name(pair.latent_size)]["latent_mean"][650, 2] += 1e-3
    assert check_against_cube(cube, pair.encoder, batch_size=256) >= 9e-4
    with h5py.File(cube, "r+") as h5:
        h5[model_group_name(pair.latent_size)].attrs["encoder_sha256"] = "f" * 64
    with pytest.raises(ModelError, match="sha256 differs"):
        check_against_cube(cube, pair.encoder)


def _pair_with(tmp_path: Path, **kwargs):
    return build_pair(tmp_path / "bad", **kwargs)


@pytest.mark.parametrize("overrides, message", [
    ({"grid_sha256": "0" * 64}, "grid differs"),
    ({"normalisation": "max_flux"}, "normalisation differs: model 'max_flux'"),
    ({"schema_version": "9.0.0"}, "schema version differs: model 9.0.0"),
    ({"resampling_method": "cubic"}, "resampling method 'cubic'"),
    ({"train_recon_mse_quantiles": "[1, 2]"}, "train_recon_mse_quantiles"),
    ({"role": "decoder"}, "this is the decoder"),
])
def test_models_that_do_not_match_are_refused(tmp_path, overrides, message) -> None:
    bad = _pair_with(tmp_path, overrides=overrides)
    with pytest.raises(ModelError, match=message):
        Encoder(bad.encoder)


def test_broken_or_mismatched_pairs_are_refused(tmp_path) -> None:
    bad = _pair_with(tmp_path, decoder_overrides={"latent_size": "7"})
    with pytest.raises(ModelError, match="latent_size is '7'"):
        Encoder(bad.encoder)
    with pytest.raises(ModelError, match="this is the decoder"):
        Encoder(bad.decoder)
    bad.decoder.unlink()
    with pytest.raises(ModelError, match="is not beside it"):
        Encoder(bad.encoder)
    bad.encoder.write_bytes(b"not an onnx model")
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        Encoder(bad.encoder)
    with pytest.raises(ModelError, match="model file not found"):
        Encoder(tmp_path / "missing_encoder.onnx")


def test_a_model_of_another_grid_has_its_own_width(tmp_path) -> None:
    small = WavelengthGrid(n_pix=400, wave_min=3800.0, wave_max=8000.0)
    encoder = Encoder(build_pair(tmp_path, latent=3, grid=small).encoder)
    assert encoder.grid == small and encoder.latent_size == 3
    with pytest.raises(ValueError, match=r"\(n, 400\)"):
        encoder.encode(np.ones((2, 1500)), np.ones((2, 1500)))


def test_to_xarray_names_dims_and_flags(pair, encoder) -> None:
    pytest.importorskip("xarray")
    ds = encoder.encode(*draw(np.random.default_rng(6), pair, 4)).to_xarray()
    assert ds[f"LATENT_MEAN_{pair.latent_size:02d}"].dims == ("spectrum", "latent")
    assert ds.sizes == {"spectrum": 4, "latent": pair.latent_size}
    assert ds["FLAG"].attrs["flag_meanings"] == Rejection.flag_meanings()
    assert ds["FLAG"].attrs["flag_meanings"].split()[0] == "ok"


def test_prefetch_hands_on_the_producers_error() -> None:
    def items():
        yield 1
        raise RuntimeError("disk gone")

    got = []
    with pytest.raises(RuntimeError, match="disk gone"):
        for item in prefetched(items()):
            got.append(item)
    assert got == [1]
