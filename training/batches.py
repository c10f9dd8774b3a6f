"""The batch order of an epoch: which labelled, unlabelled and feature-matching images each step takes."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


class EpochOrder(NamedTuple):
    labelled: np.ndarray  # indices into the labelled set, tiled to the length of ``unlabelled``
    unlabelled: np.ndarray  # indices into the unlabelled set: the discriminator phase's x_u
    matching: np.ndarray  # an independent permutation: the generator phase's x_u'


def epoch_order(
    seed: int, epoch: int, num_labelled: int, num_unlabelled: int, rank: int = 0, world_size: int = 1
) -> EpochOrder:
    """Derived from (seed, epoch) only, so a resumed run replays an interrupted epoch exactly.

    Under DDP all ranks draw the same permutations of the unlabelled set and each keeps its own strided share,
    so ranks see disjoint unlabelled batches; every rank has the whole labelled set, in its own order.
    """
    rng = np.random.default_rng([seed, epoch])
    unlabelled = rng.permutation(num_unlabelled)[rank::world_size]
    matching = rng.permutation(num_unlabelled)[rank::world_size]
    # The labelled set is tiled to the unlabelled size, as in the reference code.
    rank_rng = np.random.default_rng([seed, epoch, rank]) if world_size > 1 else rng
    repeats = math.ceil(len(unlabelled) / num_labelled)
    labelled = np.concatenate([rank_rng.permutation(num_labelled) for _ in range(repeats)])[: len(unlabelled)]
    return EpochOrder(labelled, unlabelled, matching)
