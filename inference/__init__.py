"""Encode new spectra with a release's ONNX encoder and decoder, with onnxruntime alone.

Needs only numpy, h5py, astropy, onnxruntime and the ``qsocube`` core package (never torch):

    from inference import Encoder
    enc = Encoder("products/default/models/infovae_latent09_encoder.onnx")
    result = enc.encode_files(["spec-0266-51602-0013.fits"])   # or enc.encode(flux, ivar)
    result.latent_mean, result.anomaly_score, result.to_xarray()
"""

from inference.encoder import DEFAULT_MIN_COVERED, Encoded, Encoder, check_against_cube
from inference.model import ModelError
from inference.sources import FLAG_MEANINGS

__all__ = ["DEFAULT_MIN_COVERED", "FLAG_MEANINGS", "Encoded", "Encoder", "ModelError",
           "check_against_cube"]
