"""What to label next: which unlabelled images a label would teach the model most (docs/design.md, What to
label next). ``sgan-suggest`` and ``POST /suggest`` both rank with ``rank_for_labelling``.

The rule, for a pool of images the discriminator has scored, when ``count`` images are wanted:

1. **Skip junk**: an image whose realness ``D(x) = p(real | x)`` is below ``MIN_REALNESS`` is never suggested.
2. **One image per kind**: the rest are grouped into ``count`` clusters by k-means on the discriminator's
   features (``Discriminator.forward_features``, unit length), and each cluster gives its most typical image,
   the one nearest its centre, biggest cluster first: a label on it speaks for the most images. This is the
   cold-start choice of Hacohen et al. 2022 ("Active learning on a budget: opposite strategies suit high and
   low budgets"); with 10 labels per class the model's own uncertainty is a poor guide. In the labelling loop
   on Fashion-MNIST (benchmarks/results/labelling_loop.md) typical-per-cluster picks scored above random ones
   on each of 3 seeds, if by less than the seeds' spread, and the margin-first rule that preceded it lost to
   random on average. Copies of an image
   share its cluster, so no second check for near-duplicates is made here: on the features of confident
   images, which lie close together, the cosine test below would reject thousands of distinct images.

When the pool holds no more usable images than ``count`` (a handful of uploads to ``POST /suggest``), or the
scores carry no features, there is nothing to group: every usable image is ranked, the one the model is least
sure of first (``scores``, the class-probability margin ``1 - (p_(1) - p_(2))``), and an image whose features
have cosine similarity ``DUPLICATE_SIMILARITY`` or more with one already ranked is passed over as a
near-duplicate.
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
# k-means: Lloyd iterations at most (the loop stops earlier once no image changes cluster), and the seed of its
# k-means++ start, fixed so that the same pool gets the same suggestions.
KMEANS_ITERATIONS = 50
KMEANS_SEED = 0


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


@dataclass(frozen=True)
class Ranking:
    """The suggestions, and why every other image was left out."""

    picks: np.ndarray  # int64 indices into the pool, the first to label first
    scores: np.ndarray  # (N,) float32 margin score of every image: 1 = torn between two classes, 0 = sure
    junk: np.ndarray  # (N,) bool: realness below the floor, never suggested
    duplicate_of: np.ndarray  # (N,) int64: the pick an image nearly duplicates, or -1


def rank_for_labelling(
    scores: ImageScores,
    count: int,
    *,
    min_realness: float = MIN_REALNESS,
    duplicate_similarity: float = DUPLICATE_SIMILARITY,
) -> Ranking:
    """The ``count`` images a label would teach the model most, best first, by the rule of the module
    docstring: junk below ``min_realness`` skipped, then one typical image per k-means cluster of D's features
    (biggest cluster first), or, when no more than ``count`` images are usable, all of them by margin with
    near-duplicates passed over. Fewer come back when the pool has fewer usable images."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    margin = margin_uncertainty(scores.probabilities)
    junk = scores.realness < min_realness
    usable = np.flatnonzero(~junk)
    spread = _Spread(scores.features, duplicate_similarity, len(margin))
    if count < len(usable) and spread.unit is not None:
        clusters = typical_per_cluster(spread.unit[usable], count)
        picks = np.asarray([usable[cluster[0]] for cluster in clusters], dtype=np.int64)
        return Ranking(picks, margin, junk, spread.duplicate_of)
    for index in usable[np.argsort(-margin[usable], kind="stable")]:
        if len(spread.picks) == count:
            break
        if not spread.is_duplicate(int(index)):
            spread.pick(int(index))
    return Ranking(np.asarray(spread.picks, dtype=np.int64), margin, junk, spread.duplicate_of)


def typical_per_cluster(points: np.ndarray, clusters: int) -> list[np.ndarray]:
    """k-means on ``points`` (N, F): each cluster's members, nearest its centre first, the biggest cluster
    first (ties: lower cluster index)."""
    labels, centres = kmeans(points, clusters)
    distance = np.linalg.norm(points - centres[labels], axis=1)
    members = [np.flatnonzero(labels == k) for k in range(clusters)]
    members = [m[np.argsort(distance[m], kind="stable")] for m in members if len(m)]
    return sorted(members, key=len, reverse=True)


def kmeans(points: np.ndarray, clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means from a k-means++ start (Arthur & Vassilvitskii 2007): (N, F) -> labels (N,) int64 and
    centres (k, F). Written here, some twenty lines, because the server image does not carry scikit-learn."""
    rng = np.random.default_rng(KMEANS_SEED)
    points = points.astype(np.float32)
    centres = np.empty((clusters, points.shape[1]), dtype=np.float32)
    centres[0] = points[rng.integers(len(points))]
    nearest = ((points - centres[0]) ** 2).sum(axis=1)
    for k in range(1, clusters):  # each new centre drawn with probability proportional to squared distance
        total = float(nearest.sum())
        choice = rng.choice(len(points), p=nearest / total) if total > 0 else rng.integers(len(points))
        centres[k] = points[choice]
        nearest = np.minimum(nearest, ((points - centres[k]) ** 2).sum(axis=1))
    labels = _nearest_centre(points, centres)
    for _ in range(KMEANS_ITERATIONS):
        for k in range(clusters):
            members = points[labels == k]
            if len(members):  # an emptied cluster keeps its centre
                centres[k] = members.mean(axis=0)
        updated = _nearest_centre(points, centres)
        if np.array_equal(updated, labels):
            break
        labels = updated
    return labels, centres


def _nearest_centre(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    squared = (centres**2).sum(axis=1)[None, :] - 2.0 * points @ centres.T  # + |x|^2, the same for every centre
    return squared.argmin(axis=1).astype(np.int64)


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
