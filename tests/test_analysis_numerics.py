"""The analysis's pure functions: associations, catalogue column handling, sample choice."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from qsocube.analysis.associations import (
    MIN_SPECTRA,
    association_table,
    average_ranks,
    information_coefficient,
    mutual_information,
    spearman,
)
from qsocube.analysis.columns import make_column, reduce_array, transform
from qsocube.analysis.figures_common import bin_index, binned_mean
from qsocube.analysis.figures_spectra import pick_across_range, top_anomalies
from qsocube.analysis.vac import NO_RANK, anomaly_rank


def test_average_ranks_match_scipy_with_ties():
    rng = np.random.default_rng(3)
    values = np.round(rng.normal(size=(500, 7)), 1)  # many ties
    assert np.array_equal(average_ranks(values), stats.rankdata(values, axis=0))
    assert np.array_equal(average_ranks(values[:, 2]), stats.rankdata(values[:, 2]))


def test_spearman_matches_scipy():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 4))
    y = np.round(x[:, 1] * 2 + rng.normal(size=300), 0)  # ties in y
    rho, p = spearman(x, y)
    for k in range(4):
        ref = stats.spearmanr(x[:, k], y)
        assert rho[k] == pytest.approx(ref.statistic, abs=1e-12)
        assert p[k] == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-300)


def test_mutual_information_known_answers():
    rng = np.random.default_rng(5)
    n, r = 20000, 0.8
    x = rng.normal(size=n)
    y = r * x + np.sqrt(1 - r**2) * rng.normal(size=n)
    independent = rng.normal(size=n)
    mi = mutual_information(np.column_stack([x, independent]), y)
    exact = -0.5 * np.log(1 - r**2)  # Gaussian pair: 0.511 nats
    assert mi[0] == pytest.approx(exact, rel=0.1)
    assert mi[1] < 0.01
    assert information_coefficient(mi)[0] == pytest.approx(r, abs=0.03)
    # a non-monotonic relation: rank correlation misses it, mutual information does not
    rho, _ = spearman(x[:, None], x**2)
    assert abs(rho[0]) < 0.05
    assert mutual_information(x[:, None], x**2)[0] > 1.0


def test_association_table_handles_nan_constant_and_sparse_columns():
    rng = np.random.default_rng(6)
    n = 400
    latents = {3: rng.normal(size=(n, 3)), 6: rng.normal(size=(n, 6))}
    z = latents[6][:, 2] * 3 + rng.normal(0, 0.1, n)
    z[::4] = np.nan  # "not measured"
    sparse = np.full(n, np.nan)
    sparse[: MIN_SPECTRA - 1] = 1.0
    table = association_table(latents, {"Z": z, "CONST": np.ones(n), "SPARSE": sparse})
    assert table.rho.shape == table.mi.shape == (9, 3)
    assert table.rows[:4] == [(3, 0), (3, 1), (3, 2), (6, 0)]
    assert list(table.n) == [300, n, MIN_SPECTRA - 1]
    assert table.strongest("Z")[:2] == (6, 2)
    assert table.strongest("Z", latent_size=6)[2] > 0.95
    keep = np.isfinite(z)
    assert table.rho[5, 0] == pytest.approx(stats.spearmanr(latents[6][keep, 2],
                                                            z[keep]).statistic)
    assert np.isnan(table.rho[:, 1:]).all() and np.isnan(table.mi[:, 1:]).all()
    records = table.records()
    assert len(records) == 27 and set(records[0]) >= {"latent_size", "dimension", "column",
                                                      "spearman_rho", "mutual_info_nats"}


def test_dla_arrays_reduce_to_the_strongest_absorber():
    nhi = np.array([[20.5, 21.3, np.nan, np.nan, np.nan],
                    [np.nan] * 5,
                    [20.1, np.nan, np.nan, np.nan, np.nan]])
    assert np.array_equal(reduce_array("NHI_DLA", nhi), [21.3, np.nan, 20.1], equal_nan=True)
    column = make_column("NHI_DLA", xr.DataArray(nhi, dims=("spectrum", "dla"),
                                                 attrs={"units": "log(cm-2)"}))
    assert (column.n_measured, column.n_missing) == (2, 1)
    assert "five DLA slots" in column.exclusion_text()
    assert "1 of 3 spectra have no measurement" in column.exclusion_text()


def test_fluxes_go_on_a_log_scale_and_count_what_a_log_cannot_show():
    values, dropped = transform(np.array([1e-14, 1e-12, np.nan, 0.0]), "log10")
    assert np.allclose(values[:2], [-14, -12]) and np.isnan(values[2:]).all() and dropped == 1
    bi, dropped = transform(np.array([0.0, 99.0, np.nan]), "log10(1+x)")
    assert np.allclose(bi[:2], [0, 2]) and dropped == 0
    flux = make_column("XMM_SOFT_FLUX", xr.DataArray(np.array([1e-14, np.nan, np.nan]),
                                                     dims="spectrum",
                                                     attrs={"units": "erg s-1 cm-2"}))
    assert flux.transform == "log10" and flux.label.startswith("log")
    assert "erg" in flux.label
    empty = make_column("XMM_HARD_FLUX", xr.DataArray(np.full(4, np.nan), dims="spectrum"))
    assert empty.n_measured == 0 and "Nothing is measured" in empty.exclusion_text()


def test_binned_mean_is_the_mean_per_cell():
    x = np.array([0.1, 0.1, 0.9, 0.5])
    y = np.array([0.1, 0.1, 0.9, 5.0])  # the last one lies outside the limits
    v = np.array([1.0, 3.0, 10.0, 100.0])
    grid = binned_mean(bin_index(x, (0, 1), 2), bin_index(y, (0, 1), 2), v, 2)
    assert grid[0, 0] == 2.0 and grid[1, 1] == 10.0
    assert np.isnan(grid[0, 1]) and np.isnan(grid[1, 0])


def test_samples_span_the_error_range_reproducibly():
    mse = np.array([5.0, 1.0, np.nan, 3.0, 2.0, 4.0, 0.5, 6.0])
    candidates = np.ones(8, bool)
    rows = pick_across_range(mse, candidates, quantiles=(0.0, 0.5, 1.0))
    assert list(rows) == [6, 3, 7]  # smallest, median, largest MSE
    assert list(pick_across_range(mse, candidates, (0.0, 0.5, 1.0))) == list(rows)
    assert pick_across_range(mse, np.zeros(8, bool)).size == 0


def test_outliers_and_ranks_order_by_score_then_error():
    score = np.array([0.5, 0.99, np.nan, 0.99, 0.1])
    mse = np.array([1.0, 2.0, 9.0, 3.0, 0.1])
    assert list(top_anomalies(score, mse, 3)) == [3, 1, 0]
    assert list(anomaly_rank(score, mse)) == [3, 2, NO_RANK, 1, 4]


def test_rejections_are_counted_by_code_or_by_text_without_codes():
    from qsocube.analysis.pipeline import rejection_kinds
    from qsocube.core.errors import Rejection

    codes = np.array([Rejection.low_snr, Rejection.low_coverage, Rejection.low_snr], np.uint8)
    texts = ["SN_MEDIAN_ALL 7.7 below 10", "covers 61% of the grid", "SN_MEDIAN_ALL 9.2 below 10"]
    assert rejection_kinds(codes, texts) == [("low_snr", 2), ("low_coverage", 1)]
    assert rejection_kinds(None, texts[:2]) == [(texts[0], 1), (texts[1], 1)]
    assert rejection_kinds(np.array([], np.uint8), []) == []


def test_the_report_states_the_simulators_mean_auc_when_recorded():
    from qsocube.analysis.report import simulation_section

    fidelity = {"real_held_out_encoded": 91, "two_sample": {"auc": 0.704}, "by_redshift": []}
    record = {"generator": "survey", "counts": {}, "fidelity": fidelity}
    alone = simulation_section(record)
    assert "0.704" in alone and "fresh surveys" not in alone
    fidelity["two_sample_fresh_surveys"] = {"n_quasars": 5000, "mean_auc": 0.714,
                                            "sd_auc": 0.021, "surveys": [{}] * 6}
    both = simulation_section(record)
    assert "on 6 fresh surveys of 5000 quasars" in both and "0.714 &plusmn; 0.021" in both
    assert "No fidelity figures" in simulation_section({"generator": "survey"})
