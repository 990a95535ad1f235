"""The weighted PCA baseline against known answers."""

from __future__ import annotations

import numpy as np
import pytest

from qsocube.builder.train.pca import codes, fit_weighted_pca, reconstruct, weighted_mean


def _low_rank(n=300, n_pix=80, k=3, seed=0):
    rng = np.random.default_rng(seed)
    mean = 1 + 0.3 * np.sin(np.linspace(0, 6, n_pix))
    basis = np.linalg.qr(rng.normal(size=(n_pix, k)))[0].T
    x = mean + rng.normal(size=(n, k)) * [3.0, 2.0, 1.0][:k] @ basis
    return x.astype(np.float32), mean, basis


def test_weighted_mean_ignores_zero_weights():
    x = np.array([[1.0, 5.0], [3.0, 100.0]], np.float32)
    w = np.array([[1.0, 2.0], [3.0, 0.0]], np.float32)
    np.testing.assert_allclose(weighted_mean(x, w), [(1 + 9) / 4, 5.0])
    assert weighted_mean(x, np.zeros_like(w)).tolist() == [0.0, 0.0]


def test_recovers_exact_low_rank_data_despite_masks_and_garbage_in_masked_pixels():
    x, _, basis = _low_rank()
    rng = np.random.default_rng(1)
    w = rng.uniform(0.5, 50, x.shape).astype(np.float32)
    masked = rng.random(x.shape) < 0.2
    w[masked] = 0
    dirty = np.where(masked, 1e3, x).astype(np.float32)  # masked pixels hold nonsense
    fitted = fit_weighted_pca(dirty, w, 3, iterations=50, tol=1e-9)
    x_hat = reconstruct(fitted, dirty, w)
    assert np.max(np.abs(x_hat - x)[~masked]) < 1e-3
    # the span is the true one: projecting the true basis on the fitted one loses nothing
    overlap = basis @ fitted.components.T
    np.testing.assert_allclose(np.linalg.svd(overlap, compute_uv=False), 1.0, atol=1e-4)
    np.testing.assert_allclose(fitted.components @ fitted.components.T, np.eye(3), atol=1e-6)


def test_uniform_weights_match_plain_pca_error():
    x, _, _ = _low_rank(k=3)
    noisy = x + np.random.default_rng(2).normal(0, 0.1, x.shape).astype(np.float32)
    w = np.ones_like(noisy)
    fitted = fit_weighted_pca(noisy, w, 2, iterations=50, tol=1e-10)
    centred = noisy - noisy.mean(axis=0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    plain = noisy.mean(axis=0) + (u[:, :2] * s[:2]) @ vt[:2]
    ours = reconstruct(fitted, noisy, w)
    assert np.mean((ours - noisy) ** 2) == pytest.approx(np.mean((plain - noisy) ** 2), rel=1e-3)


def test_codes_are_the_weighted_least_squares_solution():
    rng = np.random.default_rng(3)
    basis = np.linalg.qr(rng.normal(size=(20, 2)))[0].T
    mean = np.zeros(20)
    x = rng.normal(size=(1, 20)).astype(np.float32)
    w = rng.uniform(0.1, 5, (1, 20)).astype(np.float32)
    a = basis.T * np.sqrt(w[0])[:, None]
    expected = np.linalg.lstsq(a, np.sqrt(w[0]) * x[0], rcond=None)[0]
    np.testing.assert_allclose(codes(basis, x, w, mean)[0], expected, rtol=1e-4)


def test_chi2_never_increases_over_iterations():
    x, _, _ = _low_rank(k=3)
    noisy = x + np.random.default_rng(4).normal(0, 0.2, x.shape).astype(np.float32)
    w = np.random.default_rng(5).uniform(0.1, 10, x.shape).astype(np.float32)
    fitted = fit_weighted_pca(noisy, w, 2, iterations=15, tol=0)  # runs until no progress
    chi2 = np.array(fitted.chi2_history)
    assert len(chi2) >= 3 and np.all(np.diff(chi2) <= 1e-6 * chi2[:-1])
    assert chi2[-1] < 0.999 * chi2[0]
