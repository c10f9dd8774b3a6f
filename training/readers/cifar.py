"""CIFAR-10 python batches (https://www.cs.toronto.edu/~kriz/cifar.html, "Dataset layout")."""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path

import numpy as np

from training.readers.base import DataError, RawSplit, Split, to_labels

logger = logging.getLogger(__name__)

CIFAR_SUBDIR = "cifar-10-batches-py"  # what the official tarball unpacks to
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{number}" for number in range(1, 6))
CIFAR_FILE_NAMES: dict[Split, tuple[str, ...]] = {"train": CIFAR_TRAIN_BATCHES, "test": ("test_batch",)}
CIFAR10_CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def _cifar_directory(directory: Path) -> Path:
    """The directory itself, or the ``cifar-10-batches-py`` inside it that the tarball unpacks to."""
    inner = directory / CIFAR_SUBDIR
    return inner if inner.is_dir() else directory


def _has_cifar_split(directory: Path, split: Split) -> bool:
    return (_cifar_directory(directory) / CIFAR_FILE_NAMES[split][0]).is_file()


def _unpickle_cifar(path: Path) -> dict[bytes | str, object]:
    try:
        with path.open("rb") as stream:
            # CIFAR-10 batches are pickled dicts of arrays: the dataset's own format, the user's own files.
            content = pickle.load(stream, encoding="bytes")
    except Exception as error:  # corrupt pickles raise almost any exception type
        raise DataError(f"{path}: not a readable CIFAR-10 python batch ({type(error).__name__}: {error})") from error
    if not isinstance(content, dict):
        raise DataError(f"{path}: not a CIFAR-10 python batch (holds a {type(content).__name__}, not a dict)")
    return content


def _cifar_field(content: dict[bytes | str, object], key: str, path: Path) -> object:
    """A batch entry by name; batches written by Python 2 have bytes keys, re-saved ones str keys."""
    for candidate in (key.encode(), key):
        if candidate in content:
            return content[candidate]
    raise DataError(f"{path}: not a CIFAR-10 python batch (no {key!r} entry)")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    content = _unpickle_cifar(path)
    data = np.asarray(_cifar_field(content, "data", path))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
    images = data.reshape(-1, 3, 32, 32)  # each row is the red, green then blue 32x32 plane
    labels = to_labels(np.asarray(_cifar_field(content, "labels", path)), len(images), str(path))
    return images, labels


def _cifar_class_names(directory: Path) -> list[str]:
    """Names from ``batches.meta`` when present, else CIFAR-10's published list."""
    meta_path = directory / "batches.meta"
    if not meta_path.is_file():
        return list(CIFAR10_CLASS_NAMES)
    names = _cifar_field(_unpickle_cifar(meta_path), "label_names", meta_path)
    return [name.decode() if isinstance(name, bytes) else str(name) for name in names]  # type: ignore[attr-defined]


def _read_cifar(directory: Path, split: Split) -> RawSplit:
    directory = _cifar_directory(directory)
    if split == "train":
        numbers = {
            path: int(match[1])
            for path in directory.glob("data_batch_*")
            if (match := re.fullmatch(r"data_batch_(\d+)", path.name))
        }
        paths = sorted(numbers, key=numbers.__getitem__)  # numerically: data_batch_10 after data_batch_9
        if 0 < len(paths) < len(CIFAR_TRAIN_BATCHES):
            logger.warning(
                "%s: only %d of the %d CIFAR-10 training batches",
                directory,
                len(paths),
                len(CIFAR_TRAIN_BATCHES),
            )
    else:
        paths = [directory / "test_batch"] if (directory / "test_batch").is_file() else []
    if not paths:
        raise DataError(f"{directory} has no CIFAR-10 {split} split: expected {', '.join(CIFAR_FILE_NAMES[split])}")
    batches = [_read_cifar_batch(path) for path in paths]
    images = np.concatenate([images for images, _ in batches])
    labels = np.concatenate([labels for _, labels in batches])
    return RawSplit(images, labels, _cifar_class_names(directory), str(directory))


class CifarReader:
    name = "cifar"

    def detect(self, path: Path) -> bool:
        if path.is_file():
            return path.name in (*CIFAR_TRAIN_BATCHES, "test_batch", "batches.meta")
        return any(_has_cifar_split(path, split) for split in CIFAR_FILE_NAMES)

    def has_split(self, directory: Path, split: Split) -> bool:
        return _has_cifar_split(directory, split)

    def read(self, path: Path, split: Split, image_shape: tuple[int, int, int] | None) -> RawSplit:
        return _read_cifar(path if path.is_dir() else path.parent, split)
