"""Resumable search state on disk: one JSON file and one weights file per latent size.

``state_dir/train_latentNN.json`` holds the search's identity and one record per finished
call (written atomically after every call); ``train_latentNN_best.pt`` the weights of the
best call so far (a plain state_dict, loaded with ``weights_only=True``);
``train_latentNN_callCC.pt`` a finished call's weights on their way to becoming the best.
None of this is part of a release's product.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from qsocube.builder.train.fit import Progress
from qsocube.builder.train.model import InfoVAE
from qsocube.core.atomic import atomic_path, write_text_atomic


@dataclass
class SearchState:
    identity: dict
    calls: list[dict] = field(default_factory=list)

    def best_index(self, n_calls: int) -> int | None:
        scored = [(c["objective"], i) for i, c in enumerate(self.calls[:n_calls])
                  if c["objective"] is not None]
        return min(scored)[1] if scored else None


def state_path(state_dir: Path, latent_size: int) -> Path:
    return Path(state_dir) / f"train_latent{latent_size:02d}.json"


def checkpoint_path(state_dir: Path, latent_size: int) -> Path:
    return Path(state_dir) / f"train_latent{latent_size:02d}_best.pt"


def call_weights_path(state_dir: Path, latent_size: int, call: int) -> Path:
    return Path(state_dir) / f"train_latent{latent_size:02d}_call{call:02d}.pt"


def remove_call_weights(state_dir: Path, latent_size: int) -> None:
    """Weights of calls an interrupted run finished but never recorded (they are redone)."""
    for path in Path(state_dir).glob(f"train_latent{latent_size:02d}_call*.pt"):
        path.unlink()


def load_state(state_dir: Path, identity: dict, progress: Progress | None = None
               ) -> SearchState:
    path = state_path(state_dir, identity["latent_size"])
    if path.exists():
        try:
            stored = json.loads(path.read_text())
            if not isinstance(stored, dict) or not isinstance(stored.get("calls", []), list):
                raise ValueError("not a search state")
        except (OSError, ValueError) as exc:  # damaged: it is a cache, start over
            if progress:
                progress(f"{path}: search state does not load ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:80]}); discarded, the search starts "
                         "again")
            return SearchState(identity)
        if stored.get("identity") == identity:
            return SearchState(identity, stored.get("calls", []))
        if progress:
            progress(f"{path.name}: settings or cube changed; starting a new search")
    return SearchState(identity)


def save_state(state_dir: Path, state: SearchState) -> None:
    path = state_path(state_dir, state.identity["latent_size"])
    text = json.dumps({"identity": state.identity, "calls": state.calls}, indent=1)
    write_text_atomic(path, text + "\n")


def save_checkpoint(path: Path, model: InfoVAE, call: int) -> None:
    """torch.save of a plain state_dict (loaded back with weights_only=True)."""
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state["call"] = torch.tensor(call)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, model: InfoVAE, progress: Progress | None = None
                    ) -> int | None:
    """Load weights into ``model``; the call they belong to, or None if absent or unusable.

    A checkpoint that does not load (truncated, overwritten, not torch's format: any
    error) is discarded with a message, and the caller retrains its call.
    """
    if not path.exists():
        return None
    try:
        state = torch.load(path, weights_only=True)
        model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
        return int(state["call"])
    except Exception as exc:  # any damage: torch raises many types (UnpicklingError, ...)
        if progress:
            progress(f"{path}: checkpoint does not load ({type(exc).__name__}: "
                     f"{' '.join(str(exc).split())[:80]}); discarded, its search call is "
                     "trained again")
        path.unlink(missing_ok=True)
        return None
