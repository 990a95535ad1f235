"""ONNX export of a trained InfoVAE: encoder and decoder, self-contained, checked, described.

The TorchScript exporter is used first (about 0.3 s per file against about 1-5 s for the
dynamo exporter, which matters with ten files in a two-minute smoke release); the dynamo
exporter is the fallback where the former is gone. Both give a dynamic batch axis.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from qsocube.builder.train.model import InfoVAE
from qsocube.core.atomic import atomic_path
from qsocube.core.cube import file_sha256
from qsocube.core.layout import onnx_names
from qsocube.core.onnxmodel import open_session, release_keys, run
from qsocube.core.preprocess import encoder_input

OPSET = 18


class _Encoder(nn.Module):
    def __init__(self, model: InfoVAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # the graph takes u = asinh(x) (qsocube.core.preprocess.encoder_input), see input_layout
        return self.model.encode_asinh(u)


class _Decoder(nn.Module):
    def __init__(self, model: InfoVAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z)


def _export_bytes(module: nn.Module, example: torch.Tensor, input_name: str,
                  output_names: list[str]) -> bytes:
    module.eval()
    axes = {name: {0: "batch"} for name in [input_name, *output_names]}
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), buffer, input_names=[input_name],
                              output_names=output_names, opset_version=OPSET, dynamo=False,
                              dynamic_axes=axes, do_constant_folding=True)
        return buffer.getvalue()
    except (TypeError, RuntimeError, ValueError, ImportError):  # legacy exporter gone: dynamo
        program = torch.onnx.export(
            module, (example,), input_names=[input_name], output_names=output_names,
            opset_version=OPSET, dynamo=True, external_data=False,
            dynamic_shapes={input_name: {0: torch.export.Dim("batch")}})
        return program.model_proto.SerializeToString()


def check_onnx(path: str | Path):
    """Full onnx.checker check plus our own: no external data, batch axis dynamic."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(model, full_check=True)
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise ValueError(f"{path}: initializer {tensor.name} is stored outside the file")
    for value in [*model.graph.input, *model.graph.output]:
        first = value.type.tensor_type.shape.dim[0]
        if not first.dim_param or first.dim_value:
            raise ValueError(f"{path}: {value.name} has a fixed batch axis")
    return model


def export_model(model: InfoVAE, models_dir: Path, metadata: dict[str, str],
                 encoder_extra: dict[str, str] | None = None) -> dict[str, str]:
    """Write both halves atomically; returns their file names and sha256."""
    import onnx

    models_dir = Path(models_dir)
    latent = model.latent_size
    encoder_name, decoder_name = onnx_names(latent)
    model = model.eval()
    halves = (
        ("encoder", encoder_name, decoder_name, _Encoder(model),
         torch.zeros(2, model.n_pix), "u", ["mu", "logvar"], encoder_extra or {}),
        ("decoder", decoder_name, encoder_name, _Decoder(model),
         torch.zeros(2, latent), "z", ["x_hat"], {}),
    )
    out: dict[str, str] = {}
    for role, name, partner, module, example, input_name, outputs, extra in halves:
        proto = onnx.load_from_string(_export_bytes(module, example, input_name, outputs))
        proto.producer_name, proto.doc_string = "qsocube.builder.train", (
            f"InfoVAE {role}, latent size {latent}; see metadata_props")
        props = {**metadata, **extra, "role": role, "partner": partner,
                 "input_layout": input_layout(role, model.n_pix, latent)}
        missing = [key for key in release_keys(role) if key not in props]
        if missing:  # the schema (onnx_metadata.json) and the exporter must agree
            raise ValueError(f"{name}: metadata lacks {', '.join(missing)}")
        del proto.metadata_props[:]
        for key in sorted(props):
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, str(props[key])
        path = models_dir / name
        with atomic_path(path) as tmp:
            onnx.save_model(proto, str(tmp), save_as_external_data=False)
            check_onnx(tmp)
        out[f"{role}_onnx"], out[f"{role}_sha256"] = name, file_sha256(path)
    return out


def input_layout(role: str, n_pix: int, latent: int) -> str:
    if role == "encoder":
        return json.dumps({
            "input": "u", "dtype": "float32", "shape": ["batch", n_pix],
            "values": "u = asinh(x), x = flux / norm on the metadata's grid, 0 where "
                      "mask != 0 (qsocube.core.preprocess.model_input, then encoder_input); "
                      "norm = median flux over valid pixels",
            "outputs": {"mu": ["batch", latent], "logvar": ["batch", latent]}})
    return json.dumps({
        "input": "z", "dtype": "float32", "shape": ["batch", latent],
        "values": "latent codes (the encoder's mu for the point reconstruction)",
        "outputs": {"x_hat": ["batch", n_pix]},
        "output_values": "reconstructed flux / norm on the metadata's grid"})


def onnx_outputs(path: str | Path, array: np.ndarray) -> list[np.ndarray]:
    """Run one ONNX file on CPU (for checks and tests)."""
    return run(open_session(path), array)


def metadata_of(path: str | Path) -> dict[str, str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def parity(model: InfoVAE, encoder_path: str | Path, decoder_path: str | Path,
           x: np.ndarray) -> float:
    """Max abs difference between onnxruntime and torch (mu, logvar, x_hat) at batch 1 and
    at the size of ``x``."""
    model = model.eval()
    worst = 0.0
    for batch in (x[:1], x):
        with torch.no_grad():
            mu, logvar = model.encode(torch.from_numpy(batch))
            x_hat = model.decode(mu)
        o_mu, o_logvar = onnx_outputs(encoder_path, encoder_input(batch))
        (o_x_hat,) = onnx_outputs(decoder_path, mu.numpy())
        for ours, theirs in ((o_mu, mu), (o_logvar, logvar), (o_x_hat, x_hat)):
            worst = max(worst, float(np.max(np.abs(ours - theirs.numpy()))))
    return worst
