""".npz arrays under the usual key names (x_train/y_train, train_images/..., images/labels, arr_0 pairs)."""

from __future__ import annotations

import re
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from training.readers.base import UNLABELLED, DataError, RawSplit, Split, to_labels, to_uint8_nchw

_NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


class _NpzLocation(NamedTuple):
    """Where one split's arrays are; a key of None means the file's only array (``arr_0`` pairs)."""

    images_path: Path
    images_key: str | None
    labels_path: Path
    labels_key: str | None


def _npz_keys(path: Path) -> list[str]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return list(archive.files)
    except _NPZ_ERRORS as error:
        raise DataError(f"{path}: not a readable .npz archive ({error})") from error


def _npz_array(path: Path, key: str | None) -> np.ndarray:
    """One array from an .npz; never unpickles (object arrays are refused with a hint). A key of None means
    the file's only array, as in the ``arr_0`` pairs KMNIST ships."""
    if key is None:
        keys = _npz_keys(path)
        if "arr_0" not in keys and len(keys) != 1:
            raise DataError(f"{path}: expected a single array (arr_0), found {', '.join(keys)}")
        key = "arr_0" if "arr_0" in keys else keys[0]
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive[key]
    except _NPZ_ERRORS as error:
        raise DataError(
            f"{path}: cannot read array {key!r} ({error}); arrays of Python objects are not loaded, "
            "save class names as a string array"
        ) from error


def _file_split(path: Path) -> Split | None:
    """The split a file's name marks (``train.npz``, ``mnist_test.npz``), if any."""
    match = re.search(r"(?:^|[-_.])(train|test)$", path.stem)
    return match.group(1) if match else None  # type: ignore[return-value]


def _locate_npz_split(files: Sequence[Path], split: Split) -> _NpzLocation | None:
    """The first of ``files`` that holds ``split`` under one of the common conventions."""
    for path in files:
        pair = re.fullmatch(rf"(.*[-_])?{split}-(?:imgs|images)\.npz", path.name)
        if pair:
            labels_path = path.with_name(f"{pair.group(1) or ''}{split}-labels.npz")
            if labels_path.is_file():
                return _NpzLocation(path, None, labels_path, None)
        keys = set(_npz_keys(path))
        for images_key, labels_key in ((f"x_{split}", f"y_{split}"), (f"{split}_images", f"{split}_labels")):
            if {images_key, labels_key} <= keys:
                return _NpzLocation(path, images_key, path, labels_key)
        # A lone (images, labels) file is the split its name marks; unmarked, it is training data only.
        if {"images", "labels"} <= keys and (_file_split(path) or "train") == split:
            return _NpzLocation(path, "images", path, "labels")
    return None


def _npz_files(path: Path) -> list[Path]:
    """The .npz files to search: a named file first, then its siblings (``train.npz`` finds ``test.npz``)."""
    directory = path if path.is_dir() else path.parent
    siblings = sorted(candidate for candidate in directory.glob("*.npz") if candidate.is_file())
    return siblings if path.is_dir() else [path, *(sibling for sibling in siblings if sibling != path)]


def _read_npz(path: Path, split: Split) -> RawSplit:
    location = _locate_npz_split(_npz_files(path), split)
    if location is None:
        raise DataError(
            f"{path} has no {split} split in .npz form: expected x_{split}/y_{split} or "
            f"{split}_images/{split}_labels keys, images/labels in a file named like {split}.npz, "
            f"or a *-{split}-imgs.npz + *-{split}-labels.npz pair"
        )
    images_source = f"{location.images_path}[{location.images_key or 'arr_0'}]"
    images = to_uint8_nchw(_npz_array(location.images_path, location.images_key), images_source)
    labels = to_labels(_npz_array(location.labels_path, location.labels_key), len(images), str(location.labels_path))
    class_names = None
    for names_path in dict.fromkeys((location.images_path, location.labels_path)):
        if "class_names" in _npz_keys(names_path):
            class_names = [str(name) for name in _npz_array(names_path, "class_names").ravel()]
            break
    if split == "train":
        images, labels = _with_unlabelled_array(location.images_path, images, labels)
    return RawSplit(images, labels, class_names, str(location.images_path))


UNLABELLED_KEYS = ("x_unlabelled", "x_unlabeled", "unlabelled_images", "unlabeled_images")


def _with_unlabelled_array(path: Path, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Append a separate array of unlabelled training images (label -1), when the file holds one."""
    key = next((key for key in UNLABELLED_KEYS if key in _npz_keys(path)), None)
    if key is None:
        return images, labels
    extra = to_uint8_nchw(_npz_array(path, key), f"{path}[{key}]")
    if extra.shape[1:] != images.shape[1:]:
        raise DataError(f"{path}[{key}]: images of shape {extra.shape[1:]}, the labelled ones are {images.shape[1:]}")
    return np.concatenate([images, extra]), np.concatenate([labels, np.full(len(extra), UNLABELLED, dtype=np.int64)])


class NpzReader:
    name = "npz"

    def detect(self, path: Path) -> bool:
        if path.is_file():
            return path.suffix.lower() == ".npz"
        return any(candidate.is_file() for candidate in path.glob("*.npz"))

    def has_split(self, directory: Path, split: Split) -> bool:
        return _locate_npz_split(_npz_files(directory), split) is not None

    def read(self, path: Path, split: Split, image_shape: tuple[int, int, int] | None) -> RawSplit:
        return _read_npz(path, split)
