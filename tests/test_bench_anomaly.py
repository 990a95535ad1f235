"""bench.anomaly's detection kinds: who is judged against whom."""

import numpy as np

from bench.anomaly import REPORTED_ONLY, detection_kinds


def test_bal_quasars_are_judged_where_their_troughs_are_on_the_spectrum():
    object_class = np.array(["QSO", "QSO", "QSO", "QSO", "STAR", "QSO  ", "GALAXY"])
    artefact = np.array(["none", "none", "none", "none", "none", "sky_subtraction_failure",
                         "none"])
    is_bal = np.array([1, 1, 0, 0, 0, 0, 0])
    z = np.array([2.4, 0.8, 2.1, 0.5, 0.0, 2.0, 0.3])
    kinds = detection_kinds(object_class, artefact, is_bal, z)

    members, reference = kinds["BAL quasar, troughs on the spectrum (1.57 <= z <= 5.6)"]
    assert members.tolist() == [True, False, False, False, False, False, False]
    assert reference.tolist() == [False, False, True, False, False, False, False]

    members, reference = kinds[REPORTED_ONLY]
    assert members.tolist() == [True, True, False, False, False, False, False]
    assert reference.tolist() == [False, False, True, True, False, False, False]

    members, reference = kinds["artefact: sky_subtraction_failure"]
    assert members.tolist() == [False, False, False, False, False, True, False]
    assert reference.tolist() == [False, False, True, True, False, False, False]
    assert kinds["star"][0].tolist() == [False, False, False, False, True, False, False]
    assert kinds["galaxy"][0].tolist() == [False] * 6 + [True]
    assert set(kinds) == {"star", "galaxy", "BAL quasar, troughs on the spectrum (1.57 <= z "
                          "<= 5.6)", REPORTED_ONLY,
                          "artefact: sky_subtraction_failure"}
