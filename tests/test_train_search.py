"""Training loop and lambda search: determinism, early stopping, resume, split isolation."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("skopt")

from fixtures.synthetic_cube import write_synthetic_cube  # noqa: E402

from qsocube.builder.train.data import cap_weights, load_cube  # noqa: E402
from qsocube.builder.train.fit import FitConfig, fit, set_threads  # noqa: E402
from qsocube.builder.train.search import SearchConfig, chosen_model, run_search  # noqa: E402
from qsocube.builder.train.state import state_path  # noqa: E402
from qsocube.core.grid import WavelengthGrid  # noqa: E402

GRID = WavelengthGrid(n_pix=120)
HIDDEN = (32, 16)


@pytest.fixture(scope="module")
def cube(tmp_path_factory) -> Path:
    set_threads(1)
    return write_synthetic_cube(tmp_path_factory.mktemp("cube") / "qsocube.h5", 200, GRID, seed=3)


@pytest.fixture(scope="module")
def data(cube):
    return load_cube(cube)


def _parts(data):
    w = cap_weights(data.w, data.x)
    train, val = data.rows(0), data.rows(1)
    return data.x[train], w[train], data.x[val], w[val]


def _config(**changes) -> FitConfig:
    return replace(FitConfig(latent_size=3, lam=10.0, hidden=HIDDEN, batch_size=32,
                             max_epochs=6), **changes)


def test_same_configuration_gives_the_same_model_bit_for_bit(data):
    first = fit(*_parts(data), _config())
    second = fit(*_parts(data), _config())
    other = fit(*_parts(data), _config(seed=1))
    a, b = first.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert first.history == second.history
    assert not torch.equal(a["encoder.0.weight"], other.model.state_dict()["encoder.0.weight"])


def test_training_lowers_the_validation_loss(data):
    result = fit(*_parts(data), _config(max_epochs=8))
    assert min(result.history["val_loss"]) < 0.9 * result.history["val_loss"][0]
    i = result.best_epoch - 1
    assert result.history["val_loss"][i] == min(result.history["val_loss"])


def test_early_stopping_when_validation_loss_stops_improving(data):
    # with a zero learning rate nothing changes: epoch 1 stays best, patience 2 -> 3 epochs
    result = fit(*_parts(data), _config(lr=0.0, patience=2, max_epochs=20))
    assert (result.stopped, result.epochs, result.best_epoch) == ("early_stopping", 3, 1)


def test_history_records_comparable_median_mse_with_an_extreme_training_spectrum(data):
    # one training spectrum with a near-zero median flux: x = flux / norm reaches ~1e3
    tx, tw, vx, vw = _parts(data)
    tx = tx.copy()
    tx[0] *= 1000.0
    tw = tw.copy()
    tw[0] = cap_weights(data.w[data.rows(0)[0]] / 1000.0**2, tx[0])
    result = fit(tx, tw, vx, vw, _config(max_epochs=3))
    history = result.history
    for key in ("train_mse_median", "val_mse_median"):
        assert len(history[key]) == result.epochs and all(np.isfinite(history[key]))
    for epoch in range(result.epochs):
        train_mean, val_mean = history["train_mse"][epoch], history["val_mse"][epoch]
        train_median = history["train_mse_median"][epoch]
        val_median = history["val_mse_median"][epoch]
        assert train_mean > 100 * val_mean  # the one spectrum dominates the mean...
        assert 0.2 < train_median / val_median < 5  # ...not the median of either split
        assert val_median <= val_mean


def _search(data, folder: Path, n_calls: int, progress=None):
    config = SearchConfig(latent_size=3, n_calls=n_calls, max_epochs=3, batch_size=32,
                          hidden=HIDDEN)
    return config, run_search(data, config, folder, "cafe" * 16, progress)


def _key(calls):
    return [(c["log10_lambda"], c["objective"], c["epochs"]) for c in calls]


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
    """An uninterrupted three-call search: what every resumed search must reproduce."""
    folder = tmp_path_factory.mktemp("straight")
    config, state = _search(data, folder, 3)
    return folder, config, state


def test_search_records_every_call_within_the_range(straight):
    folder, _, state = straight
    saved = json.loads(state_path(folder, 3).read_text())
    assert len(saved["calls"]) == 3 and _key(saved["calls"]) == _key(state.calls)
    for call in saved["calls"]:
        assert -1.0 <= call["log10_lambda"] <= 4.0
        assert call["lambda"] == pytest.approx(10 ** call["log10_lambda"])
        assert len(call["history"]["val_loss"]) == call["epochs"]
    assert len({c["log10_lambda"] for c in saved["calls"]}) == 3


def test_interrupted_search_resumes_at_the_next_call(data, straight, tmp_path):
    def interrupt(message: str) -> None:
        if message.startswith("latent 03 call 3/3") and "epoch" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _search(data, tmp_path, 3, interrupt)
    saved = json.loads(state_path(tmp_path, 3).read_text())
    assert len(saved["calls"]) == 2  # checkpointed after every finished call
    assert _key(saved["calls"]) == _key(straight[2].calls[:2])
    seen: list[str] = []
    _, resumed = _search(data, tmp_path, 3, seen.append)
    assert _key(resumed.calls) == _key(straight[2].calls)
    assert not any("call 1/3" in m or "call 2/3" in m for m in seen)  # not retrained


def test_more_calls_extend_the_same_search(data, straight, tmp_path):
    _search(data, tmp_path, 2)
    seen: list[str] = []
    _, extended = _search(data, tmp_path, 3, seen.append)
    assert _key(extended.calls) == _key(straight[2].calls)
    assert [m for m in seen if "objective" in m] and all("call 3/3" in m for m in seen)


def test_changed_settings_start_a_new_search(data, straight, tmp_path):
    folder = tmp_path / "state"
    shutil.copytree(straight[0], folder)
    seen: list[str] = []
    config = SearchConfig(latent_size=3, n_calls=1, max_epochs=2, batch_size=32, hidden=HIDDEN)
    state = run_search(data, config, folder, "cafe" * 16, seen.append)
    assert "starting a new search" in seen[0] and len(state.calls) == 1


def test_chosen_model_from_checkpoint_equals_retrained(data, straight, tmp_path):
    folder, config, state = straight
    from_checkpoint, record = chosen_model(data, config, state, folder)
    assert record["objective"] == min(c["objective"] for c in state.calls)
    retrained, _ = chosen_model(data, config, state, tmp_path)  # no checkpoint there
    a, b = from_checkpoint.state_dict(), retrained.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_test_spectra_never_influence_the_search(cube, straight, tmp_path):
    altered = tmp_path / "altered.h5"
    shutil.copyfile(cube, altered)
    with h5py.File(altered, "r+") as f:
        test = np.flatnonzero(f["split"][...] == 2)
        assert test.size
        flux = f["flux"][...]
        flux[test] *= np.random.default_rng(0).uniform(0.2, 5.0, flux[test].shape)
        f["flux"][...] = flux
    _, changed = _search(load_cube(altered), tmp_path / "b", 2)
    assert _key(changed.calls) == _key(straight[2].calls[:2])
