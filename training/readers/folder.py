"""A folder with one sub-folder of images per class (optionally ``train/`` and ``test/`` inside).

Every image goes through the server's own pipeline (``model.imaging``) so that training sees exactly the
pixels the server will see.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from model.imaging import UnreadableImage, read_image_file
from training.readers.base import DataError, RawSplit, Split

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
_SKIPPED_NAMES_SHOWN = 5


def _subfolders(directory: Path) -> list[Path]:
    return sorted(path for path in directory.iterdir() if path.is_dir() and not path.name.startswith("."))


def _image_files(directory: Path) -> list[Path]:
    """Image files under a class folder, nested folders included, in a stable order."""
    return sorted(
        path
        for path in directory.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file() and not path.name.startswith(".")
    )


def _read_image_file(path: Path, image_shape: tuple[int, int, int]) -> np.ndarray | None:
    """One image through the server's own preprocessing; None when the file is not a readable image."""
    try:
        return read_image_file(path, image_shape)
    except UnreadableImage as error:
        logger.debug("skipping %s: %s", path, error)
        return None


def _folder_split_root(root: Path, split: Split) -> tuple[Path, list[str]]:
    """The folder holding ``split``'s class folders, and the class names (from train/ when there are split
    folders, so test labels use the same indices even when test/ lacks a class)."""
    if not (root / "train").is_dir():
        if split == "test":
            raise DataError(
                f"{root} has no test split: it holds one folder per class and no test/ folder. "
                f"Put held-out images under {root}/test/<class>/ (and the rest under {root}/train/<class>/)"
            )
        return root, [folder.name for folder in _subfolders(root)]
    class_names = [folder.name for folder in _subfolders(root / "train")]
    split_root = root / split
    if not split_root.is_dir():
        raise DataError(f"{root} has no {split} split: there is no {split_root} folder")
    unknown = sorted({folder.name for folder in _subfolders(split_root)} - set(class_names))
    if unknown:
        raise DataError(f"{split_root} has class folders that {root}/train lacks: {', '.join(unknown)}")
    return split_root, class_names


def _check_image_shape(image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    if len(image_shape) != 3 or image_shape[0] not in (1, 3) or min(image_shape[1:]) < 1:
        raise DataError(f"image shape must be (channels, height, width) with 1 or 3 channels, got {image_shape}")
    channels, height, width = (int(size) for size in image_shape)
    return channels, height, width


def _read_image_folder(root: Path, split: Split, image_shape: tuple[int, int, int]) -> RawSplit:
    image_shape = _check_image_shape(image_shape)
    split_root, class_names = _folder_split_root(root, split)
    if not class_names:
        raise DataError(f"{split_root} holds no class folders (expected {split_root}/<class_name>/<images>)")
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    skipped: list[Path] = []
    for class_index, class_name in enumerate(class_names):
        for path in _image_files(split_root / class_name):
            array = _read_image_file(path, image_shape)
            if array is None:
                skipped.append(path)
                continue
            arrays.append(array)
            labels.append(class_index)
    if skipped:
        shown = ", ".join(str(path.relative_to(split_root)) for path in skipped[:_SKIPPED_NAMES_SHOWN])
        more = f" and {len(skipped) - _SKIPPED_NAMES_SHOWN} more" if len(skipped) > _SKIPPED_NAMES_SHOWN else ""
        logger.warning(
            "skipped %d unreadable image file(s) in %s (corrupt or not images): %s%s",
            len(skipped),
            split_root,
            shown,
            more,
        )
    if not arrays:
        raise DataError(
            f"{split_root} holds no readable images (looked for {', '.join(sorted(IMAGE_EXTENSIONS))} files "
            "in each class folder)"
        )
    label_array = np.asarray(labels, dtype=np.int64)
    empty = [name for index, name in enumerate(class_names) if not (label_array == index).any()]
    if empty:
        logger.warning("%s: no readable images for class(es) %s", split_root, ", ".join(empty))
    return RawSplit(np.stack(arrays), label_array, class_names, str(split_root))


class FolderReader:
    name = "folder"

    def detect(self, path: Path) -> bool:
        return path.is_dir() and bool(_subfolders(path))

    def has_split(self, directory: Path, split: Split) -> bool:
        return (directory / split).is_dir()

    def read(self, path: Path, split: Split, image_shape: tuple[int, int, int]) -> RawSplit:
        return _read_image_folder(path, split, image_shape)
