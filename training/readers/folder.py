"""Folders of images: one sub-folder of images per class (optionally ``train/`` and ``test/`` inside), and
the helpers the partly labelled forms share (listing image files, decoding them, reading class folders).

Every image goes through the server's own pipeline (``model.imaging``) so that training sees exactly the
pixels the server will see; decoding runs in parallel and is cached (``training.readers.decode``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from training.readers.base import DataError, RawSplit, Split
from training.readers.decode import decode_files

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
SKIPPED_NAMES_SHOWN = 5
SHAPE_SAMPLE = 200  # image headers read to choose a decode shape
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


def subfolders(directory: Path) -> list[Path]:
    return sorted(path for path in directory.iterdir() if path.is_dir() and not path.name.startswith("."))


def image_files(directory: Path) -> list[Path]:
    """Image files under a folder, nested folders included, in a stable order; hidden files are skipped."""
    return sorted(
        path
        for path in directory.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    )


def describe_skipped(skipped: Sequence[Path], root: Path) -> str:
    """'a.png, b/c.jpg and 3 more': the first few names, relative to ``root``."""
    shown = ", ".join(str(path.relative_to(root)) for path in skipped[:SKIPPED_NAMES_SHOWN])
    more = f" and {len(skipped) - SKIPPED_NAMES_SHOWN} more" if len(skipped) > SKIPPED_NAMES_SHOWN else ""
    return shown + more


def decode_skipping_unreadable(
    paths: Sequence[Path], image_shape: tuple[int, int, int], root: Path
) -> tuple[np.ndarray, np.ndarray]:
    """(images of the readable files, their indices into ``paths``); unreadable files are counted and the
    first few named in one warning."""
    images, readable = decode_files(paths, image_shape)
    if not readable.all():
        skipped = [path for path, ok in zip(paths, readable, strict=True) if not ok]
        logger.warning(
            "skipped %d unreadable image file(s) in %s (corrupt or not images): %s",
            len(skipped),
            root,
            describe_skipped(skipped, root),
        )
    kept = np.flatnonzero(readable)
    return images[kept], kept


def read_class_folders(
    split_root: Path, class_names: Sequence[str], image_shape: tuple[int, int, int] | None
) -> RawSplit:
    """``split_root/<class>/**`` for each class name (a missing class folder holds no images)."""
    paths: list[Path] = []
    labels: list[int] = []
    for class_index, class_name in enumerate(class_names):
        folder = split_root / class_name
        files = image_files(folder) if folder.is_dir() else []
        paths += files
        labels += [class_index] * len(files)
    images, kept = decode_skipping_unreadable(paths, resolve_image_shape(image_shape, paths), split_root)
    if not len(kept):
        raise DataError(
            f"{split_root} holds no readable images (looked for {', '.join(sorted(IMAGE_EXTENSIONS))} files "
            "in each class folder)"
        )
    label_array = np.asarray(labels, dtype=np.int64)[kept]
    empty = [name for index, name in enumerate(class_names) if not (label_array == index).any()]
    if empty:
        logger.warning("%s: no readable images for class(es) %s", split_root, ", ".join(empty))
    return RawSplit(images, label_array, list(class_names), str(split_root))


def resolve_image_shape(image_shape: tuple[int, int, int] | None, paths: Sequence[Path]) -> tuple[int, int, int]:
    """The shape the images are decoded to: ``image_shape`` when the caller names one, else one the recipes
    support, from the images' headers: 28x28 grey stays so (the MLP recipe); anything else becomes 32x32,
    grey or colour as the images are (the conv recipe)."""
    if image_shape is None:
        image_shape = _inferred_shape(paths)
    if len(image_shape) != 3 or image_shape[0] not in (1, 3) or min(image_shape[1:]) < 1:
        raise DataError(f"image shape must be (channels, height, width) with 1 or 3 channels, got {image_shape}")
    channels, height, width = (int(size) for size in image_shape)
    return channels, height, width


def _inferred_shape(paths: Sequence[Path]) -> tuple[int, int, int]:
    modes, sizes = set(), set()
    for path in paths[:SHAPE_SAMPLE]:
        try:
            with Image.open(path) as image:  # the header only: no pixel is decoded here
                modes.add(image.mode)
                sizes.add(image.size)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            continue
    channels = 1 if modes and modes <= GREY_MODES else 3
    if channels == 1 and sizes == {(28, 28)}:
        return (1, 28, 28)
    shown = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:3]) + (" ..." if len(sizes) > 3 else "")
    logger.info(
        "images are %s %s: decoding them to %s 32x32 (--image-size and --channels pick another size)",
        "grey" if channels == 1 else "colour",
        shown or "of unknown size",
        "grey" if channels == 1 else "colour",
    )
    return (channels, 32, 32)


def _folder_split_root(root: Path, split: Split) -> tuple[Path, list[str]]:
    """The folder holding ``split``'s class folders, and the class names (from train/ when there are split
    folders, so test labels use the same indices even when test/ lacks a class)."""
    if not (root / "train").is_dir():
        if split == "test":
            raise DataError(
                f"{root} has no test split: it holds one folder per class and no test/ folder. "
                f"Put held-out images under {root}/test/<class>/ (and the rest under {root}/train/<class>/)"
            )
        return root, [folder.name for folder in subfolders(root)]
    class_names = [folder.name for folder in subfolders(root / "train")]
    split_root = root / split
    if not split_root.is_dir():
        raise DataError(f"{root} has no {split} split: there is no {split_root} folder")
    unknown = sorted({folder.name for folder in subfolders(split_root)} - set(class_names))
    if unknown:
        raise DataError(f"{split_root} has class folders that {root}/train lacks: {', '.join(unknown)}")
    return split_root, class_names


class FolderReader:
    name = "folder"

    def detect(self, path: Path) -> bool:
        return path.is_dir() and bool(subfolders(path))

    def has_split(self, directory: Path, split: Split) -> bool:
        return (directory / split).is_dir()

    def read(self, path: Path, split: Split, image_shape: tuple[int, int, int] | None) -> RawSplit:
        split_root, class_names = _folder_split_root(path, split)
        if not class_names:
            raise DataError(f"{split_root} holds no class folders (expected {split_root}/<class_name>/<images>)")
        return read_class_folders(split_root, class_names, image_shape)
