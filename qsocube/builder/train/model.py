"""The InfoVAE (Zhao et al. 2017, as used by Portillo et al. 2020 and the study) and its loss.

The loss pieces are pure functions of tensors, so tests can check them against known
answers and the training loop, the benchmark and the evaluation all share one definition.

Per spectrum, with alpha = 0 by default:

    loss = recon + (1 - alpha) * KL + (lambda + alpha - 1) * L * MMD

    recon = sum over pixels of 0.5 * w * (x - x_hat)^2   (w: capped weights, 0 where masked)
    KL    = KL(N(mu, exp(logvar)) || N(0, I))
    MMD   = unbiased MMD^2 between the batch's sampled codes and 200 draws of N(0, I),
            RBF kernel k(a, b) = exp(-|a - b|^2 / L^2) (the kernel of Zhao et al.'s code)

The MMD is one number per batch; the issue scales it by batch size times L so that the
batch sum sits on the KL's scale, which per spectrum is L * MMD.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

N_PRIOR = 200  # draws of N(0, I) the batch's codes are compared with
LEAKY_SLOPE = 0.01
LOGVAR_MIN, LOGVAR_MAX = -30.0, 10.0  # keeps exp(logvar) finite in float32


class InfoVAE(nn.Module):
    """MLP encoder n_pix -> hidden... -> (mu, logvar) and the mirrored decoder."""

    def __init__(self, n_pix: int, latent_size: int, hidden: tuple[int, ...] = (256, 128),
                 dropout: float = 0.2, decoder_dropout: float | None = None) -> None:
        super().__init__()
        self.n_pix, self.latent_size, self.hidden = n_pix, latent_size, tuple(hidden)
        self.encoder = _mlp((n_pix, *hidden, 2 * latent_size), dropout)
        self.decoder = _mlp((latent_size, *reversed(hidden), n_pix),
                            dropout if decoder_dropout is None else decoder_dropout)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # asinh of the input: linear near the continuum level, logarithmic beyond, so a
        # spectrum whose median flux is near zero (flux / norm ~ 1e3) cannot blow up the
        # activations; it is part of the model (and of the ONNX graph), not a preprocessing
        return self.encode_asinh(torch.asinh(x))

    def encode_asinh(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """encode() from u = asinh(x): training computes u once per fit, not per batch."""
        h = self.encoder(u)
        logvar = h[:, self.latent_size:].clamp(LOGVAR_MIN, LOGVAR_MAX)
        return h[:, :self.latent_size], logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None,
                u: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_hat, mu, logvar, z) with z drawn by the reparameterisation trick; u is
        asinh(x) when the caller has it already."""
        mu, logvar = self.encode_asinh(torch.asinh(x) if u is None else u)
        z = reparameterise(mu, logvar, generator)
        return self.decode(z), mu, logvar, z


def _mlp(sizes: tuple[int, ...], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:  # no activation or dropout after the output layer
            layers += [nn.LeakyReLU(LEAKY_SLOPE), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


def reparameterise(mu: torch.Tensor, logvar: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def recon_term(x: torch.Tensor, x_hat: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Per spectrum: sum over pixels of 0.5 * w * (x - x_hat)^2."""
    return 0.5 * (w * (x - x_hat) ** 2).sum(dim=1)


def kl_term(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per spectrum: KL(N(mu, exp(logvar)) || N(0, I)) in nats."""
    return 0.5 * (mu**2 + torch.exp(logvar) - 1.0 - logvar).sum(dim=1)


def rbf_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """k(a_i, b_j) = exp(-|a_i - b_j|^2 / L^2): Zhao et al.'s exp(-mean_sq_diff / L)."""
    dim = a.shape[1]
    sq = (a.unsqueeze(1) - b.unsqueeze(0)).pow(2).sum(dim=2)
    return torch.exp(-sq / float(dim * dim))


def mmd_unbiased(z: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 estimate between samples z (n, L) and prior (m, L).

    The diagonal k(a, a) = 1 is excluded, so the estimate is ~0 when the codes follow
    N(0, I) (the biased estimate has a floor of ~1/n + 1/m); the gradient is the same up
    to a factor n / (n - 1).
    """
    n, m = z.shape[0], prior.shape[0]
    k_zz = rbf_kernel(z, z)
    k_pp = rbf_kernel(prior, prior)
    k_zp = rbf_kernel(z, prior)
    zz = (k_zz.sum() - torch.diagonal(k_zz).sum()) / max(n * (n - 1), 1)
    pp = (k_pp.sum() - torch.diagonal(k_pp).sum()) / max(m * (m - 1), 1)
    return zz + pp - 2.0 * k_zp.mean()


@dataclass(frozen=True)
class LossTerms:
    """Batch means per spectrum; ``total`` is what the optimiser minimises."""

    total: torch.Tensor
    recon: torch.Tensor
    kl: torch.Tensor
    mmd: torch.Tensor  # L * MMD^2, the MMD term per spectrum before its weight
    mse: torch.Tensor  # mean over spectra of the MSE over valid pixels
    # each spectrum's MSE over valid pixels (batch,), untracked: the robust training curve
    # takes its median, since a few spectra with norm ~ 0 (x ~ 1e3) dominate the mean
    spectrum_mse: torch.Tensor


def infovae_loss(x: torch.Tensor, w: torch.Tensor, x_hat: torch.Tensor, mu: torch.Tensor,
                 logvar: torch.Tensor, z: torch.Tensor, lam: float, alpha: float = 0.0,
                 generator: torch.Generator | None = None, n_prior: int = N_PRIOR
                 ) -> LossTerms:
    latent = z.shape[1]
    prior = torch.randn((n_prior, latent), generator=generator, dtype=z.dtype)
    sq = (x - x_hat) ** 2  # one pass shared by the loss and the (untracked) MSE
    # masked pixels (w = 0) add exactly 0, even where a diverging x_hat makes sq inf
    recon = 0.5 * torch.where(w > 0, w * sq, 0.0).sum(dim=1).mean()
    kl = kl_term(mu, logvar).mean()
    mmd = latent * mmd_unbiased(z, prior)
    total = recon + (1.0 - alpha) * kl + (lam + alpha - 1.0) * mmd
    with torch.no_grad():
        valid = w > 0
        spectrum_mse = torch.where(valid, sq, 0.0).sum(dim=1) / valid.sum(dim=1).clamp(min=1)
    return LossTerms(total, recon, kl, mmd, spectrum_mse.mean(), spectrum_mse)


def masked_mse(x: torch.Tensor, x_hat: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Per spectrum: mean squared residual over valid pixels (w > 0)."""
    valid = (w > 0).to(x.dtype)
    return ((x - x_hat) ** 2 * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1.0)
