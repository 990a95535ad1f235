"""Load a release's ONNX encoder/decoder pair and check it against this software's preprocessing.

Only onnxruntime is needed (never onnx or torch). Every check failure raises ``ModelError``
with one line that names the file and says what differs, so ``qsocube encode`` can print it
and exit 2 before touching any input.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from qsocube.core.anomaly import AnomalyModel
from qsocube.core.cube import file_sha256, schema_version
from qsocube.core.errors import ModelError
from qsocube.core.grid import WavelengthGrid
from qsocube.core.onnxmodel import (
    N_QUANTILES,
    default_threads,
    format_problem,
    open_session,
    required_keys,
    session_metadata,
)
from qsocube.core.preprocess import METHOD_ALIASES, METHODS, NORMALISATION

# The encoder graph's input: "u" = asinh(x) (qsocube.core.preprocess.encoder_input) from
# product version 0.2.0; "x" = flux / norm where the graph applies its own transform
# (0.1.0 releases, whose graphs begin with onnxruntime's slow Asinh, still load).
ENCODER_INPUTS = ("u", "x")
# Below this many rows a call runs on a single-threaded session: waking and joining worker
# threads costs more than they save on a few rows (measured ~1.2-2x faster at batch 1).
SMALL_BATCH = 32


def metadata(session: ort.InferenceSession, path: Path) -> dict[str, str]:
    """The model's metadata, with every key the schema requires (ModelError if not)."""
    meta = session_metadata(session)
    missing = [key for key in required_keys() if key not in meta]
    if missing:
        raise ModelError(f"{path}: not a qsocube model, metadata lacks {', '.join(missing)}")
    return meta


def _dim(value: object) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def _check_io(session: ort.InferenceSession, path: Path, inputs: tuple[str, ...],
              outputs: tuple[str, ...], width_in: int, width_out: int) -> str:
    """Names and fixed widths of the graph's input/outputs (the batch dimension is free);
    returns the input's name, one of ``inputs``."""
    got_in = [i.name for i in session.get_inputs()]
    got_out = [o.name for o in session.get_outputs()]
    if len(got_in) != 1 or got_in[0] not in inputs or any(n not in got_out for n in outputs):
        raise ModelError(f"{path}: graph has inputs {got_in} and outputs {got_out}, "
                         f"expected one input of {list(inputs)} and outputs {list(outputs)}")
    width = _dim(session.get_inputs()[0].shape[-1])
    if width is not None and width != width_in:
        raise ModelError(f"{path}: input '{inputs}' has width {width}, metadata says {width_in}")
    for out in session.get_outputs():
        width = _dim(out.shape[-1]) if out.name in outputs else None
        if width is not None and width != width_out:
            raise ModelError(f"{path}: output '{out.name}' has width {width}, "
                             f"metadata says {width_out}")
    return got_in[0]


def check_preprocessing(meta: dict[str, str], path: Path) -> WavelengthGrid:
    """The model's preprocessing must be exactly what this software does; return its grid."""
    try:
        grid = WavelengthGrid.from_json(meta["grid"])
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{path}: metadata 'grid' is not a wavelength grid ({exc})") from None
    if grid.sha256 != meta["grid_sha256"]:
        raise ModelError(f"{path}: grid differs: this software computes sha256 {grid.sha256[:12]}"
                         f" for the model's grid {meta['grid']}, the model says "
                         f"{meta['grid_sha256'][:12]}")
    if meta["normalisation"] != NORMALISATION:
        raise ModelError(f"{path}: normalisation differs: model '{meta['normalisation']}', "
                         f"this software '{NORMALISATION}'")
    if METHOD_ALIASES.get(meta["resampling_method"], meta["resampling_method"]) not in METHODS:
        raise ModelError(f"{path}: resampling method '{meta['resampling_method']}' is not one "
                         f"of this software's {METHODS}")
    ours = schema_version()
    if meta["schema_version"].split(".")[0] != ours.split(".")[0]:
        raise ModelError(f"{path}: schema version differs: model {meta['schema_version']}, "
                         f"this software {ours} (major versions must match)")
    return grid


