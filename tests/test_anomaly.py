"""The noise-aware anomaly scores: known answers on generated data (qsocube.core.anomaly)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from qsocube.core import anomaly


def _spectra(rng, n=2000, n_pix=300, a=0.02, b=0.1, sn=20.0):
    x_hat = 1 + 0.5 * np.sin(np.linspace(0, 12, n_pix))[None, :] * rng.uniform(0.5, 1.5, (n, 1))
    w = np.full((n, n_pix), sn**2, np.float32)
    w[:, :10] = 0  # masked pixels are ignored
    sigma = np.sqrt(1 / sn**2 + a**2 + (b * x_hat) ** 2)
    x = x_hat + sigma * rng.standard_normal(x_hat.shape)
    return x.astype(np.float32), w, x_hat.astype(np.float32)


def test_scatter_recovers_the_model_error_it_was_made_with():
    x, w, x_hat = _spectra(np.random.default_rng(0))
    a, b = anomaly.fit_scatter(x, w, x_hat)
    assert np.median(a[10:]) == pytest.approx(0.02, abs=0.01)
    assert np.median(b[10:]) == pytest.approx(0.1, rel=0.1)
    assert np.all(a[:10] == 0) and np.all(b[:10] == 0)  # no valid spectrum there


def test_recon_statistic_is_standard_normal_at_every_sn_once_the_scatter_is_known():
    rng = np.random.default_rng(1)
    naive_median = {}
    for sn in (2.0, 10.0, 50.0):
        x, w, x_hat = _spectra(rng, n=3000, sn=sn)
        t = anomaly.recon_statistic(x, w, x_hat, np.full(300, 0.02, np.float32),
                                    np.full(300, 0.1, np.float32))
        assert abs(np.mean(t)) < 0.1 and np.std(t) == pytest.approx(1.0, abs=0.1)
        naive = anomaly.recon_statistic(x, w, x_hat, np.zeros(300, np.float32),
                                        np.zeros(300, np.float32))
        naive_median[sn] = np.median(naive)
    # ignoring the model's own error, the brighter a normal spectrum the odder it looks
    assert naive_median[2.0] < 3 < naive_median[10.0] < naive_median[50.0]


def test_mixture_finds_two_separated_clusters_and_scores_their_gap():
    rng = np.random.default_rng(2)
    codes = np.vstack([rng.normal(-3, 0.5, (1000, 2)), rng.normal(3, 0.5, (1000, 2))])
    mixture = anomaly.fit_mixture(codes, k=2)
    assert sorted(np.round(mixture.means[:, 0])) == [-3, 3]
    assert mixture.weights == pytest.approx([0.5, 0.5], abs=0.05)
    tight = np.full((3, 2), np.log(1e-6))
    d = anomaly.density_statistic(np.array([[-3, -3], [0, 0], [3, 3]]), tight, mixture)
    assert d[1] > d[0] + 10 and d[1] > d[2] + 10
    # an uncertain code in the gap is less of an outlier than a certain one
    wide = anomaly.density_statistic(np.array([[0.0, 0.0]]), np.full((1, 2), np.log(9.0)),
                                     mixture)
    assert wide[0] < d[1] - 5


def test_degrade_reaches_the_target_sn():
    x, w, _ = _spectra(np.random.default_rng(3), n=200, sn=40.0)
    noisy, w2 = anomaly.degrade(x, w, 5.0, np.random.default_rng(4))
    valid = w2 > 0
    sn = np.median(np.where(valid, noisy * np.sqrt(w2), np.nan)[:, 10:], axis=1)
    assert np.median(sn) == pytest.approx(5.0, rel=0.1)
    assert np.array_equal(valid, w > 0)


def test_calibrated_scores_are_uniform_on_new_normal_spectra_and_survive_json():
    rng = np.random.default_rng(5)
    x, w, x_hat = _spectra(rng, n=4000)
    mu = rng.standard_normal((4000, 3))
    logvar = np.full((4000, 3), np.log(0.01))
    mixture = anomaly.fit_mixture(mu[:2000], k=2)
    model = anomaly.calibrate(x, w, x_hat, mu, logvar, np.arange(1000), mixture)
    model = anomaly.AnomalyModel.from_json(model.to_json())
    x2, w2, x_hat2 = _spectra(np.random.default_rng(6), n=3000, sn=5.0)
    scores = anomaly.score(model, x2, w2, x_hat2, rng.standard_normal((3000, 3)),
                           np.full((3000, 3), np.log(0.01)))
    for part in (scores.recon, scores.density, scores.combined):
        assert stats.kstest(part, "uniform").pvalue > 0.01
        assert (part > 0.99).mean() == pytest.approx(0.01, abs=0.006)
    odd = x2.copy()
    odd[:, 100:140] += 1.0  # a feature the model does not have
    bad = anomaly.score(model, odd, w2, x_hat2, rng.standard_normal((3000, 3)),
                        np.full((3000, 3), np.log(0.01)))
    assert np.mean(bad.combined > 0.99) > 0.95
