"""Focal loss, KL with free bits, beta schedules."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from arcvae.errors import ArcvaeError
from arcvae.losses import BetaSchedule, FocalLoss, focal_loss, kl_divergence


def _batch(seed: int, n: int = 3, c: int = 10, hw: int = 4):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, hw, hw, generator=g) * 3
    target = torch.randint(0, c, (n, hw, hw), generator=g)
    alpha = torch.rand(c, generator=g) + 0.1
    return logits, target, alpha


@given(st.integers(0, 10_000))
def test_gamma_zero_with_alpha_is_weighted_cross_entropy_per_pixel(seed):
    logits, target, alpha = _batch(seed)
    ours = focal_loss(logits, target, alpha, gamma=0.0, reduction="none")
    reference = F.cross_entropy(logits, target, weight=alpha, reduction="none")
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(focal_loss(logits, target, alpha, gamma=0.0), reference.mean())


@given(st.integers(0, 10_000), st.sampled_from([0.5, 1.0, 2.0, 3.0]))
def test_focal_matches_its_formula(seed, gamma):
    logits, target, alpha = _batch(seed)
    p = logits.softmax(dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
    expected = alpha[target] * (1 - p) ** gamma * -torch.log(p)
    torch.testing.assert_close(
        focal_loss(logits, target, alpha, gamma=gamma, reduction="none"), expected, rtol=1e-4, atol=1e-6
    )
    assert bool(
        (
            focal_loss(logits, target, gamma=gamma, reduction="none")
            <= F.cross_entropy(logits, target, reduction="none") + 1e-6
        ).all()
    )


def test_ignore_index_excludes_pixels_from_the_mean():
    logits, target, alpha = _batch(0)
    masked = target.clone()
    masked[0] = -100
    full = focal_loss(logits, target, alpha, reduction="none")
    got = focal_loss(logits, masked, alpha, ignore_index=-100)
    torch.testing.assert_close(got, full[1:].mean())
    assert float(focal_loss(logits, masked, alpha, ignore_index=-100, reduction="none")[0].abs().sum()) == 0.0


def test_module_equals_function_and_moves_alpha():
    logits, target, alpha = _batch(1)
    module = FocalLoss(alpha, gamma=1.5)
    torch.testing.assert_close(module(logits, target), focal_loss(logits, target, alpha, gamma=1.5))
    assert "alpha" in dict(module.named_buffers())
    assert module.to(torch.float64).alpha.dtype == torch.float64


def test_gradients_are_finite_at_perfect_confidence():
    logits = torch.zeros(1, 3, 2, 2)
    logits[:, 0] = 60.0
    logits.requires_grad_(True)
    loss = focal_loss(logits, torch.zeros(1, 2, 2, dtype=torch.long), gamma=2.0)
    loss.backward()
    assert math.isfinite(float(loss.detach())) and bool(torch.isfinite(logits.grad).all())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": torch.zeros(2, 4, 4, dtype=torch.long)}, "Expected `target` of shape [3, 4, 4]"),
        ({"alpha": torch.ones(9)}, "Expected `alpha` of shape [10], but got [9]"),
        ({"gamma": -1.0}, "Expected `gamma` >= 0, but got -1.0"),
        ({"reduction": "avg"}, "Expected `reduction` to be 'mean', 'sum' or 'none', but got 'avg'"),
    ],
)
def test_focal_errors(kwargs, message):
    logits, target, _ = _batch(0)
    args = {"logits": logits, "target": target, **kwargs}
    with pytest.raises(ArcvaeError) as info:
        focal_loss(**args)
    assert message in str(info.value)


def test_kl_is_zero_at_the_prior_and_matches_closed_form():
    mu, logvar = torch.zeros(4, 8), torch.zeros(4, 8)
    assert float(kl_divergence(mu, logvar)) == 0.0
    mu, logvar = torch.full((2, 3), 1.0), torch.full((2, 3), math.log(2.0))
    expected = 3 * 0.5 * (1.0 + 2.0 - 1.0 - math.log(2.0))
    assert float(kl_divergence(mu, logvar)) == pytest.approx(expected)
    assert float(kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3), free_bits=0.25)) == pytest.approx(0.75)


def test_beta_schedules():
    warm = BetaSchedule("linear_warmup", beta_max=2.0, warmup_epochs=2, ramp_epochs=4)
    assert [warm(e) for e in (0, 1.9, 2, 4, 6, 50)] == [0.0, 0.0, 0.0, 1.0, 2.0, 2.0]
    cyc = BetaSchedule("cyclical", beta_max=1.0, cycle_epochs=4)
    assert [cyc(e) for e in (0, 1, 2, 3, 4, 5)] == [0.0, 0.5, 1.0, 1.0, 0.0, 0.5]
    assert BetaSchedule("constant", beta_max=0.3)(17) == 0.3
    with pytest.raises(ArcvaeError, match="linear_warmup, cyclical or constant, but got 'sigmoid'"):
        BetaSchedule("sigmoid")  # type: ignore[arg-type]
    with pytest.raises(ArcvaeError, match="beta_max"):
        BetaSchedule(beta_max=-1.0)
