"""Reconstructions from a release's ONNX decoder (onnxruntime only; the analysis never
imports torch). The decoder is the file that the model group's ``decoder_onnx`` attribute
names, checked against ``decoder_sha256`` so a swapped file cannot draw wrong curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qsocube.analysis.io import AnalysisError, Release
from qsocube.core.cube import file_sha256
from qsocube.core.onnxmodel import open_session, run


def decode(decoder: Path, latent_mean: np.ndarray) -> np.ndarray:
    """x_hat (n, n_pix) in normalised flux units from latent means (n, L)."""
    return run(open_session(decoder), latent_mean)[0]


def reconstruct(release: Release, latent_size: int, rows: np.ndarray
                ) -> tuple[np.ndarray | None, str]:
    """(flux-unit reconstructions of ``rows`` or None, note). None when the decoder is absent,
    so figures still show the data with a note; a corrupt or mismatched decoder is an error."""
    model = release.models[latent_size]
    path = release.decoder_path(latent_size)
    if not path.is_file():
        return None, f"decoder {path.name or '(unnamed)'} not found in {path.parent}"
    expected = str(model.attrs.get("decoder_sha256", ""))
    if expected and file_sha256(path) != expected:
        raise AnalysisError(f"{path}: sha256 differs from the cube's decoder_sha256 for "
                            f"latent size {latent_size} (decoder from another training run?)")
    latent = np.asarray(model.data["latent_mean"].values)[rows]
    try:
        x_hat = decode(path, latent)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise AnalysisError(f"{path}: cannot run the decoder ({' '.join(str(exc).split())})"
                            ) from exc
    norm = np.asarray(release.spectra["norm"].values)[rows]
    return x_hat * norm[:, None], f"decoder {path.name}"
