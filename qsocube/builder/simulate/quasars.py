"""Quasar spectra from eigenspectra of real quasars (pure numpy, vectorised over spectra).

A quasar at redshift z is ``mean + theta @ components`` of the LOZ (z < z_split) or HIZ
set of :mod:`templates`, theta drawn from the real quasars' distribution conditional on z
and M_I, plus host-galaxy light at z < z_split (a weak-line galaxy archetype whose
amplitude falls with luminosity as it does in the real quasars). The HIZ mean spectrum's
built-in mean forest absorption is divided out here, so that :mod:`physics` can apply a
fluctuating forest at the quasar's own redshift. Every random number is drawn by the
caller's survey-level generator (see population.py), so spectra do not depend on batching.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .templates import DLOGLAM, Library, QuasarSet


@dataclass(frozen=True)
class QuasarShapes:
    """Per quasar: which set, its coefficients and its host (drawn once for the survey)."""

    hiz: np.ndarray  # (n,) bool: HIZ set (else LOZ)
    theta: np.ndarray  # (n, K_max) coefficients (LOZ: the last is the host); unused are 0
    host_archetype: np.ndarray  # (n,) galaxy archetype index of the host light (LOZ only)


def regressors(z: np.ndarray, m_i: np.ndarray, qset: QuasarSet) -> np.ndarray:
    x = np.stack([np.ones_like(z), np.log10(1 + z) - 0.2, m_i + 24.0], axis=-1)
    # the real quasars span a limited range: no extrapolation of the linear trends
    return np.clip(x, qset.x_min, qset.x_max)


def _draw_theta(rng: np.random.Generator, z: np.ndarray, m_i: np.ndarray, lib: Library
                ) -> tuple[np.ndarray, np.ndarray]:
    """theta ~ N(x beta, cov) per quasar, and a random weak-line host archetype."""
    n = len(z)
    hiz = z >= lib.z_split
    theta = np.zeros((n, max(lib.loz.beta.shape[1], lib.hiz.beta.shape[1])))
    normal = rng.standard_normal(theta.shape)
    for qset, rows in ((lib.loz, ~hiz), (lib.hiz, hiz)):
        k = qset.beta.shape[1]
        mean = regressors(z[rows], m_i[rows], qset) @ qset.beta
        theta[rows, :k] = mean + normal[rows, :k] @ np.linalg.cholesky(qset.cov).T
    archetype = lib.host_archetypes[rng.integers(len(lib.host_archetypes), size=n)]
    return theta, archetype


def is_physical(spectra: np.ndarray, max_negative: float = 0.05) -> np.ndarray:
    """Per spectrum (rows, NaN outside its range): a positive median and at most
    ``max_negative`` of its pixels below zero. The Gaussian prior knows nothing of
    positivity; stricter rules (no low stretch at all) were tried and made the simulated
    quasars easier to tell from real ones (classifier AUC 0.64 against 0.58 here)."""
    finite = np.isfinite(spectra)
    negative = (finite & (spectra < 0)).sum(axis=1) / np.maximum(finite.sum(axis=1), 1)
    return (np.nanmedian(spectra, axis=1) > 0) & (negative <= max_negative)


def draw_shapes(rng: np.random.Generator, z: np.ndarray, m_i: np.ndarray, lib: Library,
                frame_loglam: np.ndarray, max_rounds: int = 50) -> QuasarShapes:
    """Coefficients from the real quasars' conditional distribution, truncated to
    physical spectra: a draw that :func:`is_physical` rejects over the quasar's observed
    range (rest > 1000 A) is drawn again. What little negative flux remains is clipped
    by the caller."""
    theta, archetype = _draw_theta(rng, z, m_i, lib)
    shapes = QuasarShapes(z >= lib.z_split, theta, archetype)
    todo = np.arange(len(z))
    for _ in range(max_rounds):
        spectra = intrinsic(shapes, todo, z, frame_loglam, lib)
        rest = 10.0 ** frame_loglam[None, :] / (1 + z[todo, None])
        todo = todo[~is_physical(np.where(rest > 1000.0, spectra, np.nan))]
        if not todo.size:
            break
        theta[todo], archetype[todo] = _draw_theta(rng, z[todo], m_i[todo], lib)
    return shapes


def shift_to_frame(rest: np.ndarray, loglam0: float, z: np.ndarray, frame_loglam: np.ndarray
                   ) -> np.ndarray:
    """Rest-frame spectra (n, n_rest) on a 1e-4 dex grid seen at redshift z on the observed
    frame (n, N), linear in log wavelength; NaN outside the rest grid.

    Both grids step by 1e-4 dex, so each row is a constant fractional shift: one gather.
    """
    position = (frame_loglam[None, :] - np.log10(1 + z)[:, None] - loglam0) / DLOGLAM
    lo = np.floor(position).astype(np.int64)
    frac = position - lo
    inside = (lo >= 0) & (lo + 1 < rest.shape[1])
    lo = np.clip(lo, 0, rest.shape[1] - 2)
    left = np.take_along_axis(rest, lo, axis=1)
    right = np.take_along_axis(rest, lo + 1, axis=1)
    return np.where(inside, left + frac * (right - left), np.nan)


def rest_spectra(qset: QuasarSet, theta: np.ndarray) -> np.ndarray:
    """Unabsorbed rest-frame quasar spectra (n, n_rest) of one set (host light apart)."""
    spectra = qset.mean[None, :] + theta[:, :len(qset.components)] @ qset.components
    if qset.transmission is not None:
        spectra = spectra / qset.transmission[None, :]
    return spectra


def intrinsic(shapes: QuasarShapes, index: np.ndarray, z: np.ndarray, frame_loglam: np.ndarray,
              lib: Library) -> np.ndarray:
    """Unabsorbed observed-frame spectra (B, N) of quasars ``index`` (scale: the set's mean
    vector has median 1); NaN where the rest-frame basis ends."""
    out = np.empty((len(index), len(frame_loglam)))
    for qset, use in ((lib.loz, ~shapes.hiz[index]), (lib.hiz, shapes.hiz[index])):
        if use.any():
            rows = index[use]
            rest = rest_spectra(qset, shapes.theta[rows])
            out[use] = shift_to_frame(rest, qset.loglam0, z[rows], frame_loglam)
    hosted = np.flatnonzero(~shapes.hiz[index])
    if hosted.size:
        rows = index[hosted]
        hosts = lib.galaxy_archetypes[shapes.host_archetype[rows]] @ lib.galaxy_basis
        light = shift_to_frame(hosts, lib.galaxy_loglam0, z[rows], frame_loglam)
        # the LOZ mean already holds the average host of DR16Q quasars: the last coefficient
        # is the host light relative to it (negative: less host than average). Outside the
        # galaxy basis (rest < 1700 A) the host is negligible, not unknown.
        amplitude = shapes.theta[rows, len(lib.loz.components)]
        out[hosted] += amplitude[:, None] * np.nan_to_num(light)
    return out


def coverage_of(loglam0: float, n_rest: int, z: np.ndarray, frame_loglam: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """First and last frame pixel (inclusive) inside a rest grid seen at redshift z."""
    shift = np.log10(1 + z)
    first = np.searchsorted(frame_loglam, loglam0 + shift + 1e-9)
    last = np.searchsorted(frame_loglam, loglam0 + DLOGLAM * (n_rest - 1) + shift - 1e-9,
                           side="right") - 1
    return first, last


def coverage(z: np.ndarray, hiz: np.ndarray, frame_loglam: np.ndarray, lib: Library
             ) -> tuple[np.ndarray, np.ndarray]:
    """First and last frame pixel (inclusive) where each quasar's basis is defined."""
    first, last = np.empty(len(z), np.int64), np.empty(len(z), np.int64)
    for qset, use in ((lib.loz, ~hiz), (lib.hiz, hiz)):
        first[use], last[use] = coverage_of(qset.loglam0, len(qset.mean), z[use], frame_loglam)
    return first, last
