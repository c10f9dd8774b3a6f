"""Loss formulas against values computed by hand from their definitions (Salimans et al. 2016)."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses import (
    feature_matching_loss,
    supervised_loss,
    unsupervised_loss,
)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_supervised_loss_is_cross_entropy_over_the_k_real_classes() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    labels = torch.tensor([0, 2])
    by_hand = (-math.log(math.exp(2) / (math.exp(2) + 2)) - math.log(math.exp(3) / (1 + math.exp(1) + math.exp(3)))) / 2
    assert supervised_loss(logits, labels).item() == pytest.approx(by_hand, rel=1e-6)


def test_unsupervised_loss_matches_minus_log_d_real_minus_log_one_minus_d_fake() -> None:
    logits_unlabelled = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    logits_fake = torch.tensor([[-2.0, -3.0], [0.5, 0.5]])

    def d(row: list[float]) -> float:  # D = Z / (Z + 1) with the fake logit fixed at 0
        z = sum(math.exp(v) for v in row)
        return z / (z + 1)

    by_hand = (
        -0.5 * (math.log(d([0, 0])) + math.log(d([1, -1]))) / 2
        - 0.5 * (math.log(1 - d([-2, -3])) + math.log(1 - d([0.5, 0.5]))) / 2
    )
    assert unsupervised_loss(logits_unlabelled, logits_fake).item() == pytest.approx(by_hand, rel=1e-6)
    # The stable form in docs/design.md (Algorithm), term by term.
    lse_u = [math.log(2.0), math.log(math.exp(1) + math.exp(-1))]
    lse_f = [math.log(math.exp(-2) + math.exp(-3)), math.log(2 * math.exp(0.5))]
    stable = (
        -0.5 * sum(lse_u) / 2 + 0.5 * sum(softplus(v) for v in lse_u) / 2 + 0.5 * sum(softplus(v) for v in lse_f) / 2
    )
    assert by_hand == pytest.approx(stable, rel=1e-9)


def test_unsupervised_loss_stays_finite_for_extreme_logits() -> None:
    huge = torch.tensor([[200.0, 150.0]])
    tiny = torch.tensor([[-200.0, -150.0]])
    assert unsupervised_loss(huge, tiny).item() == pytest.approx(0.0, abs=1e-6)  # D is right on both
    assert math.isfinite(unsupervised_loss(tiny, huge).item())


def test_feature_matching_is_squared_distance_between_batch_means() -> None:
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # mean (2, 3)
    fake = torch.tensor([[0.0, 0.0], [2.0, 2.0]])  # mean (1, 1)
    assert feature_matching_loss(real, fake).item() == pytest.approx(1.0 + 4.0)
    fake.requires_grad_(True)
    feature_matching_loss(real, fake).backward()
    # d/dfake_i = -2 (mean_real - mean_fake) / B
    assert torch.allclose(fake.grad, torch.tensor([[-1.0, -2.0], [-1.0, -2.0]]))


def test_feature_matching_l1_is_the_mean_absolute_distance_between_batch_means() -> None:
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # mean (2, 3)
    fake = torch.tensor([[0.0, 4.0], [2.0, 4.0]], requires_grad=True)  # mean (1, 4)
    loss = feature_matching_loss(real, fake, "l1")
    assert loss.item() == pytest.approx((1.0 + 1.0) / 2)
    loss.backward()
    # d/dfake_ij = -sign(mean_real_j - mean_fake_j) / (B * F)
    assert torch.allclose(fake.grad, torch.tensor([[-0.25, 0.25], [-0.25, 0.25]]))
    with pytest.raises(ValueError, match="distance"):
        feature_matching_loss(real, fake, "cosine")
