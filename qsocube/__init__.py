"""qsocube: a reproducible HDF5 cube of quasar spectra with a learned latent space.

The ``qsocube`` package holds what every stage shares: the wavelength grid, the
preprocessing (resampling and normalisation), the spec-lite reader, the cube schema
and the cube I/O. It needs only numpy, h5py and astropy, so ``inference`` can use it
on machines without torch.
"""

__version__ = "0.2.0"
PRODUCT_VERSION = __version__
