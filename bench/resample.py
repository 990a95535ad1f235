"""Resampler throughput against the study's per-spectrum interpolation and the memory floor.

Input: a full-size batch like the study's sample (21,771 spectra of ~4,600 pixels with
starts spread over 3.549-3.58 in log10 A) for size "full", 4,096 spectra for "small".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.hardware import best_seconds, memory_bandwidth_gbs
from qsocube.core.grid import DEFAULT_GRID
from qsocube.core.preprocess import frame_batch, frame_span, resample_chunked, resample_study

SIZES = {"small": 4096, "full": 21771}
REFERENCE_SPECTRA = 200
BATCH = 1024  # the builder's partition size
TARGET_SPECTRA_PER_S = 20_000
TARGET_RATIO = 50


def _survey(n: int, seed: int = 0) -> tuple[list[int], list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    starts = rng.integers(35490, 35800, n)
    lengths = rng.integers(4550, 4650, n)
    fluxes = [rng.normal(10, 1, k).astype(np.float32) for k in lengths]
    ivars = [np.where(rng.random(k) < 0.02, 0, 1).astype(np.float32) for k in lengths]
    return list(starts), fluxes, ivars


def run(size: str = "small") -> dict:
    n = SIZES[size]
    grid = DEFAULT_GRID
    starts, fluxes, ivars = _survey(n)
    # placed in the builder's partitions (1,024 spectra): one frame of the whole survey
    # would measure page faults of a 0.9 GB array, not the placement
    place_s = best_seconds(lambda: [frame_batch(starts[lo:lo + BATCH], fluxes[lo:lo + BATCH],
                                                ivars[lo:lo + BATCH], grid)
                                    for lo in range(0, n, BATCH)], repeats=2)
    frame = frame_batch(starts, fluxes, ivars, grid)
    resample_chunked(frame, grid)  # builds the cached operator
    rebin_s = best_seconds(lambda: resample_chunked(frame, grid), repeats=3)
    sub = frame_batch(starts[:REFERENCE_SPECTRA], fluxes[:REFERENCE_SPECTRA],
                      ivars[:REFERENCE_SPECTRA], grid)
    reference_s = (best_seconds(lambda: resample_study(sub, grid), repeats=1)
                   * n / REFERENCE_SPECTRA)
    _, n_frame = frame_span(grid)
    bytes_moved = n * (n_frame * (4 + 4 + 1) + grid.n_pix * (4 + 4 + 1))
    bandwidth = memory_bandwidth_gbs()
    floor_s = bytes_moved / (bandwidth * 1e9)
    rate = n / rebin_s
    return {
        "stage": "resample", "spectra": n,
        "rebin_spectra_per_s": round(rate),
        "place_on_frame_spectra_per_s": round(n / place_s),
        "place_and_rebin_spectra_per_s": round(n / (place_s + rebin_s)),
        "reference_seed_loop_spectra_per_s": round(n / reference_s),
        "ratio_vs_reference": round(reference_s / rebin_s, 1),
        "memory_bandwidth_GBps": round(bandwidth, 1),
        "bandwidth_floor_spectra_per_s": round(n / floor_s),
        "fraction_of_bandwidth_bound": round(floor_s / rebin_s, 3),
        "targets": {f"rebin >= {TARGET_SPECTRA_PER_S} spectra/s": rate >= TARGET_SPECTRA_PER_S,
                    f">= {TARGET_RATIO}x the study's loop": reference_s / rebin_s >= TARGET_RATIO},
    }


def fits_reading(folder: Path | None = None, limit: int = 2000) -> dict:
    """Files per second of the builder's reader against astropy on the same files."""
    from qsocube.core.speclite import _read_astropy, read_spec_lite

    folder = folder or Path(__file__).resolve().parents[2] / "shared/data/sdss/spectra"
    files = sorted(folder.glob("spec-*.fits"))[:limit]
    if not files:
        return {"stage": "fits_reading", "skipped": f"no spectra in {folder}"}
    fast_s = best_seconds(lambda: [read_spec_lite(p) for p in files], repeats=2)
    subset = files[:100]
    subset_s = best_seconds(lambda: [_read_astropy(p) for p in subset], repeats=1)
    astropy_s = subset_s * len(files) / len(subset)
    return {"stage": "fits_reading", "files": len(files), "folder": str(folder),
            "builder_reader_files_per_s": round(len(files) / fast_s),
            "astropy_reference_files_per_s": round(len(files) / astropy_s),
            "ratio_vs_reference": round(astropy_s / fast_s, 1)}
