"""The K+1 math both the trainer and the server need.

The discriminator emits K logits l_1..l_K and the fake class K+1 has its logit fixed at 0 (Salimans et al.
2016, section 5). With Z(x) = sum_k exp(l_k(x)):

- p(y=k | x, real) = softmax(l)_k                        (the classifier)
- D(x) = p(real | x) = Z / (Z + 1) = sigmoid(logsumexp(l))  (the realness score)
"""

from __future__ import annotations

import torch


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """p(y=k | x, real): a softmax over the K real classes. (B, K) -> (B, K)."""
    return torch.softmax(logits.float(), dim=-1)


def realness_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """D(x) = sigmoid(logsumexp(l)), the probability that x is a real image. (B, K) -> (B,)."""
    return torch.sigmoid(torch.logsumexp(logits.float(), dim=-1))
