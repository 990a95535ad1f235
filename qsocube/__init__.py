"""qsocube: a reproducible HDF5 cube of quasar spectra with a learned latent space.

One package, in one-way layers (enforced by the import-linter contracts in pyproject.toml):
``qsocube.cli`` (the command line) -> ``qsocube.pipeline`` (the release) -> the stages
``qsocube.builder``, ``qsocube.inference`` and ``qsocube.analysis`` (which never import
each other) -> ``qsocube.core`` (grid, preprocessing, readers, schemas and I/O,
validation, errors). ``qsocube.schemas`` holds the product schemas as package data. This
module holds only the version and imports nothing.
"""

__version__ = "0.4.2"
PRODUCT_VERSION = __version__
