"""The one place ONNX models are opened (onnxruntime, CPU) and their metadata read and checked.

Inference, analysis and the trainer's parity check all open sessions here, with the same
options; ``check_metadata`` checks a model's ``metadata_props`` against
``qsocube/schemas/onnx_metadata.json`` (what ``qsocube validate`` runs on a release's
models). onnxruntime is a core dependency; the ``onnx`` package (training only) is not
needed here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort

from qsocube.core import schema
from qsocube.core.errors import ModelError
from qsocube.core.grid import WavelengthGrid
from qsocube.core.parallel import available_cores

MAX_THREADS = 8  # the MLP is small: beyond a few cores the threads mostly wait on each other
N_QUANTILES = 1001  # length of train_recon_mse_quantiles


def default_threads() -> int:
    """onnxruntime threads: the cores this process may use (taskset/cgroups), at most 8."""
    return max(1, min(available_cores(), MAX_THREADS))


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Options for a small chain of matmuls: ``threads`` intra-op threads, no spinning."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1  # a chain of matmuls: no parallel branches to run
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning workers would burn the cores that read and resample the next batch.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # keep the user's terminal free of onnxruntime chatter
    return options


def open_session(path: str | Path, threads: int | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session of the model at ``path``; ModelError (one line) if the
    file is missing or not a readable ONNX model."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    try:
        return ort.InferenceSession(str(path), session_options(threads),
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types per failure
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a readable ONNX model ({first})") from None


def run(session: ort.InferenceSession, array: np.ndarray) -> list[np.ndarray]:
    """Every output of a one-input session for ``array`` (cast to contiguous float32)."""
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.ascontiguousarray(array, dtype=np.float32)})


def session_metadata(session: ort.InferenceSession) -> dict[str, str]:
    """The model's metadata_props (every value a string)."""
    return dict(session.get_modelmeta().custom_metadata_map)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata_props of the model file at ``path`` (ModelError if unreadable)."""
    return session_metadata(open_session(path, threads=1))


def required_keys() -> tuple[str, ...]:
    """Keys every qsocube model carries (``required`` in the schema)."""
    return tuple(k for k, v in schema.load("onnx_metadata")["keys"].items() if v["required"])


def release_keys(role: str) -> tuple[str, ...]:
    """Keys the release's exporter writes into a model of ``role``."""
    return tuple(k for k, v in schema.load("onnx_metadata")["keys"].items()
                 if (v["required"] or v.get("release")) and role in v.get("roles", [role]))


def format_problem(fmt: str, value: str) -> str | None:
    """None if ``value`` reads as ``fmt`` (a format of the metadata schema), else why not."""
    try:
        if fmt == "int":
            int(value)
        elif fmt == "float":
            float(value)
        elif fmt == "sha256":
            if not re.fullmatch(r"[0-9a-f]{64}", value):
                return "is not a sha256 hex digest"
        elif fmt == "version":
            if not re.fullmatch(r"\d+\.\d+\.\d+", value):
                return "is not a version MAJOR.MINOR.PATCH"
        elif fmt == "role":
            if value not in schema.load("onnx_metadata")["roles"]:
                return "is not encoder or decoder"
        elif fmt == "json":
            json.loads(value)
        elif fmt == "grid":
            WavelengthGrid.from_json(value)
        elif fmt == "quantiles":
            values = np.asarray(json.loads(value), dtype=np.float64)
            if (values.shape != (N_QUANTILES,) or not np.isfinite(values).all()
                    or (np.diff(values) < 0).any()):
                return f"is not {N_QUANTILES} finite, non-decreasing numbers"
    except (ValueError, TypeError):
        return f"does not read as {fmt}"
    return None


def check_metadata(meta: dict[str, str], *, release: bool = False) -> list[str]:
    """Problems of a model's metadata against the schema; [] if it conforms.

    Checks that the required keys (and with ``release`` every key the exporter writes for
    the model's role) are present, that each value reads in its format, and that
    ``grid_sha256`` is the grid's checksum.
    """
    keys = schema.load("onnx_metadata")["keys"]
    role = meta.get("role", "")
    wanted = release_keys(role) if release else required_keys()
    problems = [f"metadata lacks '{key}'" for key in wanted if key not in meta]
    for key, value in meta.items():
        if key in keys:
            problem = format_problem(keys[key]["format"], value)
            if problem:
                problems.append(f"metadata '{key}' {problem}")
    if not problems and "grid" in meta and "grid_sha256" in meta:
        if WavelengthGrid.from_json(meta["grid"]).sha256 != meta["grid_sha256"]:
            problems.append("metadata 'grid_sha256' does not match its grid")
    return problems
