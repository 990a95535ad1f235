"""Training: lambda search, InfoVAE training, ONNX export and write-back into the cube.

``train_release`` (in ``qsocube.builder.train.pipeline``) is what the release pipeline
calls and ``qsocube train`` wraps. This module stays free of torch so that importing the
package is instant; the budgets live in ``qsocube.core.defaults``.
"""

from __future__ import annotations

from typing import Any


def train_release(*args: Any, **kwargs: Any) -> dict:
    """See qsocube.builder.train.pipeline.train_release (imported lazily: it needs torch)."""
    from qsocube.builder.train.pipeline import train_release as run

    return run(*args, **kwargs)


__all__ = ["train_release"]
