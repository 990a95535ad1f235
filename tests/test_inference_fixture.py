"""Small real ONNX encoder/decoder pairs, spec-lite files and cubes for the inference tests.

The pair is linear (PCA-like, MatMul + Add, constant log-variance) and follows the model
file contract exactly, so every check of ``inference`` runs against real onnxruntime
sessions. The weights are kept so tests can compute the expected answers with numpy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import onnx
from astropy.io import fits
from onnx import TensorProto, helper, numpy_helper

from qsocube import PRODUCT_VERSION
from qsocube.core.anomaly import quantiles
from qsocube.core.cube import model_input_from_cube, schema_version, write_variable
from qsocube.core.grid import DEFAULT_GRID, SDSS_DLOGLAM, WavelengthGrid
from qsocube.core.layout import model_group_name
from qsocube.core.metrics import reconstruction_metrics
from qsocube.core.preprocess import NORMALISATION, model_input, normalisation_factor

LOGVAR = -3.0


@dataclass
class Pair:
    encoder: Path
    decoder: Path
    mean: np.ndarray  # (n_pix,) float32
    basis: np.ndarray  # (L, n_pix) float32, orthonormal rows
    grid: WavelengthGrid

    @property
    def latent_size(self) -> int:
        return self.basis.shape[0]

    @property
    def bias(self) -> np.ndarray:
        """The encoder's float32 bias exactly as stored in the ONNX file."""
        return (-(self.mean @ self.basis.T)).astype(np.float32)

    def mu(self, x: np.ndarray) -> np.ndarray:
        """The encoder's answer in float64 from its stored float32 weights."""
        return x.astype(np.float64) @ self.basis.T.astype(np.float64) + self.bias

    def x_hat(self, z: np.ndarray) -> np.ndarray:
        return z.astype(np.float64) @ self.basis.astype(np.float64) + self.mean


def shapes(grid: WavelengthGrid, latent: int) -> tuple[np.ndarray, np.ndarray]:
    """A quasar-ish mean (continuum + broad lines, median ~1) and smooth orthonormal parts."""
    lam = grid.wavelength
    mean = (lam / 5000.0) ** -0.5
    for centre, width, height in ((4500, 60, 0.8), (6000, 90, 0.5), (7600, 120, 0.4)):
        mean = mean + height * np.exp(-0.5 * ((lam - centre) / width) ** 2)
    mean = mean / np.median(mean)
    # Parts are disjoint bumps of ~40 pixels (exact zeros elsewhere): orthogonal by
    # construction, and every dot product has few non-zero terms, so the float32 encoder
    # and the float64 answer agree to ~1e-6 instead of the ~1e-5 of 1500-term sums.
    pixel = np.arange(grid.n_pix)
    centres = np.linspace(0.1, 0.9, latent) * grid.n_pix
    basis = np.stack([np.where(np.abs(pixel - c) < 20, np.cos((pixel - c) / 20 * np.pi / 2), 0)
                      for c in centres])
    basis /= np.linalg.norm(basis, axis=1, keepdims=True)
    mean = mean - (mean @ basis.T) @ basis  # mean orthogonal to the parts: bias 0
    return mean.astype(np.float32), basis.astype(np.float32)


def _graph_model(name: str, inp: str, width_in: int, outputs: dict[str, tuple[np.ndarray,
                 np.ndarray]], meta: dict[str, str]) -> onnx.ModelProto:
    nodes, inits, outs = [], [], []
    for out, (weight, bias) in outputs.items():
        inits += [numpy_helper.from_array(weight.astype(np.float32), f"W_{out}"),
                  numpy_helper.from_array(bias.astype(np.float32), f"b_{out}")]
        nodes += [helper.make_node("MatMul", [inp, f"W_{out}"], [f"{out}_mm"]),
                  helper.make_node("Add", [f"{out}_mm", f"b_{out}"], [out])]
        outs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT,
                                                  ["batch", weight.shape[1]]))
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info(
        inp, TensorProto.FLOAT, ["batch", width_in])], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="qsocube-tests")
    model.ir_version = 9
    helper.set_model_props(model, meta)
    return model


