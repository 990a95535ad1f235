"""Known answers for the resampler: flat in, flat out; flux conserved; variance propagated."""

from __future__ import annotations

import numpy as np
import pytest

from qsocube.core.grid import DEFAULT_GRID, WavelengthGrid
from qsocube.core.preprocess import (
    NO_COVERAGE,
    NO_DATA,
    frame_batch,
    frame_span,
    model_input,
    normalisation_factor,
    rebin_operator,
    resample_chunked,
    resample_rebin,
    resample_study,
)

GRID = DEFAULT_GRID
START = 35500  # log10(lambda) = 3.55, below the grid's blue end
NPIX = 4600


def _batch(fluxes, ivars=None, starts=None):
    ivars = ivars if ivars is not None else [np.ones_like(f) for f in fluxes]
    starts = starts if starts is not None else [START] * len(fluxes)
    return frame_batch(starts, fluxes, ivars, GRID)


def test_flat_spectrum_resamples_to_itself():
    result = resample_rebin(_batch([np.full(NPIX, 3.5, np.float32)]), GRID)
    assert (result.mask == 0).all()
    np.testing.assert_allclose(result.flux, 3.5, rtol=1e-6)
    assert result.covered_fraction[0] == 1.0


def test_flux_is_conserved():
    rng = np.random.default_rng(1)
    flux = rng.uniform(0.5, 2.0, NPIX).astype(np.float64)
    result = resample_rebin(_batch([flux.astype(np.float32)]), GRID)
    frame0, _ = frame_span(GRID)
    # integral of f_lambda over the grid's span, from the input pixels' exact overlaps
    weights, _, _ = rebin_operator(GRID)
    wave_edges = 10 ** GRID.loglam_edges
    out_integral = float((result.flux[0] * np.diff(wave_edges)).sum())
    pix = np.arange(NPIX) + START
    lo, hi = 10 ** ((pix - 0.5) * 1e-4), 10 ** ((pix + 0.5) * 1e-4)
    overlap = np.clip(np.minimum(hi, wave_edges[-1]) - np.maximum(lo, wave_edges[0]), 0, None)
    in_integral = float((flux * overlap).sum())
    assert out_integral == pytest.approx(in_integral, rel=1e-5)
    assert weights.shape == (GRID.n_pix, frame_span(GRID)[1]) and frame0 > START


def test_inverse_variance_of_a_weighted_mean():
    sigma = 0.5
    flux = np.full(NPIX, 1.0, np.float32)
    ivar = np.full(NPIX, 1 / sigma**2, np.float32)
    result = resample_rebin(_batch([flux], [ivar]), GRID)
    weights, weights_sq, _ = rebin_operator(GRID)
    expected = (np.asarray(weights.sum(axis=1)).ravel() ** 2
                / (np.asarray(weights_sq.sum(axis=1)).ravel() * sigma**2))
    np.testing.assert_allclose(result.ivar[0], expected, rtol=1e-5)
    # averaging ~2.6 input pixels must raise the inverse variance by about that factor
    assert 2.0 < np.median(result.ivar[0]) * sigma**2 < 3.5


def test_bad_pixels_are_left_out_and_flagged():
    flux = np.full(NPIX, 2.0, np.float32)
    flux[1000:1040] = 1e6  # garbage where ivar = 0 must not leak into the output
    ivar = np.ones(NPIX, np.float32)
    ivar[1000:1040] = 0
    result = resample_rebin(_batch([flux], [ivar]), GRID)
    valid = result.mask[0] == 0
    np.testing.assert_allclose(result.flux[0, valid], 2.0, rtol=1e-6)
    assert (result.mask[0] == NO_DATA).sum() >= 10
    assert (result.ivar[0, ~valid] == 0).all() and (result.flux[0, ~valid] == 0).all()


def test_partial_coverage_masks_the_uncovered_end():
    # starts at log10 = 3.60 (3981 A): the blue ~150 grid pixels are not covered
    result = resample_rebin(_batch([np.ones(4000, np.float32)], starts=[36000]), GRID)
    uncovered = result.mask[0] == NO_COVERAGE
    covered_wave = GRID.wavelength[~uncovered]
    assert uncovered[:100].all() and not uncovered[-100:].any()
    assert covered_wave.min() >= 10 ** (3.6 - 0.5e-4)
    assert 0.5 < result.covered_fraction[0] < 1.0


def test_chunking_does_not_change_the_result():
    rng = np.random.default_rng(2)
    fluxes = [rng.normal(5, 1, NPIX).astype(np.float32) for _ in range(7)]
    starts = list(rng.integers(35490, 35800, 7))
    frame = _batch(fluxes, starts=starts)
    whole = resample_rebin(frame, GRID)
    parts = resample_chunked(frame, GRID, chunk=3)
    np.testing.assert_array_equal(whole.flux, parts.flux)
    np.testing.assert_array_equal(whole.mask, parts.mask)


def test_seed_method_agrees_with_rebin_on_a_smooth_spectrum():
    wave = 10 ** ((START + np.arange(NPIX)) * 1e-4)
    flux = (10 + np.sin(wave / 400.0)).astype(np.float32)
    frame = _batch([flux])
    seed, rebin = resample_study(frame, GRID), resample_rebin(frame, GRID)
    both = (seed.mask[0] == 0) & (rebin.mask[0] == 0)
    assert both.mean() > 0.99
    np.testing.assert_allclose(seed.flux[0, both], rebin.flux[0, both], rtol=2e-3)


def test_normalisation_uses_valid_pixels_only():
    flux = np.array([[1.0, 2.0, 3.0, 100.0]], np.float32)
    mask = np.array([[0, 0, 0, 1]], np.uint8)
    norm = normalisation_factor(flux, mask)
    assert norm[0] == 2.0
    x, w = model_input(flux, np.ones_like(flux), mask, norm)
    np.testing.assert_allclose(x, [[0.5, 1.0, 1.5, 0.0]])
    np.testing.assert_allclose(w, [[4.0, 4.0, 4.0, 0.0]])


def test_grid_identity():
    assert GRID.n_pix == 1500
    assert GRID.wavelength[0] == pytest.approx(3625) and GRID.wavelength[-1] == pytest.approx(9000)
    assert WavelengthGrid(1500, 3625, 9000).sha256 == GRID.sha256
    assert WavelengthGrid(1501, 3625, 9000).sha256 != GRID.sha256
    assert WavelengthGrid.from_json(GRID.to_json()) == GRID
