"""A small synthetic cube with known latent factors, for training's tests and benchmark.

Spectra are a power-law continuum times a Lyman-alpha forest decrement plus Gaussian
emission lines, redshifted onto the grid: four factors (redshift, slope, line strength,
line width) drive them, so a model with a few latent dimensions can explain them. This is
not the builder's simulator; it only lets training run before (or without) a built cube.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np

import qsocube
from qsocube.atomic import atomic_path
from qsocube.cube import (
    schema_group,
    schema_version,
    split_of,
    write_open_variable,
    write_variable,
)
from qsocube.grid import DEFAULT_GRID, WavelengthGrid
from qsocube.preprocess import NO_COVERAGE, NO_DATA, NORMALISATION, normalisation_factor

LINES = (1216.0, 1549.0, 1909.0, 2799.0, 4861.0, 6563.0)  # rest-frame Angstrom
LINE_RATIOS = np.array([3.0, 1.5, 0.6, 0.8, 0.5, 1.5])


def synthetic_spectra(n: int, grid: WavelengthGrid = DEFAULT_GRID, seed: int = 0
                      ) -> dict[str, np.ndarray]:
    """flux, ivar, mask (n, n_pix) and the factors behind them; vectorised, no loops over n."""
    rng = np.random.default_rng(seed)
    wave = grid.wavelength[None, :]
    z = rng.uniform(0.3, 2.8, n)[:, None]
    slope = rng.normal(-0.5, 0.3, n)[:, None]
    strength = rng.lognormal(0.0, 0.35, n)[:, None]
    width = rng.uniform(1500.0, 4000.0, n)[:, None]  # km/s FWHM
    rest = wave / (1 + z)
    continuum = (rest / 2500.0) ** slope
    sigma_frac = width / 2.998e5 / 2.355
    lines = np.zeros_like(rest)
    for centre, ratio in zip(LINES, LINE_RATIOS, strict=True):
        lines += ratio * np.exp(-0.5 * ((rest - centre) / (centre * sigma_frac)) ** 2)
    forest = np.where(rest < 1216.0, np.exp(-0.0018 * (1 + z) ** 3.7), 1.0)
    shape = forest * (continuum + 0.5 * strength * lines)
    scale = rng.lognormal(np.log(8.0), 0.5, n)[:, None]
    snr = rng.uniform(4.0, 30.0, n)[:, None]
    sigma = scale * np.median(shape, axis=1, keepdims=True) / snr * np.sqrt(0.5 + shape)
    flux = scale * shape + sigma * rng.standard_normal(shape.shape)
    ivar = 1.0 / sigma**2
    mask = np.zeros(shape.shape, np.uint8)
    # a third start near 3800 A like SDSS-I/II spectra; a few bad pixels everywhere
    blue_cut = rng.random(n) < 1 / 3
    mask[blue_cut[:, None] & (wave < 3800.0)] = NO_COVERAGE
    mask[(rng.random(shape.shape) < 0.005) & (mask == 0)] = NO_DATA
    flux = np.where(mask == 0, flux, 0).astype(np.float32)
    ivar = np.where(mask == 0, ivar, 0).astype(np.float32)
    return {"flux": flux, "ivar": ivar, "mask": mask, "Z": z[:, 0], "SLOPE": slope[:, 0],
            "LINE_STRENGTH": strength[:, 0], "LINE_WIDTH": width[:, 0]}


def write_synthetic_cube(path: str | Path, n: int, grid: WavelengthGrid = DEFAULT_GRID,
                         seed: int = 0) -> Path:
    """Write a schema-conforming cube (root, /catalog, /rejected, /truth) of n spectra."""
    path = Path(path)
    data = synthetic_spectra(n, grid, seed)
    norm = normalisation_factor(data["flux"], data["mask"])
    plate, fiber = 4000 + np.arange(n) // 1000, np.arange(n) % 1000 + 1
    mjd = np.full(n, 55000 + seed)
    spec_ids = [f"{p:04d}-{m:05d}-{f:04d}" for p, m, f in zip(plate, mjd, fiber, strict=True)]
    config = json.dumps({"synthetic": True, "n": n, "seed": seed,
                         "grid": json.loads(grid.to_json())}, sort_keys=True)
    config_sha = hashlib.sha256(config.encode()).hexdigest()

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as cube:
        write_variable(cube, "spectrum", np.arange(n))
        write_variable(cube, "wavelength", grid.wavelength)
        write_variable(cube, "dla", np.arange(5))
        write_variable(cube, "spec_id", spec_ids)
        write_variable(cube, "source_file", [f"spec-{s}.fits" for s in spec_ids])
        write_variable(cube, "source_sha256", ["0" * 64] * n)
        for name in ("flux", "ivar", "mask"):
            write_variable(cube, name, data[name])
        write_variable(cube, "norm", norm)
        write_variable(cube, "covered_fraction", (data["mask"] == 0).mean(axis=1))
        write_variable(cube, "split", split_of(spec_ids))
        catalog = cube.create_group("catalog")
        known = {"PLATE": plate, "MJD": mjd, "FIBERID": fiber, "Z": data["Z"],
                 "SDSS_NAME": [f"SYN{i:06d}" for i in range(n)], "CLASS": ["QSO"] * n,
                 "THING_ID": np.full(n, -1), "ZWARNING": np.zeros(n, np.int64),
                 "in_catalog": np.ones(n, np.uint8)}
        for name, spec in schema_group("/catalog")["variables"].items():
            shape = (n, 5) if "dla" in spec["dims"] else (n,)
            write_variable(catalog, name, known.get(name, np.full(shape, np.nan)))
        rejected = cube.create_group("rejected")
        write_variable(rejected, "rejected", np.zeros(0, np.int64))
        write_variable(rejected, "file", np.zeros(0, object))
        write_variable(rejected, "reason", np.zeros(0, object))
        truth = cube.create_group("truth")
        for name in ("Z", "SLOPE", "LINE_STRENGTH", "LINE_WIDTH"):
            write_open_variable(truth, name, data[name])
        cube.attrs.update({
            "product_version": qsocube.PRODUCT_VERSION, "schema_version": schema_version(),
            "Conventions": "CF-1.8", "title": "synthetic qsocube for training tests",
            "history": "builder.train.synthetic", "source": "simulated",
            "build_config": config, "build_config_sha256": config_sha,
            "software_version": qsocube.__version__, "git_commit": "unknown",
            "inputs_sha256": "0" * 64, "grid": grid.to_json(), "grid_sha256": grid.sha256,
            "normalisation": NORMALISATION, "resampling_method": "rebin",
            "created": "2000-01-01T00:00:00Z"})
    return path
