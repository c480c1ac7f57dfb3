"""BetaVAE shapes and size; metrics against plain numpy computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from arcvae.metrics import Tally, batch_metrics, format_per_class
from arcvae.model import BetaVAE, count_parameters


def test_default_model_has_the_spec_parameter_count():
    assert count_parameters(BetaVAE()) == 801_034


def test_shapes_and_clamps():
    model = BetaVAE(latent_dim=8)
    grids = torch.randint(0, 10, (5, 16, 16))
    logits, mu, logvar = model(grids)
    assert logits.shape == (5, 10, 16, 16) and mu.shape == logvar.shape == (5, 8)
    with torch.no_grad():
        model.fc_mu.bias.fill_(100.0)
        model.fc_logvar.bias.fill_(-100.0)
    _, mu, logvar = model(grids)
    assert float(mu.detach().max()) == 5.0 and float(logvar.detach().min()) == -20.0


def test_eval_mode_is_deterministic_and_train_mode_samples():
    torch.manual_seed(0)
    model = BetaVAE()
    grids = torch.randint(0, 10, (2, 16, 16))
    model.eval()
    assert torch.equal(model(grids)[0], model(grids)[0])
    model.train()
    assert not torch.equal(model(grids)[0], model(grids)[0])


@given(st.integers(0, 10_000))
def test_metrics_match_numpy(seed):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 10, size=(4, 16, 16))
    targets[rng.random(targets.shape) < 0.8] = 0
    targets[:, :, :] = np.where(targets == 7, 0, targets)  # colour 7 absent
    preds = np.where(rng.random(targets.shape) < 0.7, targets, rng.integers(0, 10, size=targets.shape))
    m = batch_metrics(torch.from_numpy(preds), torch.from_numpy(targets))
    hit = preds == targets
    assert m["pixel_accuracy"] == pytest.approx(hit.mean())
    fg = targets != 0
    assert m["foreground_accuracy"] == pytest.approx(hit[fg].mean() if fg.any() else None)
    per_class = [hit[targets == c].mean() if (targets == c).any() else None for c in range(10)]
    assert m["per_class_accuracy"][7] is None
    assert m["per_class_accuracy"] == pytest.approx(per_class)
    assert m["balanced_accuracy"] == pytest.approx(np.mean([a for a in per_class if a is not None]))
    assert m["perfect_rate"] == pytest.approx(hit.reshape(4, -1).all(axis=1).mean())


def test_all_black_prediction_scores_high_pixel_but_zero_foreground_accuracy():
    targets = torch.zeros(2, 16, 16, dtype=torch.long)
    targets[:, :4, :4] = 3
    m = batch_metrics(torch.zeros_like(targets), targets)
    assert m["pixel_accuracy"] == pytest.approx(240 / 256) and m["foreground_accuracy"] == 0.0
    assert m["balanced_accuracy"] == pytest.approx(0.5)


def test_tally_accumulates_like_one_big_batch():
    rng = np.random.default_rng(1)
    p, t = (torch.from_numpy(rng.integers(0, 10, (6, 16, 16))) for _ in range(2))
    tally = Tally.zeros(10)
    tally.update(p[:2], t[:2])
    tally.update(p[2:], t[2:])
    assert tally.summary() == batch_metrics(p, t)


@given(st.integers(0, 10_000))
def test_perfect_rate_counts_the_grids_without_a_wrong_pixel(seed):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 10, size=(12, 16, 16))
    preds = targets.copy()
    wrong = rng.random(12) < 0.5
    for i in np.flatnonzero(wrong):  # one wrong pixel is enough to spoil a grid
        y, x = rng.integers(0, 16, size=2)
        preds[i, y, x] = (targets[i, y, x] + 1 + rng.integers(0, 9)) % 10
    perfect = [np.array_equal(p, t) for p, t in zip(preds, targets)]
    assert sum(perfect) == 12 - wrong.sum()
    direct = sum(perfect) / 12
    assert batch_metrics(torch.from_numpy(preds), torch.from_numpy(targets))["perfect_rate"] == direct
    tally = Tally.zeros(10)
    for part in np.array_split(np.arange(12), 3):
        tally.update(torch.from_numpy(preds[part]), torch.from_numpy(targets[part]))
    assert tally.summary()["perfect_rate"] == direct


def test_format_per_class_marks_absent_classes():
    assert format_per_class([0.923, None, 1.0]) == ["0.92", "-", "1.00"]
