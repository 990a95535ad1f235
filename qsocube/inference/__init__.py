"""Encode new spectra with a release's ONNX encoder and decoder, with onnxruntime alone.

Needs only numpy, h5py, astropy, onnxruntime and ``qsocube.core`` (never torch):

    from qsocube.inference import Encoder
    enc = Encoder("products/default/models/infovae_latent09_encoder.onnx")
    result = enc.encode_files(["spec-0266-51602-0013.fits"])   # or enc.encode(flux, ivar)
    result.latent_mean, result.anomaly_score, result.flag, result.to_xarray()

``result.flag`` holds ``qsocube.core.errors.Rejection`` codes (0: encoded).
"""

from qsocube.core.errors import ModelError, Rejection
from qsocube.inference.encoder import DEFAULT_MIN_COVERED, Encoded, Encoder, check_against_cube

__all__ = ["DEFAULT_MIN_COVERED", "Encoded", "Encoder", "ModelError", "Rejection",
           "check_against_cube"]
