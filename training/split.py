"""The labelled / unlabelled / validation split of a training set (docs/design.md, Evaluation protocol).

Recipe, not file reading: which of the user's images the run learns labels from, which it only sees
unlabelled, and which it holds out to choose the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.readers import DataError


@dataclass(eq=False)
class SemiSupervisedSplit:
    """Indices into the training set. Validation is never labelled and never trained on; unlabelled is
    every other index, the labelled ones included, as in the reference code (Salimans et al. 2016)."""

    labelled: np.ndarray  # int64, labels_per_class per class
    unlabelled: np.ndarray  # int64, every index not in validation
    validation: np.ndarray  # int64, val_size indices


def split_semi_supervised(
    labels: np.ndarray, labels_per_class: int, val_size: int, seed: int, *, num_classes: int | None = None
) -> SemiSupervisedSplit:
    """Draw the validation set first (a seeded random subset), then ``labels_per_class`` labelled examples
    of every class from the rest. The same seed gives the same split, so runs and their labels-only
    baseline see the same labelled images. ``num_classes`` (default: largest label + 1) makes a class with
    no examples at all an error too."""
    labels = np.asarray(labels)
    total = len(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or (total and labels.min() < 0):
        raise DataError(f"labels must be a 1-D array of class indices, got {labels.dtype} {labels.shape}")
    if not 0 <= val_size < total:
        raise DataError(
            f"val_size={val_size} is out of range: the training set has {total} images, so it must be "
            f"between 0 and {max(total - 1, 0)}"
        )
    if labels_per_class < 1:
        raise DataError(f"labels_per_class must be at least 1, got {labels_per_class}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(total)
    validation, rest = order[:val_size], order[val_size:]  # rest stays shuffled: its prefix is a random draw
    rest_labels = labels[rest]
    classes = int(labels.max()) + 1 if num_classes is None else num_classes
    labelled = []
    for class_index in range(classes):
        members = rest[rest_labels == class_index]
        if len(members) < labels_per_class:
            raise DataError(
                f"labels_per_class={labels_per_class} is too many: class {class_index} has only "
                f"{len(members)} "
                f"examples outside the validation split (val_size={val_size})"
            )
        labelled.append(members[:labels_per_class])
    return SemiSupervisedSplit(
        labelled=np.sort(np.concatenate(labelled)).astype(np.int64),
        unlabelled=np.sort(rest).astype(np.int64),
        validation=np.sort(validation).astype(np.int64),
    )
