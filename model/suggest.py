"""What to label next: which unlabelled images a label would teach the model most (docs/design.md, What to
label next). ``sgan-suggest`` and ``POST /suggest`` both rank with ``rank_for_labelling``.

The rule, for a pool of images the discriminator has scored:

1. **Score** each image by its class-probability margin, ``score = 1 - (p_(1) - p_(2))``, the gap between its
   two most probable classes: 1 for an image the model cannot place between two classes, 0 for one it is sure
   of. Margin rather than entropy: entropy also rewards spreading the *small* probabilities, which images
   unlike anything the model knows (noise, blank frames, inverted photos) do best; on Fashion-MNIST plain
   entropy filled 97 of 100 picks with such junk from a pool holding 0.8% of it, margin 10. With the junk cut,
   entropy's picks still covered fewer classes (8 of 10, one class 33 of 100) than margin's (10, 23).
2. **Skip junk**: an image whose realness ``D(x) = p(real | x)`` is below ``MIN_REALNESS`` is never suggested.
3. **Spread the picks**, greedily in order of score: an image is passed over when its discriminator features
   (``Discriminator.forward_features``) have cosine similarity ``DUPLICATE_SIMILARITY`` or more with an
   image already picked (a near-duplicate teaches nothing new), and, for a first pass, when its confusion pair
   (its two most probable classes, unordered) already holds ``PAIR_SHARE`` of the requested count, so one
   confusable pair (shirt vs T-shirt) cannot take every slot. If that pass leaves slots empty, a second pass
   fills them in score order with the images the pair cap held back; junk and near-duplicates stay out.

The figures behind each constant are in benchmarks/results/suggest_rule.md. What the picks are worth after
re-training is benchmarks/labelling_loop.py's question, and its answer so far is: no more than random picks
(Fashion-MNIST, 10 labels per class + 100, 3 seeds: 78.79% against random's 79.18%, within the seeds'
spread; benchmarks/results/labelling_loop.md). Cluster rules tried there did no better and are not kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from model.imaging import pixels_to_tensor
from model.kplus1 import class_probabilities, realness_from_logits
from model.networks import Discriminator

# D's own decision boundary: below it the discriminator finds the image more likely fake than real. On the
# bundled Fashion-MNIST model every noise, blank and inverted image scores below 0.002, and 2.2% of the real
# training images fall below 0.5 (benchmarks/results/suggest_rule.md).
MIN_REALNESS = 0.5
# Cosine similarity of D's features from which two images count as near-duplicates. On the bundled model
# copies with pixel noise (+-3) score 1.000 and copies 10% darker 0.995 (median), while the nearest other image
# among the 2,000 least sure is at 0.959 (median); shifted or mirrored copies (0.893, 0.939) are not caught
# (benchmarks/results/suggest_rule.md).
DUPLICATE_SIMILARITY = 0.98
# At most this share of the requested picks per confusion pair in the first pass (20 of 100): a choice, not a
# measurement; without a cap, one pair took 34 of margin's 100 picks (benchmarks/results/suggest_rule.md).
PAIR_SHARE = 0.2


@dataclass(frozen=True)
class ImageScores:
    """What the discriminator says about a pool of images: the inputs of the ranking."""

    probabilities: np.ndarray  # (N, K) float32, p(y=k | x, real)
    realness: np.ndarray  # (N,) float32, D(x) = p(real | x)
    features: np.ndarray | None  # (N, F) float32, D's last hidden layer; None: no near-duplicate check

    def __len__(self) -> int:
        return len(self.realness)

    @staticmethod
    def concatenate(parts: list[ImageScores]) -> ImageScores:
        """The scores of several batches, in order (all with features, or none)."""
        features = [part.features for part in parts]
        return ImageScores(
            probabilities=np.concatenate([part.probabilities for part in parts]),
            realness=np.concatenate([part.realness for part in parts]),
            features=None if any(f is None for f in features) else np.concatenate(features),  # type: ignore[arg-type]
        )


@torch.no_grad()
def score_images(discriminator: Discriminator, pixels: np.ndarray) -> ImageScores:
    """uint8 (B, C, H, W) -> probabilities, realness and features from one forward pass, in eval mode (the
    train/eval mode is restored). The caller batches: this is one batch on the discriminator's device."""
    device = next(discriminator.parameters()).device
    was_training = discriminator.training
    discriminator.eval()
    try:
        features = discriminator.forward_features(pixels_to_tensor(pixels).to(device))  # (B, F)
        logits = discriminator.forward_head(features).float().cpu()  # (B, K)
    finally:
        discriminator.train(was_training)
    return ImageScores(
        probabilities=class_probabilities(logits).numpy(),
        realness=realness_from_logits(logits).numpy(),
        features=features.float().cpu().numpy(),
    )


