"""bench/fidelity.py's cross-validation groups and two-sample test on generated spectra
(the benchmark itself needs a release and ../shared, so it runs in `make bench`)."""

from __future__ import annotations

import numpy as np

from bench.fidelity import shared_match_groups


def test_real_quasars_that_share_a_simulated_match_are_one_group():
    # 0 and 1 share spectrum 2; 3 and 4 share 10, and 4 shares 0 with quasar 0: one chain
    match = np.array([[0, 1, 2], [2, 3, 4], [5, 6, 7], [8, 9, 10], [10, 0, 11]])
    group = shared_match_groups(match)
    assert len(set(group[[0, 1, 3, 4]])) == 1
    assert group[2] != group[0]
    assert len(np.unique(shared_match_groups(np.arange(12).reshape(4, 3)))) == 4


def _spectra(rng: np.random.Generator, n: int, bump: float = 0.0) -> dict[str, np.ndarray]:
    """Noisy flat spectra with a broad feature of random height (plus ``bump``) and their
    redshift and S/N, the footing the two-sample test matches on."""
    x = 1.0 + 0.05 * rng.standard_normal((n, 1500)).astype(np.float32)
    x[:, 600:700] += (rng.uniform(0.0, 0.3, n) + bump)[:, None].astype(np.float32)
    return {"x": x, "w": np.full_like(x, 400.0), "z": rng.uniform(0.5, 3.0, n),
            "sn": rng.uniform(10.0, 30.0, n)}


def test_the_matched_two_sample_test_tells_apart_only_what_differs():
    from bench.fidelity import matched_two_sample

    rng = np.random.default_rng(3)
    real = _spectra(rng, 100)
    same = matched_two_sample(real, _spectra(rng, 600))
    apart = matched_two_sample(real, _spectra(rng, 600, bump=0.2))
    assert same["auc"] < 0.68  # 0.50-0.62 over seeds 0-4: chance, with 100 real spectra
    assert apart["auc"] > 0.85
