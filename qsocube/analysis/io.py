"""The analysis's one door into a release: opens the cube with xarray and hands out tidy data.

Everything the figures, report and catalogue need is read here, once: the small per-spectrum
tables are loaded eagerly (a few MB even at 20,000 spectra), while flux/ivar/mask stay on
disk and are read only for the handful of spectra that are drawn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from qsocube.core import layout
from qsocube.core.errors import AnalysisError
from qsocube.core.layout import CUBE_NAME

__all__ = ["AnalysisError", "Model", "Release", "locate_cube", "open_release"]


@dataclass
class Model:
    """One /models/latent_NN group: per-spectrum arrays plus the search and training history."""

    latent_size: int
    data: xr.Dataset  # latent_mean, latent_logvar (spectrum, latent); recon_mse ... (spectrum)
    search: xr.Dataset | None
    history: xr.Dataset | None
    attrs: dict

    @property
    def key(self) -> str:
        return f"{self.latent_size:02d}"


@dataclass
class Release:
    folder: Path
    cube_path: Path
    tree: xr.DataTree
    attrs: dict
    spectra: xr.Dataset  # root per-spectrum variables (no flux), with the coords
    catalog: xr.Dataset
    truth: xr.Dataset | None
    rejected: xr.Dataset
    models: dict[int, Model] = field(default_factory=dict)

    @property
    def n_spectra(self) -> int:
        return int(self.spectra.sizes["spectrum"])

    @property
    def wavelength(self) -> np.ndarray:
        return np.asarray(self.spectra["wavelength"].values)

    @property
    def grid(self) -> dict:
        try:
            return json.loads(self.attrs.get("grid", "{}"))
        except json.JSONDecodeError:
            return {}

    def pixels(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """flux, ivar, mask of the given rows (in the given order), read from disk now."""
        rows = np.asarray(rows, dtype=np.int64)
        order = np.unique(rows)  # h5py wants increasing indices
        where = np.searchsorted(order, rows)
        root = self.tree.to_dataset(inherit=False)
        try:
            return {name: np.asarray(root[name].isel(spectrum=order).values)[where]
                    for name in ("flux", "ivar", "mask")}
        except Exception as exc:  # a damaged chunk: h5py/h5netcdf raise OSError and others
            raise damaged(self.cube_path, exc) from None

    def decoder_path(self, latent_size: int) -> Path:
        return self.model_file(latent_size, "decoder_onnx")

    def model_file(self, latent_size: int, attribute: str) -> Path:
        """A model file the group names (encoder_onnx, decoder_onnx, anomaly_model)."""
        name = Path(str(self.models[latent_size].attrs.get(attribute, ""))).name
        return layout.Release(self.folder).models / name

    def close(self) -> None:
        self.tree.close()

    def __enter__(self) -> Release:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _node(tree: xr.DataTree, path: str) -> xr.Dataset | None:
    try:
        node = tree[path]
    except KeyError:
        return None
    return node.to_dataset(inherit=True).load() if isinstance(node, xr.DataTree) else None


def _attrs(tree: xr.DataTree, path: str) -> dict:
    return {k: (v.item() if isinstance(v, np.generic) else v)
            for k, v in tree[path].attrs.items()}


def locate_cube(path: str | Path) -> tuple[Path, Path]:
    """(release folder, cube path) from a release folder or the cube file itself."""
    path = Path(path)
    if path.is_dir():
        cube = path / CUBE_NAME
        if not cube.is_file():
            raise FileNotFoundError(f"{path}: not a release folder (no {CUBE_NAME})")
        return path, cube
    if path.is_file():
        return path.parent, path
    raise FileNotFoundError(f"{path}: no such release folder or cube")


def open_release(path: str | Path) -> Release:
    """Open a release (folder or cube) for analysis; raises AnalysisError in one line."""
    folder, cube = locate_cube(path)
    try:
        # No CF time decoding: the cube holds no times, and units such as "d" (MJD) or "s"
        # (search wall time) must stay plain numbers whatever xarray's defaults become.
        tree = xr.open_datatree(cube, engine="h5netcdf", decode_times=False,
                                decode_timedelta=False)
    except Exception as exc:  # h5py/h5netcdf raise many types for a damaged file
        raise AnalysisError(f"{cube}: cannot be opened as a netCDF-4/HDF5 cube "
                            f"({type(exc).__name__}: {' '.join(str(exc).split())})") from exc
    try:
        for needed in ("catalog", "rejected"):
            if needed not in tree.children:
                raise AnalysisError(f"{cube}: no /{needed} group (not a qsocube cube?)")
        root = tree.to_dataset(inherit=False)
        if "spectrum" not in root.dims:
            raise AnalysisError(f"{cube}: no 'spectrum' dimension at the root")
        spectra = root.drop_vars([v for v in ("flux", "ivar", "mask") if v in root]).load()
        release = Release(folder, cube, tree, _attrs(tree, "/"), spectra,
                          _node(tree, "catalog"), _node(tree, "truth"), _node(tree, "rejected"))
        models = tree["models"].children if "models" in tree.children else {}
        for name in sorted(models):
            attrs = _attrs(tree, f"models/{name}")
            data = _node(tree, f"models/{name}")
            size = int(attrs.get("latent_size", data.sizes.get("latent", 0)))
            release.models[size] = Model(size, data, _node(tree, f"models/{name}/search"),
                                         _node(tree, f"models/{name}/history"), attrs)
    except AnalysisError:
        tree.close()
        raise
    except Exception as exc:  # a damaged chunk or group: one line, and where to look
        tree.close()
        raise damaged(cube, exc) from None
    return release


def damaged(cube: Path, exc: BaseException) -> AnalysisError:
    """The one-line error for a cube whose data cannot be read."""
    text = " ".join(str(exc).split())[:160] or type(exc).__name__
    return AnalysisError(f"{cube}: cannot be read ({type(exc).__name__}: {text}); run "
                         f"`qsocube validate {cube}` to see what is damaged")
