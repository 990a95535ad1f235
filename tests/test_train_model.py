"""The InfoVAE's loss pieces and weights against known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from qsocube.builder.train.data import SIGMA_FLOOR, cap_weights  # noqa: E402
from qsocube.builder.train.fit import FitConfig, _train_epoch, evaluate, objective_from  # noqa: E402
from qsocube.builder.train.model import (  # noqa: E402
    InfoVAE,
    infovae_loss,
    kl_term,
    mmd_unbiased,
    rbf_kernel,
    recon_term,
)


def test_recon_term_is_half_weighted_squared_residual_summed_over_pixels():
    x = torch.tensor([[1.0, 2.0, 3.0]])
    x_hat = torch.tensor([[0.0, 2.0, 5.0]])
    w = torch.tensor([[2.0, 7.0, 0.0]])  # the masked pixel (w = 0) contributes nothing
    assert recon_term(x, x_hat, w).item() == pytest.approx(0.5 * 2.0 * 1.0)


def test_kl_term_known_values():
    zero = torch.zeros(1, 4)
    assert kl_term(zero, zero).item() == pytest.approx(0.0)
    # KL(N(1, 1) || N(0, 1)) = 1/2 per dimension; KL(N(0, e) || N(0, 1)) = (e - 1 - 1) / 2
    assert kl_term(torch.ones(1, 4), zero).item() == pytest.approx(2.0)
    assert kl_term(zero[:, :1], torch.ones(1, 1)).item() == pytest.approx((math.e - 2) / 2)


def test_rbf_kernel_is_zhaos_exp_of_mean_square_over_dim():
    a = torch.tensor([[0.0, 0.0, 0.0]])
    b = torch.tensor([[1.0, 2.0, 2.0]])  # |a - b|^2 = 9, L = 3 -> exp(-9 / 9)
    assert rbf_kernel(a, b).item() == pytest.approx(math.exp(-1.0))
    assert rbf_kernel(b, b).item() == pytest.approx(1.0)


def test_mmd_hand_computed_two_by_two():
    z = torch.tensor([[0.0], [1.0]])
    prior = torch.tensor([[0.0], [2.0]])
    k = lambda d: math.exp(-(d**2))  # noqa: E731  (L = 1)
    zz, pp = k(1), k(2)  # unbiased: off-diagonal pairs only
    zp = (k(0) + k(2) + k(1) + k(1)) / 4
    assert mmd_unbiased(z, prior).item() == pytest.approx(zz + pp - 2 * zp, rel=1e-6)


def test_mmd_near_zero_for_prior_samples_and_large_for_shifted_codes():
    g = torch.Generator().manual_seed(0)
    prior = torch.randn(400, 6, generator=g)
    same = torch.randn(400, 6, generator=g)
    shifted = same + 2.0
    assert abs(mmd_unbiased(same, prior).item()) < 0.01
    assert mmd_unbiased(shifted, prior).item() > 0.3


def test_total_loss_combines_terms_with_lambda_and_alpha():
    g = torch.Generator().manual_seed(1)
    x, w = torch.rand(8, 5, generator=g), torch.rand(8, 5, generator=g)
    x_hat, mu = torch.rand(8, 5, generator=g), torch.randn(8, 3, generator=g)
    logvar, z = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    lam, alpha = 7.0, 0.25
    t = infovae_loss(x, w, x_hat, mu, logvar, z, lam, alpha, torch.Generator().manual_seed(2))
    assert t.recon.item() == pytest.approx(recon_term(x, x_hat, w).mean().item(), rel=1e-6)
    assert t.kl.item() == pytest.approx(kl_term(mu, logvar).mean().item(), rel=1e-6)
    prior = torch.randn((200, 3), generator=torch.Generator().manual_seed(2))
    assert t.mmd.item() == pytest.approx(3 * mmd_unbiased(z, prior).item(), rel=1e-5)
    expected = t.recon + (1 - alpha) * t.kl + (lam + alpha - 1) * t.mmd
    assert t.total.item() == pytest.approx(expected.item(), rel=1e-6)
    # the search objective removes exactly the lambda-dependent part: recon + KL
    assert objective_from(t.total.item(), t.kl.item(), t.mmd.item(), lam, alpha) == (
        pytest.approx((t.recon + t.kl).item(), rel=1e-5))
    mse = (((x - x_hat) ** 2).sum(1) / 5).mean()  # every w > 0 here
    assert t.mse.item() == pytest.approx(mse.item(), rel=1e-6)


def test_per_spectrum_mse_counts_valid_pixels_only():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 4.0, 4.0]])
    x_hat = torch.tensor([[1.0, 0.0, 0.0], [5.0, 5.0, 0.0]])
    w = torch.tensor([[1.0, 1.0, 0.0], [2.0, 0.0, 0.0]])  # masked pixels: w == 0
    z = torch.zeros(2, 2)
    t = infovae_loss(x, w, x_hat, z, z, z, 1.0)
    np.testing.assert_allclose(t.spectrum_mse.numpy(), [(0 + 4) / 2, 1 / 1])
    assert t.mse.item() == pytest.approx(1.5)


class _Flat(torch.nn.Module):
    """Decodes every spectrum to one learnable constant (0): known per-spectrum MSEs."""

    def __init__(self) -> None:
        super().__init__()
        self.level = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, generator=None, u=None):
        codes = torch.zeros(len(x), 2)
        return self.level.expand_as(x), codes, codes, codes


def test_recorded_mse_median_is_the_bulk_when_one_spectrum_has_huge_x():
    # nine spectra at x = 0.3 (MSE 0.09 against the flat 0) and one at x = 1500 (a z > 5
    # spectrum with median flux ~ 0): the mean is ~2e5, the median stays the bulk's 0.09
    x = torch.full((10, 6), 0.3)
    x[4] = 1500.0
    w = torch.ones_like(x)
    config = FitConfig(latent_size=2, lam=1.0, batch_size=4)
    model = _Flat()
    val = evaluate(model, x, w, config)
    assert val["mse_median"] == pytest.approx(0.09, rel=1e-5)
    assert val["mse"] == pytest.approx((9 * 0.09 + 1500.0**2) / 10, rel=1e-5)
    # training: lr 0 keeps the model flat through the epoch's batches (4, 4, 2 rows)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.0)
    train = _train_epoch(model, optimiser, x, w, config, torch.Generator().manual_seed(0))
    assert train["mse_median"] == pytest.approx(0.09, rel=1e-5)
    assert train["mse"] > 1e5


def test_cap_weights_is_a_variance_floor_relative_above_the_continuum():
    w = np.array([0.0, 1.0, 100.0, 1e4, 1e8], np.float32)
    x = np.ones_like(w)
    capped = cap_weights(w, x)
    cap = 1 / SIGMA_FLOOR**2
    assert capped[0] == 0 and np.all(np.diff(capped) > 0) and capped.max() < cap
    np.testing.assert_allclose(capped[1:], 1 / (1 / w[1:].astype(np.float64) + SIGMA_FLOOR**2),
                               rtol=1e-5)
    assert capped[1] == pytest.approx(1.0, rel=1e-3)  # ordinary pixels barely change
    assert capped[-1] == pytest.approx(cap, rel=1e-3)
    # above the continuum the floor is 2% of the pixel's own flux, whatever its sign
    bright = cap_weights(np.array([1e8, 1e8, 1e8], np.float32), np.array([100.0, -100.0, 0.5]))
    np.testing.assert_allclose(bright, [1 / (SIGMA_FLOOR * 100) ** 2] * 2 + [cap], rtol=1e-3)


def test_model_shapes_and_eval_mode_is_deterministic():
    torch.manual_seed(0)
    model = InfoVAE(50, 4, hidden=(16, 8)).eval()
    x = torch.randn(3, 50)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (3, 4)
    assert model.decode(mu).shape == (3, 50)
    assert torch.equal(model.encode(x)[0], mu)  # no dropout in eval mode
    model.train()
    assert not torch.equal(model.encode(x)[0], mu)  # dropout 0.2 is active in training
