"""Focal loss against hand-computed values and a plain-torch oracle."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedfocal_app.losses import balanced_alpha, focal_loss


def oracle(logits, targets, gamma, alpha=None):
    """Textbook FL = -alpha_y (1 - p_y)^gamma log p_y, per example, from softmax."""
    p = torch.softmax(logits.double(), dim=1)
    out = []
    for i, t in enumerate(targets.tolist()):
        a = 1.0 if alpha is None else float(alpha[t])
        out.append(-a * (1 - p[i, t]) ** gamma * torch.log(p[i, t]))
    return torch.stack(out)


def test_hand_computed_value():
    # Two classes, logits (0, 0): p_y = 1/2, so FL = (1/2)^2 * log 2 for gamma = 2.
    logits = torch.zeros(1, 2)
    loss = focal_loss(logits, torch.tensor([1]), gamma=2.0)
    assert loss.item() == pytest.approx(0.25 * math.log(2), rel=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 5.0])
def test_matches_oracle(gamma):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 5, generator=g) * 3
    targets = torch.randint(0, 5, (16,), generator=g)
    alpha = torch.rand(5, generator=g) + 0.5
    got = focal_loss(logits, targets, gamma=gamma, alpha=alpha, reduction="none")
    torch.testing.assert_close(got.double(), oracle(logits, targets, gamma, alpha), rtol=1e-5, atol=1e-6)


def test_gamma_zero_equals_cross_entropy():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(32, 10, generator=g)
    targets = torch.randint(0, 10, (32,), generator=g)
    for reduction in ("none", "mean", "sum"):
        torch.testing.assert_close(
            focal_loss(logits, targets, gamma=0.0, reduction=reduction),
            F.cross_entropy(logits, targets, reduction=reduction),
        )


def test_alpha_scales_each_example_and_mean_is_over_examples():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    targets = torch.tensor([0, 0])
    alpha = torch.tensor([3.0, 1.0])
    per = focal_loss(logits, targets, gamma=0.0, alpha=alpha, reduction="none")
    ce = F.cross_entropy(logits, targets, reduction="none")
    torch.testing.assert_close(per, 3.0 * ce)
    torch.testing.assert_close(focal_loss(logits, targets, 0.0, alpha), (3.0 * ce).mean())


def test_reductions_shapes():
    logits, targets = torch.randn(7, 3), torch.randint(0, 3, (7,))
    none = focal_loss(logits, targets, reduction="none")
    assert none.shape == (7,)
    torch.testing.assert_close(focal_loss(logits, targets, reduction="sum"), none.sum())
    torch.testing.assert_close(focal_loss(logits, targets, reduction="mean"), none.mean())


def test_focusing_down_weights_easy_examples():
    easy = focal_loss(torch.tensor([[6.0, 0.0]]), torch.tensor([0]), gamma=2.0)
    easy_ce = F.cross_entropy(torch.tensor([[6.0, 0.0]]), torch.tensor([0]))
    hard = focal_loss(torch.tensor([[0.0, 2.0]]), torch.tensor([0]), gamma=2.0)
    hard_ce = F.cross_entropy(torch.tensor([[0.0, 2.0]]), torch.tensor([0]))
    assert easy / easy_ce < 0.01 < 0.5 < hard / hard_ce


def test_stable_for_extreme_logits():
    logits = torch.tensor([[1000.0, -1000.0], [-1000.0, 1000.0]], requires_grad=True)
    loss = focal_loss(logits, torch.tensor([0, 0]), gamma=2.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert loss.item() == pytest.approx(1000.0, rel=1e-6)  # (1 - ~0)^2 * 2000 / 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"gamma": -1.0}, "gamma"),
        ({"gamma": float("nan")}, "gamma"),
        ({"reduction": "avg"}, "reduction"),
        ({"alpha": torch.ones(4)}, "alpha"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        focal_loss(torch.randn(2, 3), torch.tensor([0, 1]), **kwargs)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="logits"):
        focal_loss(torch.randn(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="targets"):
        focal_loss(torch.randn(3, 2), torch.tensor([0, 1]))


def test_balanced_alpha_inverse_frequency_mean_one():
    labels = np.array([0, 0, 0, 1])  # counts 3 and 1: weights proportional to 1/3 and 1
    alpha = balanced_alpha(labels, num_classes=4)
    np.testing.assert_allclose(alpha, [0.5, 1.5, 0.0, 0.0], rtol=1e-6)
    assert alpha[alpha > 0].mean() == pytest.approx(1.0)


def test_balanced_alpha_rejects_bad_labels():
    with pytest.raises(ValueError):
        balanced_alpha(np.array([]), 3)
    with pytest.raises(ValueError):
        balanced_alpha(np.array([0, 5]), 3)

