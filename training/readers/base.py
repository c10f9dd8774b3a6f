"""What every dataset reader shares: the error type, the dataset every reader ends in, the reader interface
and the array checks.

A reader knows one on-disk format. It answers three questions: does this path hold my format (``detect``),
does this directory hold this split (``has_split``), and what are its images (``read``). ``training.readers``
registers the readers in one place and picks one; nothing else looks at file formats.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple, Protocol

import numpy as np

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")
UNLABELLED = -1  # the label of an image nobody labelled (the usual SSL convention)


class DataError(ValueError):
    """Bad user input about data (a missing split, a corrupt file, an impossible split request). The
    message says what is wrong and what to do, so a CLI can print it without a traceback."""


class DatasetNotFoundError(DataError):
    """A known dataset is in none of the places looked; the message lists them and how to get the data."""


@dataclass(eq=False)
class ImageDataset:
    """Images and labels of one split, whatever format they came from.

    Checked on construction, so a reader bug or labels that do not fit the class names fail here with the
    source in the message instead of as an index error in the middle of training.
    """

    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray  # int64 (N,), values in 0..K-1, or UNLABELLED (-1) for an image nobody labelled
    class_names: list[str]  # index order
    source: str  # where it was read from, for the model card

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise DataError(
                f"{self.source}: images must be uint8 (N, C, H, W), got {self.images.dtype} {self.images.shape}"
            )
        if self.labels.dtype != np.int64 or self.labels.shape != (len(self.images),):
            raise DataError(
                f"{self.source}: {len(self.images)} images but labels of shape {self.labels.shape} "
                f"({self.labels.dtype})"
            )
        if len(self.labels) and (self.labels.min() < UNLABELLED or self.labels.max() >= len(self.class_names)):
            raise DataError(
                f"{self.source}: labels run from {self.labels.min()} to {self.labels.max()}, "
                f"but there are {len(self.class_names)} class names "
                f"(labels must be 0..{len(self.class_names) - 1}, or -1 for unlabelled)"
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width), the shape the networks are built for."""
        channels, height, width = self.images.shape[1:]
        return int(channels), int(height), int(width)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_unlabelled(self) -> int:
        return int((self.labels == UNLABELLED).sum())

    def labelled_only(self) -> ImageDataset:
        """The labelled images alone (what an evaluation can score)."""
        keep = self.labels != UNLABELLED
        return ImageDataset(self.images[keep], self.labels[keep], self.class_names, self.source)


class RawSplit(NamedTuple):
    """What a reader found: class names only when the files carry them."""

    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray  # int64 (N,)
    class_names: list[str] | None
    source: str


def to_uint8_nchw(images: np.ndarray, source: str) -> np.ndarray:
    """Bring (N, H, W), (N, H, W, C) or (N, C, H, W) images, uint8 or float in [0, 1], to uint8 (N, C, H, W);
    C is 1 or 3. A trailing axis of 1 or 3 is read as channels last, as Keras and TF save them."""
    if images.ndim == 3:
        images = images[:, None]  # (N, 1, H, W)
    elif images.ndim == 4 and images.shape[-1] in (1, 3):
        images = images.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    elif images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DataError(
            f"{source}: images of shape {images.shape} are not (N, H, W), (N, H, W, C) or (N, C, H, W) "
            "with 1 or 3 channels"
        )
    if images.dtype == np.uint8:
        return np.ascontiguousarray(images)
    if images.dtype == np.bool_ or not np.issubdtype(images.dtype, np.number):
        raise DataError(f"{source}: images of dtype {images.dtype}; expected uint8 or float pixels")
    low, high = (float(images.min()), float(images.max())) if images.size else (0.0, 0.0)
    if np.issubdtype(images.dtype, np.floating) and low >= 0.0 and high <= 1.0:
        return np.ascontiguousarray(np.round(images * 255.0).astype(np.uint8))
    if low >= 0.0 and high <= 255.0 and np.array_equal(images, np.round(images)):
        return np.ascontiguousarray(images.astype(np.uint8))  # whole numbers stored in a wider dtype
    raise DataError(
        f"{source}: {images.dtype} pixels range from {low} to {high}; expected uint8 0..255 or floats in [0, 1]"
    )


def to_labels(labels: np.ndarray, count: int, source: str) -> np.ndarray:
    """Labels as int64 (N,): accepts (N, 1) columns and one-hot rows, rejects fractions and negatives."""
    if labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.number):
        raise DataError(f"{source}: labels must be whole class indices, got dtype {labels.dtype}")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    elif labels.ndim == 2 and labels.size and np.isin(labels, (0, 1)).all() and (labels.sum(1) == 1).all():
        labels = labels.argmax(1)  # one-hot rows, as Keras tutorials save them
    if labels.shape != (count,):
        raise DataError(f"{source}: {count} images but labels of shape {labels.shape}")
    if not np.array_equal(labels, np.round(labels)):
        raise DataError(f"{source}: labels must be whole class indices, found fractions")
    if count and labels.min() < UNLABELLED:
        raise DataError(f"{source}: labels must be class indices 0..K-1 (or -1: unlabelled), found {labels.min()}")
    return labels.astype(np.int64)


class Reader(Protocol):
    """One on-disk format. ``path`` is what the user named (a file or a folder); ``directory`` a folder."""

    name: str

    def detect(self, path: Path) -> bool:
        """Whether ``path`` holds data in this format."""
        ...

    def has_split(self, directory: Path, split: Split) -> bool:
        """Whether ``directory`` holds ``split`` in this format."""
        ...

    def read(self, path: Path, split: Split, image_shape: tuple[int, int, int] | None) -> RawSplit:
        """``split``'s images and labels. ``image_shape`` only matters to formats that decode image files
        (folders), which choose one from the images when it is None."""
        ...
