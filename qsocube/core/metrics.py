"""Reconstruction metrics shared by training write-back and inference (numpy only)."""

from __future__ import annotations

import numpy as np


def reconstruction_metrics(x: np.ndarray, w: np.ndarray, x_hat: np.ndarray, latent_size: int
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Per spectrum (MSE over valid pixels, reduced chi-square).

    Valid pixels are those with w > 0. MSE is in normalised flux units, the study's
    "reconstruction MSE"; the reduced chi-square divides sum(w r^2) by (n_valid - L).
    """
    valid = w > 0
    n_valid = valid.sum(axis=1)
    # float32 squares summed in float64: the same sums to ~1e-7, without float64 copies
    squared = np.square(np.where(valid, x - x_hat, np.float32(0)), dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        mse = squared.sum(axis=1, dtype=np.float64) / n_valid
        chi2 = ((w * squared).sum(axis=1, dtype=np.float64)
                / np.maximum(n_valid - latent_size, 1))
    mse = np.where(n_valid > 0, mse, np.nan)
    chi2 = np.where(n_valid > 0, chi2, np.nan)
    return mse.astype(np.float32), chi2.astype(np.float32)