def build_pair(folder: Path, latent: int = 6, grid: WavelengthGrid = DEFAULT_GRID,
               quantiles: np.ndarray | None = None, overrides: dict | None = None,
               decoder_overrides: dict | None = None, tag: str = "") -> Pair:
    """Write infovae_latentNN_encoder.onnx/_decoder.onnx into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    mean, basis = shapes(grid, latent)
    stem = f"infovae{tag}_latent{latent:02d}"
    enc, dec = folder / f"{stem}_encoder.onnx", folder / f"{stem}_decoder.onnx"
    common = {"product_version": PRODUCT_VERSION, "schema_version": schema_version(),
              "latent_size": str(latent), "lambda": "1.0", "alpha": "0.0",
              "grid": grid.to_json(), "grid_sha256": grid.sha256,
              "normalisation": NORMALISATION, "resampling_method": "rebin",
              "input_layout": json.dumps({"input": "x", "dtype": "float32",
                                          "shape": ["batch", grid.n_pix],
                                          "values": "x = flux / norm, 0 on masked pixels"}),
              "cube_sha256": "0" * 64}
    emeta = {**common, "role": "encoder", "partner": dec.name}
    if quantiles is not None:
        emeta["train_recon_mse_quantiles"] = json.dumps([float(q) for q in quantiles])
    emeta.update(overrides or {})
    dmeta = {**common, "role": "decoder", "partner": enc.name, **(decoder_overrides or {})}
    w = basis.T
    encoder = _graph_model("encoder", "x", grid.n_pix, {
        "mu": (w, -(mean @ w)),  # the same float32 bias as Pair.bias
        "logvar": (np.zeros_like(w), np.full(latent, LOGVAR))}, emeta)
    decoder = _graph_model("decoder", "z", latent, {"x_hat": (basis, mean)}, dmeta)
    onnx.save(encoder, enc)
    onnx.save(decoder, dec)
    return Pair(enc, dec, mean, basis, grid)


def draw(rng: np.random.Generator, pair: Pair, n: int, noise: tuple[float, float] = (0.02, 0.08)
         ) -> tuple[np.ndarray, np.ndarray]:
    """(flux, ivar) on the grid in physical units: mean + components + noise, random scale."""
    coeff = rng.normal(0, 2.0, (n, pair.latent_size))
    x = pair.mean + coeff @ pair.basis
    sigma = np.exp(rng.uniform(np.log(noise[0]), np.log(noise[1]), (n, 1)))
    amplitude = rng.uniform(5, 50, (n, 1))
    flux = amplitude * (x + sigma * rng.standard_normal(x.shape))
    ivar = np.broadcast_to(1.0 / (amplitude * sigma) ** 2, flux.shape)
    return flux.astype(np.float32), np.ascontiguousarray(ivar, dtype=np.float32)


def expected(pair: Pair, flux: np.ndarray, ivar: np.ndarray) -> dict[str, np.ndarray]:
    """The answer by plain numpy from the fixture's weights (valid = ivar > 0)."""
    mask = np.where(ivar > 0, 0, 2).astype(np.uint8)
    norm = normalisation_factor(np.where(mask == 0, flux, 0), mask)
    x, w = model_input(flux, ivar, mask, norm)
    mu = pair.mu(x)
    mse, chi2 = reconstruction_metrics(x, w, pair.x_hat(mu), pair.latent_size)
    return {"x": x, "w": w, "mu": mu, "mse": mse, "chi2": chi2}


def calibrated_pair(folder: Path, rng: np.random.Generator, n_train: int = 20000,
                    latent: int = 6) -> Pair:
    """A pair whose encoder carries the recon-MSE quantiles of its own training draws (the
    anomaly score of models before product version 0.3, which encode still reads).

    Many training draws, so the reference's own sampling noise stays well below what a
    KS test of a thousand held-out scores can see.
    """
    pair = build_pair(folder, latent)
    mse = [expected(pair, *draw(rng, pair, min(2000, n_train - lo)))["mse"]
           for lo in range(0, n_train, 2000)]
    return build_pair(folder, latent, quantiles=quantiles(np.concatenate(mse)))


