"""The labelled / unlabelled / validation split of a training set (docs/design.md, Evaluation protocol).

Recipe, not file reading: which of the user's images the run learns labels from, which it only sees
unlabelled, and which it holds out to choose the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.readers import DataError

UNLABELLED = -1  # the label of an image nobody labelled (the usual SSL convention)


@dataclass(eq=False)
class SemiSupervisedSplit:
    """Indices into the training set. Validation images are held out: never trained on, used only to choose
    the model. Unlabelled is every other index, the labelled ones included, as in the reference code
    (Salimans et al. 2016)."""

    labelled: np.ndarray  # int64: the labels the run learns from
    unlabelled: np.ndarray  # int64: every index not in validation
    validation: np.ndarray  # int64: held-out labelled images (empty: the final model is kept)


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or (len(labels) and labels.min() < UNLABELLED):
        raise DataError(f"labels must be a 1-D array of class indices (or -1), got {labels.dtype} {labels.shape}")
    return labels


def _per_class(indices: np.ndarray, labels: np.ndarray, count: int, classes: int, what: str) -> list[np.ndarray]:
    """The first ``count`` of ``indices`` (already shuffled) of each class; a class with too few is an error."""
    chosen = []
    for class_index in range(classes):
        members = indices[labels[indices] == class_index]
        if len(members) < count:
            raise DataError(f"{what}={count} is too many: class {class_index} has only {len(members)} labelled images")
        chosen.append(members[:count])
    return chosen


def split_semi_supervised(
    labels: np.ndarray,
    labels_per_class: int | None,
    val_size: int,
    seed: int,
    *,
    num_classes: int | None = None,
    val_labels_per_class: int = 0,
) -> SemiSupervisedSplit:
    """Which images the run learns labels from, sees unlabelled, and holds out (docs/design.md, Evaluation
    protocol). ``labels`` holds -1 for unlabelled images.

    - ``val_size`` (research, on fully labelled benchmark data): a seeded random subset of the training set
      is held out first, as a labelled validation split.
    - ``val_labels_per_class`` K: K of the user's own labels per class are held out to choose the model.
    - ``labels_per_class`` N: N labelled images per class are kept (simulating few labels on a fully
      labelled set); None keeps every label there is.

    The same seed gives the same split, so runs and their labels-only baseline see the same labelled images.
    ``num_classes`` (default: largest label + 1) makes a class with no labelled image an error too."""
    labels = _check_labels(labels)
    total = len(labels)
    if not 0 <= val_size < total:
        raise DataError(
            f"val_size={val_size} is out of range: the training set has {total} images, so it must be "
            f"between 0 and {max(total - 1, 0)}"
        )
    if labels_per_class is not None and labels_per_class < 1:
        raise DataError(f"labels_per_class must be at least 1, got {labels_per_class}")
    if val_labels_per_class < 0:
        raise DataError(f"val_labels_per_class must be 0 or more, got {val_labels_per_class}")
    classes = int(labels.max(initial=-1)) + 1 if num_classes is None else num_classes
    rng = np.random.default_rng(seed)
    order = rng.permutation(total)
    validation, rest = order[:val_size], order[val_size:]  # rest stays shuffled: its prefix is a random draw
    rest = rest[labels[rest] != UNLABELLED]
    if val_labels_per_class:
        held_out = _per_class(rest, labels, val_labels_per_class + 1, classes, "val_labels_per_class (+1 to train on)")
        validation = np.concatenate([validation, *(members[:val_labels_per_class] for members in held_out)])
        rest = rest[~np.isin(rest, validation)]  # keeps the shuffled order
    if labels_per_class is None:
        _per_class(rest, labels, 1, classes, "labelled images per class")  # every class needs a label
        labelled = [rest]
    else:
        labelled = _per_class(rest, labels, labels_per_class, classes, "labels_per_class")
    return SemiSupervisedSplit(
        labelled=np.sort(np.concatenate(labelled)).astype(np.int64),
        unlabelled=np.setdiff1d(np.arange(total), validation).astype(np.int64),
        validation=np.sort(validation).astype(np.int64),
    )