def read_quantiles(meta: dict[str, str], path: Path) -> np.ndarray | None:
    """The training set's recon-MSE quantiles, or None when the model has none."""
    text = meta.get("train_recon_mse_quantiles")
    if text is None:
        return None
    if format_problem("quantiles", text) is not None:
        raise ModelError(f"{path}: train_recon_mse_quantiles is not {N_QUANTILES} finite, "
                         "non-decreasing numbers")
    return np.asarray(json.loads(text), dtype=np.float64)


def read_anomaly_model(meta: dict[str, str], path: Path) -> AnomalyModel | None:
    """The anomaly model named in the encoder's metadata (a JSON file beside it, checked
    against its sha256), or None for models made before it existed."""
    name = meta.get("anomaly_model")
    if not name:
        return None
    target = path.with_name(name)
    if not target.is_file():
        raise ModelError(f"{path}: its anomaly model {name} is not beside it")
    if file_sha256(target) != meta.get("anomaly_sha256"):
        raise ModelError(f"{target}: does not match the anomaly_sha256 of {path.name}")
    try:
        return AnomalyModel.read(target)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{target}: not a readable anomaly model ({exc})") from None


@dataclass
class ModelPair:
    encoder_path: Path
    decoder_path: Path
    encoder: ort.InferenceSession
    decoder: ort.InferenceSession
    meta: dict[str, str]
    grid: WavelengthGrid
    latent_size: int
    quantiles: np.ndarray | None  # models before 0.3: the training set's recon-MSE quantiles
    anomaly: AnomalyModel | None = None
    threads: int = 1
    encoder_input: str = "u"  # "u": the graph takes asinh(x); "x": it transforms x itself
    _single: dict[str, ort.InferenceSession] | None = None
    _opening: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def session(self, role: str, rows: int, single: bool = False) -> ort.InferenceSession:
        """The session to run ``rows`` rows through ("encoder" or "decoder"); ``single``:
        one on a single thread (for pieces of a batch run on threads of their own)."""
        if not single and (rows >= SMALL_BATCH or self.threads == 1):
            return self.encoder if role == "encoder" else self.decoder
        return self.single_sessions()[role]

    def single_sessions(self) -> dict[str, ort.InferenceSession]:
        """The single-threaded pair, opened once on first use, by whichever thread asks
        first (the pieces of a batch ask at once)."""
        with self._opening:
            if self._single is None:
                self._single = ({"encoder": self.encoder, "decoder": self.decoder}
                                if self.threads == 1 else
                                {"encoder": open_session(self.encoder_path, 1),
                                 "decoder": open_session(self.decoder_path, 1)})
        return self._single


def load_pair(encoder_path: str | Path, threads: int | None = None) -> ModelPair:
    """Open the encoder and its partner decoder (beside it) and check both."""
    encoder_path = Path(encoder_path)
    encoder = open_session(encoder_path, threads)
    meta = metadata(encoder, encoder_path)
    if meta["role"] != "encoder":
        raise ModelError(f"{encoder_path}: this is the {meta['role']}; pass the encoder "
                         f"({meta['partner']})")
    grid = check_preprocessing(meta, encoder_path)
    try:
        latent_size = int(meta["latent_size"])
    except ValueError:
        raise ModelError(f"{encoder_path}: latent_size '{meta['latent_size']}' is not an "
                         "integer") from None
    decoder_path = encoder_path.with_name(meta["partner"])
    if not decoder_path.is_file():
        raise ModelError(f"{encoder_path}: its decoder {decoder_path.name} is not beside it")
    decoder = open_session(decoder_path, threads)
    dmeta = metadata(decoder, decoder_path)
    for key, expected in (("role", "decoder"), ("partner", encoder_path.name),
                          ("latent_size", meta["latent_size"]),
                          ("grid_sha256", meta["grid_sha256"]),
                          ("normalisation", meta["normalisation"])):
        if dmeta[key] != expected:
            raise ModelError(f"{decoder_path}: {key} is '{dmeta[key]}', its encoder "
                             f"{encoder_path.name} needs '{expected}'")
    encoder_input = _check_io(encoder, encoder_path, ENCODER_INPUTS, ("mu", "logvar"),
                              grid.n_pix, latent_size)
    _check_io(decoder, decoder_path, ("z",), ("x_hat",), latent_size, grid.n_pix)
    return ModelPair(encoder_path, decoder_path, encoder, decoder, meta, grid, latent_size,
                     read_quantiles(meta, encoder_path),
                     read_anomaly_model(meta, encoder_path), threads or default_threads(),
                     encoder_input)