def margin_uncertainty(probabilities: np.ndarray) -> np.ndarray:
    """1 - (p_(1) - p_(2)): the class-probability margin turned into a score, higher = less sure. (N, K) ->
    (N,) in [0, 1]. (Scheffer et al. 2001, "Active hidden Markov models for information extraction".)"""
    if probabilities.shape[1] < 2:
        return np.zeros(len(probabilities), dtype=np.float32)
    top_two = np.sort(probabilities, axis=1)[:, -2:]  # (N, 2), ascending
    return (1.0 - (top_two[:, 1] - top_two[:, 0])).astype(np.float32)


def entropy_uncertainty(probabilities: np.ndarray) -> np.ndarray:
    """-sum_k p_k log p_k / log K: the entropy of the class probabilities, scaled to [0, 1]. (N, K) -> (N,).
    Not the product's rule (see the module docstring); the labelling-loop benchmark compares with it."""
    classes = probabilities.shape[1]
    if classes < 2:
        return np.zeros(len(probabilities), dtype=np.float32)
    clipped = np.clip(probabilities.astype(np.float64), 1e-12, 1.0)
    return (-(clipped * np.log(clipped)).sum(axis=1) / math.log(classes)).astype(np.float32)


def confusion_pairs(probabilities: np.ndarray) -> np.ndarray:
    """The two most probable classes of each image, smaller index first: (N, K) -> int64 (N, 2)."""
    if probabilities.shape[1] < 2:
        return np.zeros((len(probabilities), 2), dtype=np.int64)
    top_two = np.argsort(-probabilities, axis=1, kind="stable")[:, :2]
    return np.sort(top_two, axis=1).astype(np.int64)


@dataclass(frozen=True)
class Ranking:
    """The suggestions, and why every other image was left out."""

    picks: np.ndarray  # int64 indices into the pool, the first to label first
    scores: np.ndarray  # (N,) float32 margin score of every image (module docstring, step 1)
    junk: np.ndarray  # (N,) bool: realness below the floor, never suggested
    duplicate_of: np.ndarray  # (N,) int64: the pick an image nearly duplicates, or -1


def rank_for_labelling(
    scores: ImageScores,
    count: int,
    *,
    min_realness: float = MIN_REALNESS,
    duplicate_similarity: float = DUPLICATE_SIMILARITY,
    pair_share: float = PAIR_SHARE,
) -> Ranking:
    """The ``count`` images a label would teach the model most, best first, by the rule of the module
    docstring: margin score, junk below ``min_realness`` skipped, near-duplicates and over-represented
    confusion pairs passed over. Fewer come back when the pool has fewer usable images."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    count = min(count, len(scores))
    margin = margin_uncertainty(scores.probabilities)
    junk = scores.realness < min_realness
    order = np.argsort(-margin, kind="stable")  # ties keep pool order, so the ranking is deterministic
    order = order[~junk[order]]
    spread = _Spread(scores.features, duplicate_similarity, len(margin))
    pairs = confusion_pairs(scores.probabilities)
    pair_cap = max(1, math.ceil(pair_share * count))
    per_pair: dict[tuple[int, int], int] = {}
    held_back: list[int] = []
    for index in order:
        if len(spread.picks) == count:
            break
        if spread.is_duplicate(index):
            continue
        pair = (int(pairs[index, 0]), int(pairs[index, 1]))
        if per_pair.get(pair, 0) >= pair_cap:
            held_back.append(int(index))
            continue
        per_pair[pair] = per_pair.get(pair, 0) + 1
        spread.pick(index)
    for index in held_back:  # second pass: the pair cap yields to an empty slot
        if len(spread.picks) == count:
            break
        if not spread.is_duplicate(index):
            spread.pick(index)
    return Ranking(np.asarray(spread.picks, dtype=np.int64), margin, junk, spread.duplicate_of)


class _Spread:
    """The picks so far and the near-duplicate test against them (cosine similarity of D's features)."""

    def __init__(self, features: np.ndarray | None, similarity: float, size: int) -> None:
        self.picks: list[int] = []
        self.duplicate_of = np.full(size, -1, dtype=np.int64)
        self.similarity = similarity
        self.unit: np.ndarray | None = None
        if features is not None:
            norms = np.linalg.norm(features, axis=1, keepdims=True)
            self.unit = (features / np.maximum(norms, 1e-12)).astype(np.float32)  # (N, F)

    def is_duplicate(self, index: int) -> bool:
        if self.unit is None or not self.picks:
            return False
        similarities = self.unit[self.picks] @ self.unit[index]  # (picks,)
        closest = int(similarities.argmax())
        if similarities[closest] < self.similarity:
            return False
        self.duplicate_of[index] = self.picks[closest]
        return True

    def pick(self, index: int) -> None:
        self.picks.append(int(index))
