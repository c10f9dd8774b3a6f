"""Losses of the semi-supervised GAN, as small pure functions (the loop only sequences them).

Notation: ``l(x)`` are the discriminator's K logits, the fake class's logit is fixed at 0, and
``lse(x) = logsumexp_k l_k(x)`` so that D(x) = p(real | x) = sigmoid(lse(x)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def supervised_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_sup = cross_entropy(l(x_l), y): the K-class loss on labelled images (the fake class has p ~ 0 for
    them, so the K-way softmax is the K+1 model's p(y | x, real); Salimans et al. 2016, eq. 5)."""
    return F.cross_entropy(logits.float(), labels)


def unsupervised_loss(logits_unlabelled: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """L_unsup = -0.5 mean log D(x_u) - 0.5 mean log(1 - D(G(z))), written stably as

        -0.5 mean lse(x_u) + 0.5 mean softplus(lse(x_u)) + 0.5 mean softplus(lse(G(z)))

    since log D = lse - softplus(lse) and log(1 - D) = -softplus(lse) (Salimans et al. 2016, eq. 5)."""
    lse_unlabelled = torch.logsumexp(logits_unlabelled.float(), dim=1)
    lse_fake = torch.logsumexp(logits_fake.float(), dim=1)
    return -0.5 * lse_unlabelled.mean() + 0.5 * F.softplus(lse_unlabelled).mean() + 0.5 * F.softplus(lse_fake).mean()


def feature_matching_loss(
    features_real: torch.Tensor, features_fake: torch.Tensor, distance: str = "l2"
) -> torch.Tensor:
    """L_G = || mean_batch f(x) - mean_batch f(G(z)) || over an intermediate discriminator layer f
    (Salimans et al. 2016, section 3.1): squared and summed for ``l2`` (the reference's MNIST code), the mean
    absolute difference for ``l1`` (its CIFAR-10 code, on the pooled features). ``features_real`` carries no
    gradient in the generator step."""
    difference = features_real.float().mean(dim=0) - features_fake.float().mean(dim=0)
    if distance == "l1":
        return difference.abs().mean()
    if distance == "l2":
        return difference.pow(2).sum()
    raise ValueError(f"unknown feature-matching distance {distance!r}")
