"""The PCA baseline: an inverse-variance weighted PCA with as many components as latents.

Weighted on purpose: it uses the same capped weights as the VAE's reconstruction term,
so it minimises the same sum of 0.5 * w * (x - x_hat)^2 with a linear decoder, and masked
pixels (w = 0) neither pull the components nor the codes. Fitted on the training spectra
by expectation-maximisation (weighted low-rank approximation, Bailey 2012, PASP 124, 1015):
the components start from a plain PCA of the residuals from the weighted mean spectrum,
then per-spectrum weighted least-squares codes alternate with per-pixel weighted
least-squares fits of the components and the mean. Every spectrum's
codes are its own weighted least-squares fit, so evaluation also ignores masked pixels.

numpy only; the batched normal equations are two matrix products per step (weights times
products of component pairs), not loops over spectra or pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RIDGE = 1e-6  # relative ridge on the normal equations: keeps empty pixels / spectra at 0


@dataclass(frozen=True)
class PCABasis:
    mean: np.ndarray  # (n_pix,)
    components: np.ndarray  # (k, n_pix)
    iterations: int
    chi2_history: tuple[float, ...]

    @property
    def k(self) -> int:
        return self.components.shape[0]


def weighted_mean(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    total = w.sum(axis=0, dtype=np.float64)
    return np.where(total > 0, (w * x).sum(axis=0, dtype=np.float64) / np.maximum(total, 1e-300),
                    0.0)


def initial_components(x: np.ndarray, w: np.ndarray, mean: np.ndarray, k_max: int) -> np.ndarray:
    """Top k_max eigenvectors of the plain covariance of valid residuals (shared by all k)."""
    from scipy.linalg import eigh

    residual = np.where(w > 0, x - mean, 0).astype(np.float32)
    n, n_pix = residual.shape
    k_max = min(k_max, n, n_pix)
    if n < n_pix:  # fewer spectra than pixels: the thin SVD is cheap and exact
        _, _, vt = np.linalg.svd(residual, full_matrices=False)
        return vt[:k_max].astype(np.float64)
    covariance = residual.T @ residual
    # float32 and only the top k_max: ~30x faster than a float64 full eigh, and EM refines it
    _, vectors = eigh(covariance, subset_by_index=(n_pix - k_max, n_pix - 1), driver="evr")
    return vectors[:, ::-1].T.astype(np.float64)


def _pair_products(basis: np.ndarray) -> np.ndarray:
    """(n_pix, k*k) with column (a, b) = basis[a] * basis[b]: rows of V^T diag(w) V."""
    k = basis.shape[0]
    return (basis[:, None, :] * basis[None, :, :]).reshape(k * k, -1).T


def _solve(normal: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Batched ridge-stabilised solves of (n, k, k) systems."""
    k = rhs.shape[1]
    scale = np.trace(normal, axis1=1, axis2=2)[:, None, None] / k
    ridge = RIDGE * np.maximum(scale, 1e-12) * np.eye(k)
    return np.linalg.solve(normal + ridge, rhs[:, :, None])[:, :, 0]


def codes(basis: PCABasis | np.ndarray, x: np.ndarray, w: np.ndarray,
          mean: np.ndarray | None = None) -> np.ndarray:
    """Per-spectrum weighted least-squares coefficients (n, k)."""
    if isinstance(basis, PCABasis):
        basis, mean = basis.components, basis.mean
    # float32 products (sums of ~n_pix positive terms, relative error ~1e-6), float64 solves
    k = basis.shape[0]
    basis32 = basis.astype(np.float32)
    wr = w * (x - mean.astype(np.float32))
    normal = (w @ _pair_products(basis32)).astype(np.float64).reshape(-1, k, k)
    return _solve(normal, (wr @ basis32.T).astype(np.float64))


def reconstruct(basis: PCABasis, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (basis.mean + codes(basis, x, w) @ basis.components).astype(np.float32)


def fit_weighted_pca(x: np.ndarray, w: np.ndarray, k: int, iterations: int = 20,
                     tol: float = 1e-4, start: np.ndarray | None = None,
                     mean: np.ndarray | None = None) -> PCABasis:
    """EM weighted PCA of (x, w) with k components; stops when chi2 improves < tol (relative)."""
    mean = weighted_mean(x, w) if mean is None else mean
    basis = (initial_components(x, w, mean, k) if start is None else start)[:k].copy()
    w = w.astype(np.float32)
    wx = w * x
    chi2: list[float] = []
    for _ in range(iterations):
        c = codes(basis, x, w, mean)
        model = (mean + c @ basis).astype(np.float32)
        chi2.append(float((w * (x - model) ** 2).sum(dtype=np.float64)))
        if len(chi2) > 1 and chi2[-2] - chi2[-1] <= tol * chi2[-2]:
            break
        # M step: per pixel, weighted least squares of x on (codes, 1): the component values
        # and the mean together (a fixed weighted mean is not on the data's affine subspace)
        augmented = np.hstack([c, np.ones((len(c), 1))]).astype(np.float32)
        normal = (w.T @ _pair_products(augmented.T)).astype(np.float64).reshape(-1, k + 1, k + 1)
        solution = _solve(normal, (wx.T @ augmented).astype(np.float64))
        basis, mean = solution[:, :k].T, solution[:, k]
    # orthonormalise for users; the span, and so every reconstruction, is unchanged
    q, _ = np.linalg.qr(basis.T)
    return PCABasis(mean, q.T.copy(), len(chi2), tuple(chi2))
