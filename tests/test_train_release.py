"""End to end: train_release on a small synthetic cube, then everything it promises."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("skopt")

from fixtures.synthetic_cube import write_synthetic_cube  # noqa: E402

from qsocube.builder.train import train_release  # noqa: E402
from qsocube.builder.train.data import CubeError, load_cube  # noqa: E402
from qsocube.builder.train.export import check_onnx, metadata_of, onnx_outputs  # noqa: E402
from qsocube.builder.train.model import InfoVAE  # noqa: E402
from qsocube.builder.train.search import SearchConfig  # noqa: E402
from qsocube.builder.train.state import checkpoint_path, load_checkpoint  # noqa: E402
from qsocube.core import anomaly  # noqa: E402
from qsocube.core.cube import file_sha256, model_input_from_cube  # noqa: E402
from qsocube.core.metrics import reconstruction_metrics  # noqa: E402
from qsocube.core.preprocess import NORMALISATION, encoder_input  # noqa: E402

SIZES = (3, 6, 9, 12, 15)
BUDGET = {"n_calls": 2, "max_epochs": 3, "batch_size": 64}
CONTRACT_KEYS = {"product_version", "schema_version", "role", "partner", "latent_size",
                 "lambda", "alpha", "grid", "grid_sha256", "normalisation",
                 "resampling_method", "input_layout", "cube_sha256"}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    folder = tmp_path_factory.mktemp("release")
    cube = write_synthetic_cube(folder / "qsocube.h5", 240, seed=5)
    built = folder / "built.h5"
    shutil.copyfile(cube, built)
    messages: list[str] = []
    summary = train_release(cube, folder / "models", folder / ".state", latent_sizes=SIZES,
                            processes=1, progress=messages.append, **BUDGET)
    return {"folder": folder, "cube": cube, "built": built, "summary": summary,
            "messages": messages}


def _model(release, size: int) -> InfoVAE:
    model = InfoVAE(1500, size)
    assert load_checkpoint(checkpoint_path(release["folder"] / ".state", size), model) is not None
    return model.eval()


def test_release_cube_validates_with_five_groups_and_ten_onnx_files(release):
    from qsocube.core.validate import check_cube

    assert check_cube(release["cube"], release["folder"] / "models") == []
    with h5py.File(release["cube"], "r") as cube:
        assert sorted(cube["models"]) == [f"latent_{s:02d}" for s in SIZES]
        group = cube["models/latent_06"]
        assert group["latent_mean"].shape == (240, 6) and group["latent"][...].tolist() == [
            *range(6)]
        assert group.attrs["encoder_onnx"] == "infovae_latent06_encoder.onnx"
        assert "negative ELBO" in group.attrs["objective_definition"]
    assert len(list((release["folder"] / "models").glob("*.onnx"))) == 10
    assert "Training finished" in release["messages"][-1]


def test_trained_on_sha_is_the_cube_as_built(release):
    built = file_sha256(release["built"])
    assert file_sha256(release["cube"]) != built  # write-back changed the file...
    with h5py.File(release["cube"], "r") as cube:
        recorded = {cube[f"models/{g}"].attrs["trained_on_cube_sha256"] for g in cube["models"]}
    assert recorded == {built}  # ...but every group names the cube it was trained on
    meta = metadata_of(release["folder"] / "models" / "infovae_latent03_decoder.onnx")
    assert meta["cube_sha256"] == built


def test_written_codes_and_metrics_match_the_onnx_models(release):
    models = release["folder"] / "models"
    with h5py.File(release["cube"], "r") as cube:
        x, w = model_input_from_cube(cube)
        group = cube["models/latent_09"]
        mu, mse, chi2 = group["latent_mean"][...], group["recon_mse"][...], group["recon_chi2"][...]
        logvar, pca = group["latent_logvar"][...], group["pca_mse"][...]
        written = [group[k][...] for k in ("recon_score", "density_score", "redshift_score",
                                           "anomaly_score")]
        anomaly_file = group.attrs["anomaly_model"]
        z = cube["catalog/Z"][...]
    o_mu, _ = onnx_outputs(models / "infovae_latent09_encoder.onnx", encoder_input(x))
    (x_hat,) = onnx_outputs(models / "infovae_latent09_decoder.onnx", o_mu)
    np.testing.assert_allclose(o_mu, mu, atol=1e-5)
    expected_mse, expected_chi2 = reconstruction_metrics(x, w, x_hat, 9)
    np.testing.assert_allclose(mse, expected_mse, rtol=1e-4)
    np.testing.assert_allclose(chi2, expected_chi2, rtol=1e-4)
    meta = metadata_of(models / "infovae_latent09_encoder.onnx")
    assert meta["anomaly_model"] == anomaly_file == "infovae_latent09_anomaly.json"
    assert meta["anomaly_sha256"] == file_sha256(models / anomaly_file)
    model = anomaly.AnomalyModel.read(models / anomaly_file)
    assert model.mixture.means.shape[1] == 10 and model.redshift_scale > 0
    scores = anomaly.score(model, x, w, x_hat, mu, logvar, z)
    for got, want in zip(written[:3], (scores.recon, scores.density, scores.redshift),
                         strict=True):
        # ONNX against torch reconstructions: equal, but for a spectrum sitting on the last
        # of the few dozen reference quantiles, where a 1e-7 difference is a step
        assert np.mean(np.abs(got - want) > 1e-4) <= 0.01
    # the combination of the written parts (all three: every spectrum has a redshift), on
    # the S/N ladder
    combined = anomaly.ladder_fraction(anomaly.fisher(*written[:3]), anomaly.snr(w, x_hat),
                                       model.sn_nodes, model.combined_redshift_quantiles)
    assert np.mean(np.abs(written[3] - combined) > 1e-4) <= 0.01
    assert all(np.isfinite(s).all() and ((s >= 0) & (s <= 1)).all() for s in written)
    assert np.isfinite(pca).all() and (pca > 0).all()


def test_search_and_history_are_in_the_cube(release):
    state = json.loads((release["folder"] / ".state" / "train_latent12.json").read_text())
    with h5py.File(release["cube"], "r") as cube:
        group = cube["models/latent_12"]
        search, history = group["search"], group["history"]
        assert search["call"][...].tolist() == [0, 1]
        np.testing.assert_allclose(search["lambda"][...], [c["lambda"] for c in state["calls"]])
        assert group.attrs["objective"] == np.min(search["objective"][...])
        best = int(np.argmin(search["objective"][...]))
        assert group.attrs["lambda"] == search["lambda"][best]
        assert len(history["epoch"]) == search["epochs"][best]
        np.testing.assert_allclose(history["val_loss"][...],
                                   state["calls"][best]["history"]["val_loss"])
        assert json.loads(group.attrs["train_config"])["max_epochs"] == BUDGET["max_epochs"]
        record = state["calls"][best]
        assert history.attrs["best_epoch"] == record["best_epoch"]
        assert history.attrs["stopped"] == record["stopped"]
        for name in ("train_mse_median", "val_mse_median"):
            np.testing.assert_allclose(history[name][...], record["history"][name])
            assert history[name].attrs["long_name"].startswith("median over")
            assert history[name].dims[0][0].name.endswith("/epoch")
        assert history["val_mse"].attrs["long_name"].startswith("mean over")


def test_schema_lists_every_attribute_the_trainer_writes(release):
    from qsocube.core.cube import schema_group

    with h5py.File(release["cube"], "r") as cube:
        for path in ("/models/latent_06", "/models/latent_06/history"):
            spec = schema_group(path)
            listed = set(spec.get("attributes", [])) | set(spec.get("optional_attributes", []))
            written = {k for k in cube[path].attrs if not k.startswith(("DIMENSION_", "_"))}
            assert written == listed, path
            assert set(spec["attribute_descriptions"]) == listed, path


def test_history_without_medians_still_validates(release, tmp_path):
    # a group finished from a search call recorded before the medians existed
    import qsocube.builder.train.writeback as writeback
    from qsocube.core.validate import check_cube

    cube = tmp_path / "qsocube.h5"
    shutil.copyfile(release["cube"], cube)
    with h5py.File(cube, "r") as reader:
        group = reader["models/latent_03"]
        arrays = {k: group[k][...] for k in writeback.GROUP_VARIABLES}
        attrs = dict(group.attrs)
        search = {k: group["search"][k][...] for k in writeback.SEARCH_VARIABLES}
        old = [k for k in writeback.HISTORY_VARIABLES
               if k not in writeback.OPTIONAL_HISTORY_VARIABLES]
        history = {k: group["history"][k][...] for k in old}
    writeback.write_model_group(cube, 3, arrays, attrs, search, history)
    with h5py.File(cube, "r") as written:
        assert "val_mse_median" not in written["models/latent_03/history"]
    assert check_cube(cube, release["folder"] / "models") == []
    with h5py.File(cube, "r+") as broken:  # a required history variable is still required
        del broken["models/latent_03/history/val_mse"]
    assert any("history/val_mse: missing" in p
               for p in check_cube(cube, release["folder"] / "models"))


def test_cube_opens_as_a_datatree_with_named_dimensions(release):
    xr = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    tree = xr.open_datatree(release["cube"], engine="h5netcdf")
    node = tree["models/latent_06"]
    assert node["latent_mean"].dims == ("spectrum", "latent")
    assert tree["models/latent_06/search"]["objective"].dims == ("call",)
    tree.close()


def test_onnx_files_are_checked_self_contained_and_described(release):
    models = release["folder"] / "models"
    for path in models.glob("*.onnx"):
        model = check_onnx(path)
        assert model.opset_import[0].version == 18
    meta = metadata_of(models / "infovae_latent06_encoder.onnx")
    assert CONTRACT_KEYS <= set(meta) and "anomaly_model" in meta
    assert "train_recon_mse_quantiles" not in meta
    assert (meta["role"], meta["partner"]) == ("encoder", "infovae_latent06_decoder.onnx")
    assert meta["latent_size"] == "6" and meta["normalisation"] == NORMALISATION
    layout = json.loads(meta["input_layout"])
    assert layout["input"] == "u" and layout["shape"] == ["batch", 1500]
    graph = check_onnx(models / "infovae_latent06_encoder.onnx").graph
    assert [i.name for i in graph.input] == ["u"]
    assert "Asinh" not in {node.op_type for node in graph.node}  # computed by numpy instead
    decoder = metadata_of(models / "infovae_latent06_decoder.onnx")
    assert decoder["role"] == "decoder" and decoder["lambda"] == meta["lambda"]


def _parity(release, size: int, x: np.ndarray) -> float:
    models, model = release["folder"] / "models", _model(release, size)
    worst = 0.0
    for batch in (x[:1], x[:64]):
        o_mu, o_logvar = onnx_outputs(models / f"infovae_latent{size:02d}_encoder.onnx",
                                      encoder_input(batch))
        (o_x,) = onnx_outputs(models / f"infovae_latent{size:02d}_decoder.onnx", o_mu)
        assert o_mu.shape == (len(batch), size)
        with torch.no_grad():
            mu, logvar = model.encode(torch.from_numpy(batch))
            x_hat = model.decode(torch.from_numpy(o_mu))
        for ours, theirs in ((o_mu, mu), (o_logvar, logvar), (o_x, x_hat)):
            worst = max(worst, float(np.abs(ours - theirs.numpy()).max()))
    return worst


def test_onnx_matches_torch_on_simulated_spectra(release):
    x = load_cube(release["cube"]).x
    for size in SIZES:
        assert _parity(release, size, x) <= 1e-5


def test_onnx_matches_torch_on_real_spectra(release, real_spectra):
    from qsocube.core.grid import DEFAULT_GRID
    from qsocube.core.prepare import prepare
    from qsocube.core.preprocess import model_input
    from qsocube.core.speclite import read_spec_lite

    spectra = [read_spec_lite(p) for p in sorted(real_spectra.glob("spec-*.fits*"))[:64]]
    prepared = prepare(spectra, DEFAULT_GRID)
    x, _ = model_input(prepared.flux, prepared.ivar, prepared.mask, prepared.norm)
    assert len(x) == 64 and np.isfinite(x).all()
    for size in (3, 15):
        assert _parity(release, size, x) <= 1e-5


def test_rerun_skips_finished_sizes_without_touching_the_cube(release):
    before = file_sha256(release["cube"])
    folder = release["folder"]
    summary = train_release(release["cube"], folder / "models", folder / ".state",
                            latent_sizes=SIZES, processes=1, progress=lambda _: None, **BUDGET)
    assert summary["skipped"] == list(SIZES) and summary["models"] == {}
    assert file_sha256(release["cube"]) == before


def test_failed_write_back_leaves_the_previous_cube(release, monkeypatch, tmp_path):
    import qsocube.builder.train.writeback as writeback

    cube = tmp_path / "qsocube.h5"
    shutil.copyfile(release["cube"], cube)
    before = file_sha256(cube)
    calls = []

    def failing(group, name, data, *args, **kwargs):
        calls.append(name)
        if name == "recon_chi2":
            raise OSError("disk full (simulated)")
        return original(group, name, data, *args, **kwargs)

    original = writeback.write_variable
    monkeypatch.setattr(writeback, "write_variable", failing)
    arrays = {k: np.zeros((240, 3) if k.startswith("latent_") else 240, np.float32)
              for k in writeback.GROUP_VARIABLES}
    with h5py.File(cube, "r") as reader, pytest.raises(OSError, match="disk full"):
        writeback.write_model_group(cube, 3, arrays, {}, {}, {})
    assert "recon_chi2" in calls and file_sha256(cube) == before
    assert not list(tmp_path.glob(".*partial"))
    # a reader holding the old file keeps it through a successful write-back
    monkeypatch.setattr(writeback, "write_variable", original)
    with h5py.File(cube, "r") as reader:
        old = reader["models/latent_03/latent_mean"][...]
        search = {k: np.zeros(1) for k in writeback.SEARCH_VARIABLES}
        history = {k: np.zeros(2) for k in writeback.HISTORY_VARIABLES}
        writeback.write_model_group(cube, 3, arrays, {"lambda": 1.0}, search, history)
        np.testing.assert_array_equal(reader["models/latent_03/latent_mean"][...], old)
    with h5py.File(cube, "r") as cube_file:
        assert (cube_file["models/latent_03/latent_mean"][...] == 0).all()
        assert sorted(cube_file["models"]) == [f"latent_{s:02d}" for s in SIZES]


def test_changed_budget_resumes_the_search_and_rewrites_the_group(release, tmp_path):
    folder = tmp_path / "r"
    shutil.copytree(release["folder"], folder)
    built = file_sha256(release["built"])
    messages: list[str] = []
    summary = train_release(folder / "qsocube.h5", folder / "models", folder / ".state",
                            latent_sizes=(3,), processes=1, progress=messages.append,
                            **{**BUDGET, "n_calls": 3})
    assert list(summary["models"]) == [3]
    assert [m for m in messages if "objective" in m and "call 3/3" in m]
    assert not [m for m in messages if "call 1/3" in m or "call 2/3" in m]  # replayed
    with h5py.File(folder / "qsocube.h5", "r") as cube:
        assert len(cube["models/latent_03/search/call"]) == 3
        assert cube["models/latent_03"].attrs["trained_on_cube_sha256"] == built


def test_bad_inputs_fail_with_one_line(tmp_path, capsys):
    from qsocube.cli import main

    assert main(["train", str(tmp_path / "missing.h5")]) == 2
    not_a_cube = tmp_path / "qsocube.h5"
    not_a_cube.write_text("hello")
    assert main(["train", str(not_a_cube), "--calls", "1"]) == 2
    assert main(["train", str(not_a_cube), "--calls", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and str(not_a_cube) in err[1] and "HDF5" in err[1]
    with pytest.raises(CubeError, match="no 'flux' variable"):
        with h5py.File(tmp_path / "empty.h5", "w"):
            pass
        load_cube(tmp_path / "empty.h5")


def test_search_config_round_trips_through_json():
    config = SearchConfig(6, 8, 40, hidden=(64, 32))
    assert SearchConfig.from_json(config.to_json()) == config


def test_the_profiles_dropout_and_batch_reach_the_search(release, tmp_path):
    from qsocube.cli import main
    from qsocube.core import defaults

    folder = tmp_path / "r"
    shutil.copytree(release["folder"], folder)
    cube = folder / "qsocube.h5"
    common = ["train", str(cube), "--profile", "default", "--calls", "1", "--max-epochs", "1",
              "--processes", "1"]
    assert main([*common, "--latent-sizes", "3"]) == 0
    assert main([*common, "--latent-sizes", "6", "--dropout", "0.1"]) == 0
    profile = defaults.training_budgets()["default"]
    with h5py.File(cube, "r") as written:
        config = {size: json.loads(written[f"models/latent_{size:02d}"].attrs["train_config"])
                  for size in (3, 6)}
    assert config[3]["batch_size"] == config[6]["batch_size"] == profile["batch_size"]
    assert config[3]["dropout"] == profile["dropout"] != 0.1
    assert config[6]["dropout"] == 0.1
    assert config[3]["decoder_dropout"] == profile["decoder_dropout"]
