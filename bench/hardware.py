"""Hardware figures the benchmarks are bounded by, measured in the same run."""

from __future__ import annotations

import time

import numpy as np


def memory_bandwidth_gbs(megabytes: int = 256, repeats: int = 5) -> float:
    """Copy bandwidth (read + write bytes per second) of a large array, best of ``repeats``."""
    source = np.ones(megabytes * (1 << 20) // 8)
    target = np.empty_like(source)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.nbytes / best / 1e9


def best_seconds(func, repeats: int) -> float:
    """Fastest of ``repeats`` calls: the machine is shared, so the minimum is the signal."""
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_gflops(n: int = 1024, repeats: int = 5) -> float:
    """float32 matrix-multiply rate of this machine's (numpy) BLAS."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = a.copy()
    return 2 * n**3 / best_seconds(lambda: a @ b, repeats) / 1e9