def write_spec_lite(path: Path, wave_range: tuple[float, float], spectrum: np.ndarray,
                    grid: WavelengthGrid, meta: dict, ivar_value: float = 4.0) -> Path:
    """A spec-lite file: HDU 1 coadd on the SDSS 1e-4 dex frame, HDU 2 one metadata row."""
    start = int(np.ceil(np.log10(wave_range[0]) / SDSS_DLOGLAM))
    stop = int(np.floor(np.log10(wave_range[1]) / SDSS_DLOGLAM))
    loglam = np.arange(start, stop + 1) * SDSS_DLOGLAM
    flux = np.interp(loglam, grid.loglam, spectrum).astype(np.float32)
    coadd = fits.BinTableHDU.from_columns([
        fits.Column("flux", "E", array=flux),
        fits.Column("loglam", "E", array=loglam.astype(np.float32)),
        fits.Column("ivar", "E", array=np.full(len(flux), ivar_value, np.float32)),
        fits.Column("and_mask", "J", array=np.zeros(len(flux), np.int32))])
    cols = [fits.Column(key, "J", array=[meta[key]]) for key in ("PLATE", "MJD", "FIBERID")]
    cols += [fits.Column("CLASS", "6A", array=[meta.get("CLASS", "QSO")]),
             fits.Column("Z", "E", array=[meta.get("Z", 1.0)])]
    fits.HDUList([fits.PrimaryHDU(), coadd, fits.BinTableHDU.from_columns(cols)]).writeto(path)
    return path


def write_cube(path: Path, pair: Pair, flux: np.ndarray, ivar: np.ndarray,
               grid_sha256: str | None = None) -> Path:
    """A minimal cube (root arrays, /catalog ids, /models/latent_NN from numpy weights)."""
    n = len(flux)
    mask = np.where(ivar > 0, 0, 2).astype(np.uint8)
    flux, ivar = np.where(mask == 0, flux, 0), np.where(mask == 0, ivar, 0)
    with h5py.File(path, "w") as h5:
        h5.attrs["grid_sha256"] = grid_sha256 or pair.grid.sha256
        h5.attrs["grid"] = pair.grid.to_json()
        write_variable(h5, "spectrum", np.arange(n))
        write_variable(h5, "wavelength", pair.grid.wavelength)
        write_variable(h5, "spec_id", [f"{7000 + i:04d}-56000-{i + 1:04d}" for i in range(n)])
        write_variable(h5, "flux", flux)
        write_variable(h5, "ivar", ivar)
        write_variable(h5, "mask", mask)
        write_variable(h5, "norm", normalisation_factor(flux, mask))
        write_variable(h5, "covered_fraction", (mask == 0).mean(axis=1))
        catalog = h5.create_group("catalog")
        write_variable(catalog, "PLATE", 7000 + np.arange(n))
        write_variable(catalog, "MJD", np.full(n, 56000))
        write_variable(catalog, "FIBERID", 1 + np.arange(n))
        write_variable(catalog, "CLASS", ["QSO"] * n)
        write_variable(catalog, "Z", np.linspace(0.5, 3, n))
        group = h5.create_group(model_group_name(pair.latent_size))
        write_variable(group, "latent", np.arange(pair.latent_size))
        x, _ = model_input_from_cube(h5)
        write_variable(group, "latent_mean", pair.mu(x))
        write_variable(group, "latent_logvar", np.full((n, pair.latent_size), LOGVAR))
        group.attrs["encoder_onnx"] = pair.encoder.name
    return path


def test_fixture_pair_follows_the_model_contract(tmp_path: Path) -> None:
    pair = calibrated_pair(tmp_path, np.random.default_rng(0), n_train=500)
    for path, role in ((pair.encoder, "encoder"), (pair.decoder, "decoder")):
        model = onnx.load(path)
        onnx.checker.check_model(model, full_check=True)
        meta = {p.key: p.value for p in model.metadata_props}
        assert meta["role"] == role and meta["grid_sha256"] == DEFAULT_GRID.sha256
    meta = {p.key: p.value for p in onnx.load(pair.encoder).metadata_props}
    assert meta["partner"] == pair.decoder.name
    assert len(json.loads(meta["train_recon_mse_quantiles"])) == 1001
