"""The product's defaults, each in one place: latent sizes, selection thresholds, partition
size and the release profiles (``profiles.toml`` beside this module).

The wavelength grid's default is ``qsocube.core.grid.DEFAULT_GRID`` (the field defaults of
``WavelengthGrid``); everything else that needs a grid default takes it from there.
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from importlib import resources
from typing import Any

# Latent sizes of a release's models (the study's sizes).
LATENT_SIZES: tuple[int, ...] = (3, 6, 9, 12, 15)
# Encoder hidden layer sizes (mirrored in the decoder), as in the study.
HIDDEN: tuple[int, ...] = (256, 128)
# The study's "snr10" sample: SN_MEDIAN_ALL >= 10.
MIN_SNR = 10.0
# Spectra with fewer valid grid pixels are left out of the cube and rejected by encode:
# below this, the masked part would dominate what the encoder sees.
MIN_COVERED_FRACTION = 0.8
# Files (build) or spectra (encode) per partition: the unit of parallel work and of memory.
BATCH_SIZE = 1024
# Training batch size when neither the profile nor the command line sets one.
TRAIN_BATCH_SIZE = 256
# Profile keys that are a training budget (the rest size the simulated survey).
BUDGET_KEYS = ("n_calls", "max_epochs", "batch_size", "seed", "dropout", "decoder_dropout")
PROFILES_FILE = "profiles.toml"
DEFAULT_PROFILE = "default"


@lru_cache(maxsize=1)
def _profile_text() -> str:
    return resources.files("qsocube.core").joinpath(PROFILES_FILE).read_text()


def load_profiles() -> dict[str, dict[str, Any]]:
    """Every release profile: {name: {n_quasars, seed, n_calls, max_epochs, ...}}."""
    return tomllib.loads(_profile_text())


def training_budgets() -> dict[str, dict[str, float]]:
    """The training budget of each profile (``BUDGET_KEYS``, typed)."""
    return {name: {k: (float(v) if k.endswith("dropout") else int(v))
                   for k, v in settings.items() if k in BUDGET_KEYS}
            for name, settings in load_profiles().items()}
