"""A lambda search's settings (``SearchConfig``) and the objective it minimises.

The settings decide what a search is (``identity``: a resumed search must match it), what
a finished write-back was made with (``budget``) and how each call trains (``fit_config``).
They cross process boundaries as JSON (``to_json``/``from_json``), never pickled.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from qsocube.builder.train.data import SIGMA_FLOOR
from qsocube.builder.train.fit import FitConfig

STATE_VERSION = 1
ENCODER_DROPOUT = 0.2  # the study's; the profiles set their own
# Wide on purpose: per spectrum the weighted reconstruction term is ~n_pix / 2 at chi2 = 1
# and the MMD term at most 2 L, so lambda below ~10 leaves the MMD negligible while 1e3-1e4
# lets it dominate; lambda < 1 makes its weight (lambda - 1) negative, the study's optimum
# (5-9 under its own scaling) sits inside. The search sees all three regimes.
LOG10_LAMBDA_RANGE = (-1.0, 4.0)
OBJECTIVE_DEFINITION = (
    "validation negative ELBO per spectrum of the model at its best epoch (lowest validation "
    "loss; early stopping): mean over validation spectra (split == 1) of "
    "sum_pixels 0.5 * w_cap * (x - x_hat)^2 + KL(q(z|x) || N(0, I)), in eval mode (no "
    "dropout) with x_hat decoded from one draw z ~ q(z|x) from a fixed-seed generator; "
    "w_cap = w / (1 + w * (0.02 * max(|x|, 1))^2) with x = flux / norm, w = ivar * norm^2 "
    "(0 where mask != 0): a 2% variance floor. This is the "
    "loss without its lambda-weighted MMD term, so models with different lambda compare "
    "on equal terms; history/val_loss adds (lambda + alpha - 1) * mmd - alpha * kl to it.")


@dataclass(frozen=True)
class SearchConfig:
    latent_size: int
    n_calls: int
    max_epochs: int
    batch_size: int = 256
    seed: int = 0
    hidden: tuple[int, ...] = (256, 128)
    alpha: float = 0.0
    dropout: float = ENCODER_DROPOUT
    decoder_dropout: float | None = None  # None: the same as the encoder's
    lr: float = 1e-3
    patience: int = 5
    lr_patience: int = 2
    sigma_floor: float = SIGMA_FLOOR
    log10_lambda_range: tuple[float, float] = LOG10_LAMBDA_RANGE
    # Space-filling (Latin hypercube) calls before the GP guides the search; fixed rather
    # than derived from n_calls so that raising n_calls extends a search instead of
    # restarting it. With n_calls <= 4 every call is one of these points.
    n_initial_points: int = 4
    # Calls asked (and told) together per latent size; 1 is the plain sequential search.
    parallel_calls: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SearchConfig:
        fields = json.loads(text)
        fields["hidden"] = tuple(fields["hidden"])
        fields["log10_lambda_range"] = tuple(fields["log10_lambda_range"])
        return cls(**fields)

    def identity(self, cube_sha256: str) -> dict:
        """What makes two searches the same search (the number of calls only extends it)."""
        settings = {**asdict(self), "hidden": list(self.hidden),
                    "log10_lambda_range": list(self.log10_lambda_range)}
        settings.pop("n_calls")
        if self.parallel_calls == 1:  # states and cubes made before the option stay valid
            settings.pop("parallel_calls")
        return {"state_version": STATE_VERSION, "cube_sha256": cube_sha256, **settings}

    def budget(self, cube_sha256: str) -> dict:
        """The identity plus the number of calls: what a finished write-back was made with."""
        return {**self.identity(cube_sha256), "n_calls": self.n_calls}

    def fit_config(self, lam: float) -> FitConfig:
        return FitConfig(latent_size=self.latent_size, lam=lam, alpha=self.alpha,
                         hidden=self.hidden, dropout=self.dropout,
                         decoder_dropout=self.decoder_dropout, batch_size=self.batch_size,
                         max_epochs=self.max_epochs, lr=self.lr, patience=self.patience,
                         lr_patience=self.lr_patience, seed=self.seed * 1000 + self.latent_size)


def call_label(config: SearchConfig, call: int, lam: float) -> str:
    return f"latent {config.latent_size:02d} call {call + 1}/{config.n_calls} lambda {lam:.3g}: "
