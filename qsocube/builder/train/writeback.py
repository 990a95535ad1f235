"""Write-back of one model's results into the cube as ``/models/latent_NN``.

Copy-on-write: the cube is copied beside itself, the group is written into the copy and
the copy is renamed over the cube, so an interrupted write-back leaves the previous cube
and a reader holding the old file keeps reading it. Layout and dtypes come from the
schema through ``qsocube.core.cube.write_variable``.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from qsocube.core.atomic import copy_on_write
from qsocube.core.cube import file_sha256, write_variable
from qsocube.core.errors import CubeError
from qsocube.core.layout import model_group_name

GROUP_VARIABLES = ("latent_mean", "latent_logvar", "recon_mse", "recon_chi2", "pca_mse",
                   "recon_score", "density_score", "redshift_score", "anomaly_score")
SEARCH_VARIABLES = ("lambda", "objective", "epochs", "seconds")
HISTORY_VARIABLES = ("train_loss", "val_loss", "train_mse", "val_mse", "kl", "mmd",
                     "train_mse_median", "val_mse_median")
# Optional in the schema: a search call recorded before they existed has no medians, and
# its group is written without them rather than with made-up values.
OPTIONAL_HISTORY_VARIABLES = ("train_mse_median", "val_mse_median")


def _detach_all(group: h5py.Group) -> None:
    """Detach the group's datasets from their scales before deleting it, so the root's
    ``spectrum`` scale keeps no reference to a deleted dataset (netCDF readers follow them)."""
    datasets: list[h5py.Dataset] = []
    group.visititems(lambda _, obj: datasets.append(obj) if isinstance(obj, h5py.Dataset)
                     else None)
    for dataset in datasets:
        if dataset.is_scale:
            continue
        for axis in range(dataset.ndim):
            for scale in list(dataset.dims[axis].values()):
                dataset.dims[axis].detach_scale(scale)


def write_model_group(cube_path: str | Path, latent_size: int, arrays: dict[str, np.ndarray],
                      attrs: dict[str, object], search: dict[str, np.ndarray],
                      history: dict[str, np.ndarray], history_attrs: dict | None = None
                      ) -> None:
    """Replace (or create) /models/latent_NN in the cube, atomically."""
    name = model_group_name(latent_size)
    with copy_on_write(cube_path) as tmp, h5py.File(tmp, "r+") as cube:
        n_spectra = cube["spectrum"].shape[0]
        if name in cube:
            _detach_all(cube[name])
            del cube[name]
        group = cube.require_group("models").create_group(name.rsplit("/", 1)[1])
        write_variable(group, "latent", np.arange(latent_size, dtype=np.int64))
        for var in GROUP_VARIABLES:
            values = arrays[var]
            if values.shape[0] != n_spectra:
                raise ValueError(f"{cube_path}: {var} has {values.shape[0]} rows, cube has "
                                 f"{n_spectra} spectra")
            write_variable(group, var, values)
        for key, value in attrs.items():
            group.attrs[key] = value
        sub = group.create_group("search")
        write_variable(sub, "call", np.arange(len(search["lambda"]), dtype=np.int64))
        for var in SEARCH_VARIABLES:
            write_variable(sub, var, search[var])
        sub = group.create_group("history")
        write_variable(sub, "epoch", np.arange(1, len(history["val_loss"]) + 1, dtype=np.int64))
        for var in HISTORY_VARIABLES:
            if var in history or var not in OPTIONAL_HISTORY_VARIABLES:
                write_variable(sub, var, history[var])
        for key, value in (history_attrs or {}).items():
            sub.attrs[key] = value


def written_model(cube_path: str | Path, latent_size: int) -> dict[str, str] | None:
    """The string attributes of an existing model group, or None."""
    name = model_group_name(latent_size)
    try:
        with h5py.File(cube_path, "r") as cube:
            if name not in cube:
                return None
            return {k: (v.decode() if isinstance(v, bytes) else str(v))
                    for k, v in cube[name].attrs.items()}
    except OSError as exc:
        raise CubeError(f"{cube_path}: cannot be read ({' '.join(str(exc).split())[:160]}); "
                        f"run `qsocube validate {cube_path}` to see what is damaged") from None


def is_current(cube_path: Path, models_dir: Path, latent_size: int, budget: dict) -> bool:
    """True if the cube already holds this latent size trained with exactly this budget on
    this cube, and the ONNX files beside it still match the recorded checksums."""
    attrs = written_model(cube_path, latent_size)
    if not attrs or "train_config" not in attrs:
        return False
    try:
        recorded = json.loads(attrs["train_config"])
    except json.JSONDecodeError:
        return False
    if recorded != budget or attrs.get("trained_on_cube_sha256") != budget["cube_sha256"]:
        return False
    for role in ("encoder", "decoder"):
        path = Path(models_dir) / attrs.get(f"{role}_onnx", "")
        if not path.is_file() or file_sha256(path) != attrs.get(f"{role}_sha256"):
            return False
    return True
