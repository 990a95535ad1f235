"""The Dask paths of issue 6: the lambda search and the encoder on a LocalCluster give the
default paths' results, and parallel search calls (constant liar) resume exactly."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from qsocube.cli import main
from qsocube.core.cube import file_sha256
from qsocube.core.grid import WavelengthGrid

ROOT = Path(__file__).resolve().parents[1]
REAL_SPECTRA = ROOT.parent / "shared" / "data" / "sdss" / "spectra"
GRID = WavelengthGrid(n_pix=120)
HIDDEN = (32, 16)
SHA = "cafe" * 16


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                                  dashboard_address=None) as local:
        yield local


@pytest.fixture(scope="module")
def cube(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("skopt")
    from fixtures.synthetic_cube import write_synthetic_cube

    return write_synthetic_cube(tmp_path_factory.mktemp("cube") / "qsocube.h5", 200, GRID,
                                seed=3)


# ---------------------------------------------------------------- the lambda search

def _train(cube: Path, folder: Path, **options) -> dict:
    from qsocube.builder.train.pipeline import train_release

    folder.mkdir()
    shutil.copyfile(cube, folder / "qsocube.h5")
    messages: list[str] = []
    summary = train_release(folder / "qsocube.h5", folder / "models", folder / ".state",
                            latent_sizes=(3, 6), max_epochs=3, batch_size=32, hidden=HIDDEN,
                            progress=messages.append, **options)
    with h5py.File(folder / "qsocube.h5") as h5:
        arrays = {f"{group}/{name}": h5[f"models/{group}/{name}"][...]
                  for group in h5["models"]
                  for name in ("latent_mean", "recon_mse", "pca_mse", "search/lambda",
                               "search/objective", "search/epochs", "history/val_loss")}
    return {"lambda": {size: m["lambda"] for size, m in summary["models"].items()},
            "onnx": {p.name: file_sha256(p) for p in sorted((folder / "models").glob("*.onnx"))},
            "arrays": arrays, "workers": summary["workers"], "messages": messages}


@pytest.mark.parametrize("parallel_calls, n_calls", [(1, 2), (2, 3)])
def test_search_on_the_cluster_equals_the_default_path(cluster, cube, tmp_path,
                                                       parallel_calls, n_calls):
    budget = {"n_calls": n_calls, "parallel_calls": parallel_calls}
    default = _train(cube, tmp_path / "default", processes=1, **budget)
    dask = _train(cube, tmp_path / "dask", scheduler=cluster.scheduler_address, **budget)
    assert dask["lambda"] == default["lambda"] and len(default["lambda"]) == 2
    assert dask["onnx"] == default["onnx"] and len(default["onnx"]) == 4
    assert dask["arrays"].keys() == default["arrays"].keys()
    for name, values in default["arrays"].items():
        np.testing.assert_array_equal(dask["arrays"][name], values, err_msg=name)
    assert len(default["arrays"]["latent_03/search/lambda"]) == n_calls
    assert dask["workers"] == 2 and any("Dask cluster" in m for m in dask["messages"])
    if parallel_calls > 1:  # the local process pool, with two calls of a size at once
        pool = _train(cube, tmp_path / "pool", processes=2, **budget)
        assert pool["workers"] == 2 and pool["onnx"] == default["onnx"]
        for name, values in default["arrays"].items():
            np.testing.assert_array_equal(pool["arrays"][name], values, err_msg=name)


def test_parallel_calls_resume_extend_and_ignore_the_finishing_order(cube, tmp_path):
    from qsocube.builder.train.data import load_cube
    from qsocube.builder.train.fit import set_threads
    from qsocube.builder.train.search import (
        Search,
        SearchConfig,
        run_search,
        train_call,
        training_tensors,
    )

    set_threads(1)  # as the pipeline's serial path; two threads crawl on a busy machine
    data = load_cube(cube)

    def config(n_calls: int, k: int = 2) -> SearchConfig:
        # two space-filling calls, then the GP: batches [0, 1] and [2, 3] with k = 2
        return SearchConfig(latent_size=3, n_calls=n_calls, max_epochs=2, batch_size=32,
                            hidden=HIDDEN, n_initial_points=2, parallel_calls=k)

    def key(state) -> list:
        return [(c["call"], c["log10_lambda"], c["objective"], c["epochs"]) for c in state.calls]

    straight = key(run_search(data, config(4), tmp_path / "straight", SHA))
    sequential = key(run_search(data, config(4, 1), tmp_path / "k1", SHA))
    # the space-filling calls are shared; the GP's proposals differ by design
    assert straight[:2] == sequential[:2] and straight[2:] != sequential[2:]
    assert "parallel_calls" not in config(4, 1).identity(SHA)  # older states stay valid
    assert config(4).identity(SHA)["parallel_calls"] == 2

    def interrupt(message: str) -> None:  # in call 4 of 4: batch [2, 3] half recorded
        if message.startswith("latent 03 call 4/4") and "epoch" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_search(data, config(4), tmp_path / "resumed", SHA, interrupt)
    seen: list[str] = []
    resumed = run_search(data, config(4), tmp_path / "resumed", SHA, seen.append)
    assert key(resumed) == straight
    assert [m.split(" lambda")[0] for m in seen if "objective" in m] == ["latent 03 call 4/4"]

    run_search(data, config(3), tmp_path / "extended", SHA)  # cuts batch [2, 3] short
    assert key(run_search(data, config(4), tmp_path / "extended", SHA)) == straight

    search = Search(config(4), tmp_path / "reversed", SHA)  # batch-mates told last first
    tensors = training_tensors(data, search.config.sigma_floor)
    while search.can_ask:
        asked = [search.ask() for _ in range(2) if search.can_ask]
        assert len(asked) == 2 and search.in_flight == 2 and not search.can_ask
        results = [train_call(tensors, search.config, c, x, tmp_path / "reversed")
                   for c, x in asked]
        for summary, weights in reversed(results):
            search.tell(summary, weights)
    assert key(search.state) == straight


# ------------------------------------------------------------------------ encoding

@pytest.fixture(scope="module")
def encoding(tmp_path_factory) -> dict:
    """A fixture ONNX pair, real spectra (or fixture spectra), a broken file, grid arrays."""
    from test_inference_fixture import calibrated_pair, draw, write_spec_lite

    folder = tmp_path_factory.mktemp("encode")
    pair = calibrated_pair(folder / "models", np.random.default_rng(11), n_train=2000)
    if REAL_SPECTRA.is_dir():
        files = sorted(REAL_SPECTRA.glob("spec-*.fits"))[:30]
    else:  # the real data are absent: spectra drawn from the fixture model instead
        flux, _ = draw(np.random.default_rng(12), pair, 12)
        files = [write_spec_lite(folder / f"spec-7002-57001-{i + 1:04d}.fits", (3550, 10300),
                                 f, pair.grid, {"PLATE": 7002, "MJD": 57001, "FIBERID": i + 1})
                 for i, f in enumerate(flux)]
    (folder / "inputs").mkdir()
    (folder / "inputs" / "spec-7002-57001-0999.fits").write_bytes(b"\x00" * 3000)
    np.save(folder / "inputs" / "grid.npy", np.stack(draw(np.random.default_rng(13), pair, 9)))
    # the last two relative to ``folder``: their rows must be named as given
    return {"folder": folder, "pair": pair,
            "inputs": [*map(str, files), "inputs/spec-7002-57001-0999.fits", "inputs/grid.npy"]}


def _read(path: Path) -> tuple[dict, dict]:
    with h5py.File(path) as h5:
        arrays = {name: h5[name][...] for name in h5}
        attrs = {k: v for k, v in h5.attrs.items() if k != "created"}
    return arrays, attrs


def _assert_same(a: Path, b: Path) -> None:
    (arrays_a, attrs_a), (arrays_b, attrs_b) = _read(a), _read(b)
    assert arrays_a.keys() == arrays_b.keys() and attrs_a == attrs_b
    for name, values in arrays_a.items():
        np.testing.assert_array_equal(arrays_b[name], values, err_msg=name)


def test_encode_on_the_cluster_equals_serial(cluster, encoding, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(encoding["folder"])
    common = ["encode", "--model", str(encoding["pair"].encoder), "--batch-size", "7",
              *encoding["inputs"]]
    serial = ["--processes", "1", "--out", str(tmp_path / "serial.h5")]
    assert main([*common, *serial]) == 1  # one broken file
    assert main([*common, "--out", str(tmp_path / "dask.h5"),
                 "--scheduler", cluster.scheduler_address]) == 1
    err = capsys.readouterr().err
    assert "on 2 Dask worker(s), 2 thread(s)" in err
    _assert_same(tmp_path / "serial.h5", tmp_path / "dask.h5")
    arrays, _ = _read(tmp_path / "dask.h5")
    n = len(encoding["inputs"]) - 1 + 9  # the .npy holds 9 spectra
    assert len(arrays["FLAG"]) == n and (arrays["FLAG"] == 0).sum() >= n - 10
    sources = arrays["SOURCE"].astype(str)
    assert sources[-10] == "inputs/spec-7002-57001-0999.fits"
    assert sources[-1] == "inputs/grid.npy[8]"
    assert arrays["REASON"].astype(str)[-10].startswith("not a readable FITS file")


def test_encode_workers_option_runs_a_local_cluster_without_torch(encoding, tmp_path):
    pytest.importorskip("dask.distributed")
    common = ["encode", "--model", str(encoding["pair"].encoder), *encoding["inputs"]]
    out = tmp_path / "workers.csv"
    script = ("import sys; from qsocube.cli import main; "
              f"code = main({[*common, '--out', str(out), '--workers', '2']!r}); "
              "print(code, sorted(m for m in sys.modules if m.split('.')[0] == 'torch' "
              "or m.startswith('qsocube.builder')))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=encoding["folder"], timeout=120)
    assert done.stdout.strip() == "1 []", done.stderr[-2000:]
    assert "on 2 Dask worker(s)" in done.stderr
    serial = tmp_path / "serial.csv"
    done = subprocess.run([sys.executable, "-m", "qsocube.cli", *common, "--out", str(serial)],
                          capture_output=True, text=True, cwd=encoding["folder"], timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    assert out.read_text() == serial.read_text()


def test_missing_dask_or_scheduler_is_one_line(encoding, cube, tmp_path, monkeypatch, capsys):
    dask = pytest.importorskip("dask")
    out = tmp_path / "codes.h5"
    encode = ["encode", "--model", str(encoding["pair"].encoder), "--out", str(out),
              encoding["inputs"][0]]
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert main([*encode, "--scheduler", "tcp://127.0.0.1:9"]) == 2
        shutil.copyfile(cube, tmp_path / "qsocube.h5")
        assert main(["train", str(tmp_path / "qsocube.h5"), "--calls", "1", "--max-epochs", "1",
                     "--latent-sizes", "3", "--hidden", "32,16",
                     "--scheduler", "tcp://127.0.0.1:9"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    refused = [line for line in errors if "cannot connect" in line]
    assert len(refused) == 2 and refused[-1] == errors[-1]
    assert refused[0].startswith("qsocube encode: --scheduler tcp://127.0.0.1:9: cannot connect")
    assert refused[1].startswith("qsocube train: --scheduler tcp://127.0.0.1:9: cannot connect")
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if dask were not installed
    for argv in ([*encode, "--workers", "2"], ["train", str(cube), "--workers", "2"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "needs dask" in err and "qsocube[scale]" in err and len(err.splitlines()) == 1
    assert not out.exists()
