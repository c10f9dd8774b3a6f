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


def feature_matching_loss(features_real: torch.Tensor, features_fake: torch.Tensor) -> torch.Tensor:
    """L_G = || mean_batch f(x) - mean_batch f(G(z)) ||^2 over an intermediate discriminator layer f
    (Salimans et al. 2016, section 3.1). ``features_real`` carries no gradient in the generator step."""
    return (features_real.float().mean(dim=0) - features_fake.float().mean(dim=0)).pow(2).sum()


def conditional_entropy_loss(logits_unlabelled: torch.Tensor) -> torch.Tensor:
    """H(p(y | x_u, real)) averaged over the batch: pushes D's class boundaries away from dense unlabelled
    regions (the conditional-entropy term of Dai et al. 2017, "Good Semi-supervised Learning That Requires a
    Bad GAN")."""
    log_p = F.log_softmax(logits_unlabelled.float(), dim=1)
    return -(log_p.exp() * log_p).sum(dim=1).mean()


def consistency_loss(logits_student: torch.Tensor, logits_teacher: torch.Tensor) -> torch.Tensor:
    """|| p(y | x_u) - p_teacher(y | x_u') ||^2 summed over the K classes, averaged over the batch: the mean-
    teacher term (Tarvainen & Valpola 2017), where the teacher is the EMA of D and x_u' an augmented view."""
    p_student = F.softmax(logits_student.float(), dim=1)
    p_teacher = F.softmax(logits_teacher.float(), dim=1).detach()
    return (p_student - p_teacher).pow(2).sum(dim=1).mean()
