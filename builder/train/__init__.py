"""Training: lambda search, InfoVAE training, ONNX export and write-back into the cube.

``train_release`` (in ``builder.train.pipeline``) is what ``qsocube release`` calls and
``qsocube train`` wraps. This module stays free of torch so that importing the package
(for the profiles or the CLI's argument parser) is instant.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from typing import Any

LATENT_SIZES = (3, 6, 9, 12, 15)
BUDGET_KEYS = ("n_calls", "max_epochs", "batch_size", "seed", "decoder_dropout")


def profiles() -> dict[str, dict[str, float]]:
    """Training budgets per release profile, from the one profile table (qsocube/profiles.toml)."""
    table = tomllib.loads(resources.files("qsocube").joinpath("profiles.toml").read_text())
    return {name: {k: (float(v) if k == "decoder_dropout" else int(v))
                   for k, v in settings.items() if k in BUDGET_KEYS}
            for name, settings in table.items()}


def train_release(*args: Any, **kwargs: Any) -> dict:
    """See builder.train.pipeline.train_release (imported lazily: it needs torch)."""
    from builder.train.pipeline import train_release as run

    return run(*args, **kwargs)


__all__ = ["LATENT_SIZES", "profiles", "train_release"]
