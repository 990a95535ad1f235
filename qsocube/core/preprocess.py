"""Resampling and normalisation: the one preprocessing path of the builder and inference.

Pure functions on arrays (numpy and scipy.sparse). Spectra are placed on the SDSS global
1e-4 dex frame by their integer offsets; each target pixel is then a fixed weighted sum
of at most a few frame pixels, so resampling a whole batch is a few products with one
sparse operator.

Mask bits (``mask`` in the cube): a pixel is valid for science and training iff mask == 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import sparse

from qsocube.core.grid import SDSS_DLOGLAM, WavelengthGrid

NO_COVERAGE = np.uint8(1)  # the target pixel is not fully inside the spectrum's wavelength range
NO_DATA = np.uint8(2)  # covered, but every contributing input pixel has ivar == 0
MASK_MEANINGS = {"no_coverage": int(NO_COVERAGE), "no_data": int(NO_DATA)}
NORMALISATION = "median_flux_over_valid_pixels"
# "rebin": the product's flux-conserving rebin; "study": the original study's recipe.
METHODS = ("rebin", "study")
# Names accepted for a method and what they mean now ("seed" was the study's recipe).
METHOD_ALIASES = {"seed": "study"}


@dataclass(frozen=True)
class FrameBatch:
    """Spectra placed on the SDSS 1e-4 dex frame that spans the grid, pixel-major.

    Arrays are (n_frame, n_spectra) (``frame_span``): column s is spectrum s, row j is frame
    pixel ``frame0 + j``; ``flux`` float32 in 1e-17 erg s-1 cm-2 Angstrom-1, ``ivar`` float32
    (0 where the pixel is bad or absent), ``present`` bool (the spectrum has a pixel there).
    Pixel-major because the rebin then streams contiguous rows, which is ten times faster
    than the spectrum-major layout for the same arithmetic.
    """

    flux: np.ndarray  # (G, n) float32
    ivar: np.ndarray  # (G, n) float32, 0 where the pixel is bad or absent
    present: np.ndarray  # (G, n) bool, the spectrum has a pixel there

    def __len__(self) -> int:
        return self.flux.shape[1]


@dataclass(frozen=True)
class Resampled:
    """Spectra on the grid, spectrum-major.

    ``flux`` (n, n_pix) float32 in 1e-17 erg s-1 cm-2 Angstrom-1 and ``ivar`` (n, n_pix)
    float32 (its inverse variance), both 0 where masked; ``mask`` (n, n_pix) uint8 bits
    ``NO_COVERAGE`` | ``NO_DATA`` (valid iff 0); ``covered_fraction`` (n,) float32, the
    fraction of grid pixels with mask == 0.
    """

    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray
    covered_fraction: np.ndarray


@lru_cache(maxsize=8)
def frame_span(grid: WavelengthGrid) -> tuple[int, int]:
    """(frame0, n_frame): the absolute 1e-4 dex pixels that any grid pixel overlaps."""
    edges = grid.loglam_edges / SDSS_DLOGLAM
    first = int(np.floor(edges[0] + 0.5))
    last = int(np.floor(edges[-1] + 0.5))
    return first, last - first + 1


def _placement(start: int, length: int, grid: WavelengthGrid) -> tuple[slice, slice] | None:
    frame0, n_frame = frame_span(grid)
    lo, hi = max(start, frame0), min(start + length, frame0 + n_frame)
    if hi <= lo:
        return None
    return slice(lo - start, hi - start), slice(lo - frame0, hi - frame0)


def frame_batch(starts: list[int] | np.ndarray, fluxes: list[np.ndarray],
                ivars: list[np.ndarray], grid: WavelengthGrid) -> FrameBatch:
    """Place spectra (first pixel at absolute 1e-4 dex index ``starts[s]``) on the frame.

    Rows are filled spectrum-major (contiguous copies), then transposed block by block,
    which keeps both steps cache-friendly.
    """
    _, n_frame = frame_span(grid)
    n = len(fluxes)
    flux = np.zeros((n, n_frame), np.float32)
    ivar = np.zeros((n, n_frame), np.float32)
    present = np.zeros((n, n_frame), bool)
    for row, (start, f, iv) in enumerate(zip(starts, fluxes, ivars, strict=True)):
        where = _placement(int(start), len(f), grid)
        if where is not None:
            src, dst = where
            flux[row, dst], ivar[row, dst], present[row, dst] = f[src], iv[src], True
    return FrameBatch(_transpose(flux), _transpose(ivar), _transpose(present))


def _transpose(rows: np.ndarray, block: int = 512) -> np.ndarray:
    out = np.empty(rows.shape[::-1], rows.dtype)
    for j in range(0, rows.shape[1], block):
        out[j:j + block] = rows[:, j:j + block].T
    return out


def frame_columns(frame: FrameBatch, lo: int, hi: int) -> FrameBatch:
    """Spectra ``lo:hi`` of a frame batch (views, no copy)."""
    return FrameBatch(frame.flux[:, lo:hi], frame.ivar[:, lo:hi], frame.present[:, lo:hi])


@lru_cache(maxsize=8)
def rebin_operator(grid: WavelengthGrid) -> tuple[sparse.csr_matrix, sparse.csr_matrix,
                                                  sparse.csr_matrix]:
    """The fixed linear operator A from the frame to the grid, its square and its support.

    A[t, j] is the wavelength overlap of grid pixel t and frame pixel j divided by the grid
    pixel's width, so a fully covered pixel's weights sum to 1 and the integral of f_lambda
    is conserved.
    """
    frame0, n_frame = frame_span(grid)
    edges = grid.loglam_edges / SDSS_DLOGLAM
    n_taps = int(np.ceil(np.max(np.diff(edges)))) + 1
    lo = np.floor(edges[:-1] + 0.5).astype(np.int64)
    taps = lo[:, None] + np.arange(n_taps)[None, :]
    frame_lo = 10.0 ** ((taps - 0.5) * SDSS_DLOGLAM)
    frame_hi = 10.0 ** ((taps + 0.5) * SDSS_DLOGLAM)
    wave_edges = 10.0**grid.loglam_edges
    overlap = np.minimum(frame_hi, wave_edges[1:, None]) - np.maximum(frame_lo,
                                                                      wave_edges[:-1, None])
    weights = np.clip(overlap, 0.0, None) / np.diff(wave_edges)[:, None]
    used = weights > 0
    rows = np.repeat(np.arange(grid.n_pix), n_taps).reshape(weights.shape)[used]
    cols = taps[used] - frame0
    shape = (grid.n_pix, n_frame)

    def build(values: np.ndarray) -> sparse.csr_matrix:
        return sparse.csr_matrix((values.astype(np.float32), (rows, cols)), shape=shape)

    return build(weights[used]), build(weights[used] ** 2), build(np.ones(used.sum()))


def resample_rebin(frame: FrameBatch, grid: WavelengthGrid) -> Resampled:
    """Flux-conserving rebin with exact inverse-variance propagation, vectorised over spectra.

    Bad input pixels (ivar == 0) are left out and the remaining weights renormalised; the
    variance of the weighted mean is sum(a^2 var) / (sum a)^2. A grid pixel is covered only
    if every frame pixel it overlaps exists in the spectrum.
    """
    weights, weights_sq, support = rebin_operator(grid)
    good = frame.ivar > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = np.where(good, np.float32(1) / frame.ivar, np.float32(0))
        wsum = weights @ good.astype(np.float32)
        flux = (weights @ np.where(good, frame.flux, np.float32(0))) / wsum
        ivar = (wsum * wsum) / (weights_sq @ variance)
    absent = support @ (~frame.present).astype(np.float32)
    mask = np.where(absent > 0, NO_COVERAGE, np.where(wsum > 0, 0, NO_DATA)).astype(np.uint8)
    return _finish(flux.T, ivar.T, mask.T)


def _finish(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray) -> Resampled:
    valid = (mask == 0) & np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0)
    mask = np.where((mask == 0) & ~valid, NO_DATA, mask).astype(np.uint8)
    flux = np.where(valid, flux, 0).astype(np.float32)
    ivar = np.where(valid, ivar, 0).astype(np.float32)
    return Resampled(flux, ivar, mask, valid.mean(axis=1).astype(np.float32))


def resample_study(frame: FrameBatch, grid: WavelengthGrid) -> Resampled:
    """The study's recipe, kept for side-by-side comparison (a per-spectrum loop).

    4th-degree spline of the flux onto a grid twice as fine, the error as the larger of
    the two nearest input errors, then every second pixel. The fine grid has 2 * n_pix - 1
    points so that its even points are exactly the product's grid (the study's 3000-point
    grid differs from it by at most half a pixel).
    """
    from scipy.interpolate import make_interp_spline

    frame0, n_frame = frame_span(grid)
    target = np.linspace(grid.loglam[0], grid.loglam[-1], 2 * grid.n_pix - 1)[::2]
    frame_loglam = (frame0 + np.arange(n_frame)) * SDSS_DLOGLAM
    flux = np.zeros((len(frame), grid.n_pix))
    ivar = np.zeros_like(flux)
    mask = np.full(flux.shape, NO_COVERAGE, np.uint8)
    for column in range(len(frame)):
        rows = np.flatnonzero(frame.present[:, column])
        if len(rows) < 5:
            continue
        loglam = frame_loglam[rows]
        inside = (target >= loglam[0]) & (target <= loglam[-1])
        f = frame.flux[rows, column].astype(np.float64)
        iv = frame.ivar[rows, column].astype(np.float64)
        flux[column, inside] = make_interp_spline(loglam, f, k=4)(target[inside])
        with np.errstate(divide="ignore"):
            sigma = np.where(iv > 0, 1.0 / np.sqrt(iv), np.inf)
        right = np.clip(np.searchsorted(loglam, target[inside]), 1, len(rows) - 1)
        worst = np.maximum(sigma[right - 1], sigma[right])
        ivar[column, inside] = np.where(np.isfinite(worst), 1.0 / worst**2, 0)
        mask[column, inside] = np.where(np.isfinite(worst), 0, NO_DATA)
    return _finish(flux, ivar, mask)


def canonical_method(method: str) -> str:
    """The current name of a resampling method (``METHOD_ALIASES``); ValueError if unknown."""
    method = METHOD_ALIASES.get(method, method)
    if method not in METHODS:
        raise ValueError(f"unknown resampling method {method!r}; choose from {METHODS}")
    return method


def resample(frame: FrameBatch, grid: WavelengthGrid, method: str = "rebin") -> Resampled:
    """Resample a frame batch onto ``grid`` with ``method`` (``METHODS`` or an alias)."""
    if canonical_method(method) == "rebin":
        return resample_rebin(frame, grid)
    return resample_study(frame, grid)


def resample_chunked(frame: FrameBatch, grid: WavelengthGrid, method: str = "rebin",
                     chunk: int = 2048) -> Resampled:
    """Resample in column chunks so temporaries stay near chunk x n_frame, not survey size."""
    parts = [resample(frame_columns(frame, lo, lo + chunk), grid, method)
             for lo in range(0, max(len(frame), 1), chunk)]
    return Resampled(*(np.concatenate([getattr(p, k) for p in parts]) for k in
                       ("flux", "ivar", "mask", "covered_fraction")))


def normalisation_factor(flux: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Median flux over valid pixels per spectrum; NaN where there is none.

    One sort of the whole batch (invalid pixels pushed to the end as +inf), which is
    several times faster than nanmedian's per-row loop.
    """
    valid = mask == 0
    ordered = np.sort(np.where(valid, flux, np.float32(np.inf)).astype(np.float32), axis=1)
    n_valid = valid.sum(axis=1)
    lo = np.clip((n_valid - 1) // 2, 0, None)[:, None]
    hi = np.clip(n_valid // 2, 0, flux.shape[1] - 1)[:, None]
    middle = 0.5 * (np.take_along_axis(ordered, lo, 1).astype(np.float64)
                    + np.take_along_axis(ordered, hi, 1))
    return np.where(n_valid > 0, middle[:, 0], np.nan).astype(np.float32)


def model_input(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray, norm: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """(x, w): normalised flux and inverse variance as the models see them (0 on masked pixels)."""
    scale = norm.astype(np.float32)[:, None]
    valid = mask == 0
    x = np.where(valid, flux / scale, 0).astype(np.float32, copy=False)
    w = np.where(valid, ivar * scale * scale, 0).astype(np.float32, copy=False)
    return x, w


def encoder_input(x: np.ndarray) -> np.ndarray:
    """u = asinh(x), what an encoder graph takes (its input ``u``) from model input x.

    Linear near the continuum level and logarithmic beyond, so a spectrum whose median
    flux is near zero (x ~ 1e3) cannot blow up the encoder's activations; masked pixels
    stay 0. Computed here rather than in the ONNX graph: numpy's vectorised asinh is
    about 15 times faster than onnxruntime's Asinh kernel, which would otherwise cost
    more than the whole network.
    """
    return np.arcsinh(np.asarray(x, dtype=np.float32))
