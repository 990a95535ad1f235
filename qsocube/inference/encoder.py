"""The Python API: ``Encoder`` loads a release's ONNX pair once and encodes spectra.

``Encoder.encode(flux, ivar)`` takes arrays on the model's grid (physical units) and
``Encoder.encode_files(paths)`` takes spec-lite FITS files; both return ``Encoded``, a
dataclass of numpy arrays (one row per input spectrum, rejected rows flagged with NaN
results) whose ``to_xarray()`` gives an ``xarray.Dataset`` when xarray is installed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from qsocube.core import anomaly, defaults, schema
from qsocube.core.cube import file_sha256, model_input_from_cube
from qsocube.core.errors import ModelError, Rejection
from qsocube.core.grid import WavelengthGrid
from qsocube.core.layout import model_group_name
from qsocube.core.metrics import reconstruction_metrics
from qsocube.core.parallel import threaded_map
from qsocube.core.preprocess import encoder_input
from qsocube.inference.inputs import discover
from qsocube.inference.model import load_pair
from qsocube.inference.sources import (
    Batch,
    empty_ids,
    grid_batch,
    plan_parts,
    read_batches,
)

DEFAULT_MIN_COVERED = defaults.MIN_COVERED_FRACTION  # the builder's own threshold
# Below this many rows per thread a batch runs as one piece on onnxruntime's threads: the
# pixel passes around the graphs (normalisation, metrics, scores) are numpy on one core,
# so from here on each core takes a piece of the batch end to end (1.8x at batch 4,096
# on two cores); below it, starting threads costs more than they save.
MIN_ROWS_PER_THREAD = 256


@dataclass
class Encoded:
    """Per-spectrum results; the order of rows is the order of the inputs.

    Written to files under the names of ``qsocube/schemas/encode_output.json`` (each
    column's ``field`` is one of these attributes).
    """

    source: np.ndarray  # str: input file (or file[row] for arrays and cubes)
    PLATE: np.ndarray  # int32, -1 when unknown
    MJD: np.ndarray  # int32, -1 when unknown
    FIBERID: np.ndarray  # int32, -1 when unknown
    CLASS: np.ndarray  # str: SDSS pipeline class from HDU 2 ("" when unknown)
    Z: np.ndarray  # float32: SDSS pipeline redshift from HDU 2 (NaN when unknown)
    flag: np.ndarray  # uint8 Rejection code: 0 encoded, else why not
    reason: np.ndarray  # str: why the row was rejected ("" when ok)
    covered_fraction: np.ndarray  # float32: fraction of grid pixels with valid data
    latent_mean: np.ndarray  # (n, L) float32
    latent_logvar: np.ndarray  # (n, L) float32
    recon_mse: np.ndarray  # float32: MSE of normalised flux over valid pixels
    recon_chi2: np.ndarray  # float32: reduced chi-square of the reconstruction
    recon_score: np.ndarray  # float32: noise-aware reconstruction part of the anomaly score
    density_score: np.ndarray  # float32: latent-density part of the anomaly score
    redshift_score: np.ndarray  # float32: catalogue-redshift part (NaN without a redshift)
    anomaly_score: np.ndarray  # float32: fraction of normal quasars more usual than this one

    def __len__(self) -> int:
        return len(self.source)

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def concat(cls, parts: list[Encoded]) -> Encoded:
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                      for f in fields(cls)})

    def to_xarray(self, attrs: dict[str, Any] | None = None) -> Any:
        """An ``xarray.Dataset`` with dims (spectrum, latent) and the output file's names,
        units and flags (the schema); needs the optional xarray."""
        import xarray as xr

        columns = schema.columns("encode_output", [self.latent_mean.shape[1]])
        data = {c.name: (c.dims, getattr(self, c.field),
                         {"units": c.units, "long_name": c.description,
                          **schema.flag_attributes(c.spec)}) for c in columns}
        return xr.Dataset(data, coords={"spectrum": np.arange(len(self), dtype=np.int64),
                                        "latent": np.arange(self.latent_mean.shape[1])},
                          attrs=attrs or {})


class Encoder:
    """A release's encoder and its decoder, checked against this software's preprocessing.

    ``model`` is the ``*_encoder.onnx`` file; the decoder named in its metadata must be
    beside it. ``threads`` defaults to the cores this process may use (at most 8): the
    graphs' onnxruntime threads, and the pieces a batch of ``MIN_ROWS_PER_THREAD`` rows per
    thread or more is worked on in, each on a thread of its own.
    """

    def __init__(self, model: str | Path, threads: int | None = None,
                 min_covered_fraction: float = DEFAULT_MIN_COVERED) -> None:
        self.pair = load_pair(model, threads)
        self.min_covered_fraction = min_covered_fraction

    @property
    def latent_size(self) -> int:
        return self.pair.latent_size

    @property
    def grid(self) -> WavelengthGrid:
        return self.pair.grid

    @property
    def wavelength(self) -> np.ndarray:
        return self.pair.grid.wavelength

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.pair.meta)

    def latent(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mu, logvar) of model input x (normalised flux, 0 on masked pixels)."""
        return self._latent(x, single=False)

    def reconstruct(self, z: np.ndarray) -> np.ndarray:
        """The decoder's reconstructions x_hat (n, n_pix) of latent codes z (n, L)."""
        return self._reconstruct(z, single=False)

    def _latent(self, x: np.ndarray, single: bool) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) == 0:
            empty = np.zeros((0, self.latent_size), np.float32)
            return empty, empty.copy()
        name = self.pair.encoder_input
        feed = encoder_input(x) if name == "u" else x
        mu, logvar = self.pair.session("encoder", len(x), single).run(["mu", "logvar"],
                                                                      {name: feed})
        return mu, logvar

    def _reconstruct(self, z: np.ndarray, single: bool) -> np.ndarray:
        z = np.ascontiguousarray(z, dtype=np.float32)
        if len(z) == 0:
            return np.zeros((0, self.grid.n_pix), np.float32)
        return self.pair.session("decoder", len(z), single).run(["x_hat"], {"z": z})[0]

    def _pieces(self, n: int) -> int:
        """How many pieces (one per thread) ``n`` rows are worked on in."""
        return max(1, min(self.pair.threads, n // MIN_ROWS_PER_THREAD))

    def _results(self, x: np.ndarray, w: np.ndarray, z: np.ndarray, single: bool
                 ) -> tuple[np.ndarray, ...]:
        """(mean, logvar, mse, chi2, recon, density, redshift, score) of usable rows."""
        size = self.latent_size
        mean, logvar = self._latent(x, single)
        x_hat = self._reconstruct(mean, single)
        mse, chi2 = reconstruction_metrics(x, w, x_hat, size)
        recon, density, redshift, score = (np.full(len(x), np.nan, np.float32)
                                           for _ in range(4))
        if self.pair.anomaly is not None:
            parts = anomaly.score(self.pair.anomaly, x, w, x_hat, mean, logvar, z)
            recon, density, score, redshift = (parts.recon, parts.density, parts.combined,
                                               parts.redshift)
        elif self.pair.quantiles is not None:  # a model from before 0.3
            score = anomaly.fraction_below(mse, self.pair.quantiles)
        return mean, logvar, mse, chi2, recon, density, redshift, score

    def encode_batch(self, batch: Batch) -> Encoded:
        """Encode the usable rows of a batch; rejected rows get NaN results. A large batch
        is worked on in pieces, one per thread (``MIN_ROWS_PER_THREAD``)."""
        return self._encode(batch, None, single=False)

    def _encode(self, batch: Batch, pieces: int | None, single: bool) -> Encoded:
        """``batch``'s results, its usable rows in ``pieces`` (None: ``_pieces``) on as
        many threads (each on single-threaded sessions), or here on ``single``-threaded
        sessions or not."""
        n, size = len(batch), self.latent_size
        usable = np.flatnonzero(batch.flag == Rejection.ok)
        pieces = self._pieces(len(usable)) if pieces is None else pieces
        mean = np.full((n, size), np.nan, np.float32)
        logvar = mean.copy()
        columns = [mean, logvar, *(np.full(n, np.nan, np.float32) for _ in range(6))]
        rows_of = np.array_split(usable, pieces) if len(usable) else []
        results = threaded_map(lambda rows: self._results(
            batch.x[rows], batch.w[rows], batch.ids["Z"][rows], single or pieces > 1),
            rows_of, pieces)
        for rows, values in zip(rows_of, results, strict=True):
            for column, value in zip(columns, values, strict=True):
                column[rows] = value
        return Encoded(np.asarray(batch.source, dtype=object), batch.ids["PLATE"],
                       batch.ids["MJD"], batch.ids["FIBERID"],
                       np.asarray(batch.ids["CLASS"], dtype=object), batch.ids["Z"], batch.flag,
                       np.asarray(batch.reason, dtype=object), batch.covered_fraction,
                       *columns)

    def encode(self, flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray | None = None,
               names: Iterable[str] | None = None, batch_size: int = 4096,
               norm: np.ndarray | None = None, z: np.ndarray | None = None) -> Encoded:
        """Encode spectra already on the model's grid: flux and ivar of shape (n, n_pix).

        Pixels with ivar == 0, NaN or inf (or mask != 0) are masked; each spectrum is
        normalised by the median of its valid flux, as the builder does, unless ``norm``
        (n,) gives the normalisation (ones for flux already normalised, e.g. a cube's).
        ``z`` (n,) are the catalogue redshifts, NaN where unknown: without one, the anomaly
        score combines the reconstruction and density parts alone.
        """
        flux, ivar = np.atleast_2d(flux), np.atleast_2d(ivar)
        if len(flux) == 0:
            raise ValueError("no spectra to encode")
        if flux.shape != ivar.shape or flux.shape[1] != self.grid.n_pix:
            raise ValueError(f"flux {flux.shape} and ivar {ivar.shape} must both be "
                             f"(n, {self.grid.n_pix}) on the model's grid")
        names = list(names) if names is not None else [f"[{i}]" for i in range(len(flux))]
        z = None if z is None else np.asarray(z, np.float32)
        parts = []
        for lo in range(0, len(flux), batch_size):
            block = np.arange(lo, min(lo + batch_size, len(flux)))
            pieces = [slice(r[0], r[-1] + 1) for r in np.array_split(
                block, self._pieces(len(block)))]
            parts += threaded_map(partial(self._encode_arrays, flux, ivar, mask, norm, z,
                                          names, single=len(pieces) > 1), pieces, len(pieces))
        return Encoded.concat(parts)

    def _encode_arrays(self, flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray | None,
                       norm: np.ndarray | None, z: np.ndarray | None, names: list[str],
                       rows: slice, *, single: bool) -> Encoded:
        """``encode``'s work on one piece of rows: model input, then the results."""
        x, w, covered, flag, reasons = grid_batch(
            flux[rows], ivar[rows], self.min_covered_fraction,
            None if mask is None else mask[rows], None if norm is None else norm[rows])
        ids = empty_ids(len(x))
        if z is not None:
            ids["Z"] = z[rows]
        return self._encode(Batch(names[rows], ids, x, w, covered, flag, reasons), 1, single)

    def iter_encode(self, inputs: Iterable[str | Path], batch_size: int = 1024,
                    processes: int = 1) -> Iterator[Encoded]:
        """Encode FITS files, folders, globs, cubes or array files batch by batch.

        ``processes`` > 1 reads and resamples on that many local processes (started with
        ``forkserver``: a script that uses it needs the ``if __name__ == "__main__":`` guard).
        """
        parts = list(plan_parts(discover([str(p) for p in inputs], self.grid), batch_size))
        for batch in read_batches(parts, self.grid, self.pair.meta["resampling_method"],
                                  self.min_covered_fraction, processes):
            yield self.encode_batch(batch)

    def encode_files(self, paths: Iterable[str | Path], batch_size: int = 1024,
                     processes: int = 1) -> Encoded:
        """Encode spec-lite FITS files (or folders/globs of them); all results in memory."""
        return Encoded.concat(list(self.iter_encode(paths, batch_size, processes)))


def check_against_cube(cube_path: str | Path, encoder_path: str | Path,
                       batch_size: int = 4096) -> float:
    """Max |latent mean from the ONNX encoder - latent_mean written back into the cube|.

    Encodes the cube's own model input (``model_input_from_cube``) with ``encoder_path`` and
    compares with ``/models/latent_NN/latent_mean`` over the rows that have one.
    """
    encoder = Encoder(encoder_path)
    with h5py.File(cube_path, "r") as cube:
        if cube.attrs.get("grid_sha256") not in (None, encoder.grid.sha256):
            raise ModelError(f"{encoder_path}: its grid differs from the cube {cube_path}'s")
        group = cube[model_group_name(encoder.latent_size)]
        stored_sha = group.attrs.get("encoder_sha256")
        if stored_sha is not None and stored_sha != file_sha256(encoder_path):
            raise ModelError(f"{encoder_path}: sha256 differs from the encoder_sha256 recorded "
                             f"in {cube_path}{group.name}")
        worst = 0.0
        for lo in range(0, cube["flux"].shape[0], batch_size):
            rows = slice(lo, lo + batch_size)
            stored = group["latent_mean"][rows]
            have = np.isfinite(stored).all(axis=1)
            if not have.any():
                continue
            x, _ = model_input_from_cube(cube, rows)
            mu, _ = encoder.latent(x[have])
            worst = max(worst, float(np.max(np.abs(mu - stored[have]))))
    return worst
