"""The noise-aware anomaly scores: known answers on generated data (qsocube.core.anomaly)."""

from __future__ import annotations

import json

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


def _codes(rng, w, x_hat):
    """Codes that spread wider the fainter the spectrum, as an encoder's do, so that the
    density statistic drifts with S/N, and redshifts the codes' first dimension tells."""
    truth = rng.standard_normal((len(w), 3))
    z = np.exp(0.8 + 0.3 * truth[:, 0] + 0.03 * rng.standard_normal(len(w))) - 1
    widen = 1 + 1 / anomaly.snr(w, x_hat)
    return truth * widen[:, None], np.full((len(w), 3), np.log(0.01)), z


def _population(rng, n, sn):
    x, w, x_hat = _spectra(rng, n=n, sn=sn)
    return (x, w, x_hat, *_codes(rng, w, x_hat))


def test_ladder_calibration_holds_at_every_sn_even_when_the_statistics_drift():
    rng = np.random.default_rng(5)
    bright = _population(rng, 2000, 100.0)
    mixture, scale = anomaly.fit_latent_mixture(bright[3], bright[5], k=2)
    assert mixture.means.shape == (2, 4) and scale == pytest.approx(0.3, rel=0.1)
    scatter = anomaly.fit_scatter(*_spectra(rng, n=2000, sn=10.0))
    # As training does: bright reference spectra degraded to each rung, many of them. The
    # scores of 3,000 new spectra must then be uniform to within the reference tables' own
    # sampling error and the interpolation between rungs: the CDF within 0.04 everywhere
    # (KS distance) and 1% +- 0.5% of them above 0.99.
    x, w, x_hat = _spectra(rng, n=8000, sn=100.0)
    rungs = []
    for target in (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0):
        xd, wd = anomaly.degrade(x, w, target, rng, anomaly.snr(w, x_hat))
        rungs.append((xd, wd, x_hat, *_codes(rng, wd, x_hat)))
    model = anomaly.AnomalyModel.from_json(
        anomaly.calibrate(scatter, mixture, rungs, scale).to_json())
    assert np.all(np.diff(model.sn_nodes) > 0) and model.recon_quantiles.shape == (12, 1001)
    assert model.redshift_scale == scale and model.redshift_quantiles.shape == (12, 1001)
    for sn in (2.0, 5.0, 10.0, 30.0):  # new spectra, made at a fixed noise level
        population = _population(rng, 3000, sn)
        scores = anomaly.score(model, *population)
        without_z = anomaly.score(model, *population[:5])  # the other parts' table
        assert np.isnan(without_z.redshift).all()
        for name, part in (("recon", scores.recon), ("density", scores.density),
                           ("redshift", scores.redshift), ("combined", scores.combined),
                           ("combined without z", without_z.combined)):
            assert stats.kstest(part, "uniform").statistic < 0.04, (sn, name)
            assert (part > 0.99).mean() == pytest.approx(0.01, abs=0.005), (sn, name)
    x, w, x_hat, mu, logvar, z = _population(rng, 3000, 5.0)
    x[:, 100:140] += 1.0  # a feature the model does not have
    assert np.mean(anomaly.score(model, x, w, x_hat, mu, logvar, z).combined > 0.99) > 0.95
    # a catalogue redshift the code does not tell: the redshift part finds it (the code's
    # first dimension sets ln(1 + z) to +-0.03, and these are 0.3 off: ten sigma)
    x, w, x_hat, mu, logvar, z = _population(rng, 3000, 10.0)
    wrong = np.expm1(np.log1p(z) + 0.3)
    misidentified = anomaly.score(model, x, w, x_hat, mu, logvar, wrong)
    assert np.mean(misidentified.redshift > 0.99) > 0.95
    assert np.mean(misidentified.combined > 0.99) > 0.9
    one_rung = anomaly.calibrate(scatter, mixture, rungs[7:8], scale)  # one S/N for all
    faint = anomaly.score(one_rung, *_population(rng, 3000, 2.0))
    assert not 0.005 <= (faint.combined > 0.99).mean() <= 0.015


def test_a_model_from_before_the_redshift_part_still_scores():
    """An anomaly model written without the redshift part (release 0.4) reads, and scores
    with the two parts it has."""
    rng = np.random.default_rng(6)
    codes = rng.standard_normal((2000, 3))
    mixture = anomaly.fit_mixture(codes, k=2)
    scatter = anomaly.fit_scatter(*_spectra(rng, n=2000, sn=10.0))
    rungs = [(*_spectra(rng, n=1000, sn=sn), rng.standard_normal((1000, 3)),
              np.full((1000, 3), np.log(0.01)), None) for sn in (3.0, 10.0)]
    body = json.loads(anomaly.calibrate(scatter, mixture, rungs).to_json())
    for key in ("redshift_scale", "redshift_quantiles", "combined_redshift_quantiles"):
        del body[key]
    model = anomaly.AnomalyModel.from_json(json.dumps(body))
    x, w, x_hat = _spectra(rng, n=500, sn=5.0)
    scores = anomaly.score(model, x, w, x_hat, rng.standard_normal((500, 3)),
                           np.full((500, 3), np.log(0.01)), np.full(500, 2.0))
    assert np.isnan(scores.redshift).all() and np.isfinite(scores.combined).all()
