"""bench/fidelity.py's cross-validation groups (the benchmark itself needs a release and
../shared, so it runs in `make bench`, not here)."""

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
