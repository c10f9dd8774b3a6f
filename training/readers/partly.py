"""Partly labelled image folders, in the two forms users keep them:

- ``labelled/<class>/...`` beside ``unlabelled/...`` (any nesting; ``labeled``/``unlabeled`` spellings too),
  and optionally ``test/<class>/...``;
- a folder of images plus a CSV of ``path,label`` rows (what labelling tools export): the listed images are
  labelled, every other image under the folder is unlabelled (``test/`` aside).

Unlabelled images get the label -1. A labelled image that cannot be read is an error (a label the user gave
must not vanish); an unreadable unlabelled image is skipped, counted and named.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from pathlib import Path

import numpy as np

from training.readers.base import UNLABELLED, DataError, RawSplit, Split
from training.readers.folder import (
    decode_skipping_unreadable,
    describe_skipped,
    image_files,
    read_class_folders,
    resolve_image_shape,
    subfolders,
)

logger = logging.getLogger(__name__)

LABELLED_NAMES = ("labelled", "labeled")
UNLABELLED_NAMES = ("unlabelled", "unlabeled")
TEST_FOLDER = "test"


def _child(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / name for name in names if (root / name).is_dir()), None)


def _read_test(root: Path, class_names: list[str], image_shape: tuple[int, int, int] | None) -> RawSplit:
    test_root = root / TEST_FOLDER
    if not test_root.is_dir():
        raise DataError(f"{root} has no test split: put held-out labelled images under {test_root}/<class>/")
    unknown = sorted({folder.name for folder in subfolders(test_root)} - set(class_names))
    if unknown:
        raise DataError(f"{test_root} has classes the training labels do not name: {', '.join(unknown)}")
    return read_class_folders(test_root, class_names, image_shape)


def _labelled_and_unlabelled(
    root: Path,
    labelled: list[tuple[Path, int]],
    unlabelled: list[Path],
    class_names: list[str],
    image_shape: tuple[int, int, int] | None,
) -> RawSplit:
    """Decode both lists into one split; the labelled images first."""
    paths = [path for path, _ in labelled] + unlabelled
    images, kept = decode_skipping_unreadable(paths, resolve_image_shape(image_shape, paths), root)
    readable = np.zeros(len(paths), dtype=bool)
    readable[kept] = True
    unreadable_labelled = [path for (path, _), ok in zip(labelled, readable, strict=False) if not ok]
    if unreadable_labelled:
        raise DataError(
            f"{len(unreadable_labelled)} labelled image(s) cannot be read (corrupt or not images): "
            f"{describe_skipped(unreadable_labelled, root)}. Fix or remove them (and their labels)"
        )
    labels = np.array([label for _, label in labelled] + [UNLABELLED] * len(unlabelled), dtype=np.int64)[kept]
    _warn_single_labels(labels, class_names)
    return RawSplit(images, labels, class_names, str(root))


def _warn_single_labels(labels: np.ndarray, class_names: list[str]) -> None:
    counts = np.bincount(labels[labels >= 0], minlength=len(class_names))
    single = [name for name, count in zip(class_names, counts, strict=True) if count == 1]
    if single:
        logger.warning(
            "only one labelled image for class(es) %s: label a few more for a usable model", ", ".join(single)
        )


class PartlyLabelledFolderReader:
    """``labelled/<class>/`` + ``unlabelled/`` (+ ``test/<class>/``)."""

    name = "partly-labelled-folder"

    def detect(self, path: Path) -> bool:
        return path.is_dir() and _child(path, LABELLED_NAMES) is not None

    def has_split(self, directory: Path, split: Split) -> bool:
        return self.detect(directory) and (split == "train" or (directory / TEST_FOLDER).is_dir())

    def read(self, path: Path, split: Split, image_shape: tuple[int, int, int] | None) -> RawSplit:
        labelled_root = _child(path, LABELLED_NAMES)
        assert labelled_root is not None, "detect() said so"
        class_names = [folder.name for folder in subfolders(labelled_root)]
        if not class_names:
            raise DataError(f"{labelled_root} holds no class folders (expected {labelled_root}/<class>/<images>)")
        if split == "test":
            return _read_test(path, class_names, image_shape)
        labelled = [
            (file, index) for index, name in enumerate(class_names) for file in image_files(labelled_root / name)
        ]
        unlabelled_root = _child(path, UNLABELLED_NAMES)
        unlabelled = image_files(unlabelled_root) if unlabelled_root is not None else []
        if not labelled:
            raise DataError(f"{labelled_root} holds no images in its class folders")
        return _labelled_and_unlabelled(path, labelled, unlabelled, class_names, image_shape)


# ----------------------------------------------------------------------------------------------------------
# A folder of images and a CSV of labels
# ----------------------------------------------------------------------------------------------------------


def _csv_rows(csv_path: Path) -> list[tuple[int, str, str]]:
    """(line number, path, label) of every data row; a ``path,label`` header is skipped."""
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as stream:
            rows = [(number, row) for number, row in enumerate(csv.reader(stream), start=1) if any(row)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{csv_path}: cannot read the labels file ({error})") from error
    if rows and [cell.strip().lower() for cell in rows[0][1][:2]] == ["path", "label"]:
        rows = rows[1:]
    parsed = []
    for number, row in rows:
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"{csv_path}, line {number}: expected 'path,label', got {','.join(row)!r}")
        parsed.append((number, row[0].strip(), row[1].strip()))
    if not parsed:
        raise DataError(f"{csv_path}: no labels in it (expected 'path,label' rows)")
    return parsed


def _check_csv_rows(root: Path, csv_path: Path, rows: list[tuple[int, str, str]]) -> None:
    duplicates = [path for path, count in Counter(Path(path).as_posix() for _, path, _ in rows).items() if count > 1]
    if duplicates:
        raise DataError(f"{csv_path}: image(s) listed more than once: {', '.join(duplicates[:5])}")
    unknown = [f"{path} (line {number})" for number, path, _ in rows if not (root / path).is_file()]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise DataError(f"{csv_path}: {len(unknown)} listed image(s) not found under {root}: {shown}")


class CsvLabelsReader:
    """A folder of images whose labels are listed in a CSV; not detected from the folder: ``--labels``
    names the CSV."""

    name = "csv-labels"

    def __init__(self, csv_path: Path) -> None:
        self.csv_path = csv_path

    def detect(self, path: Path) -> bool:
        return path.is_dir()

    def has_split(self, directory: Path, split: Split) -> bool:
        return split == "train" or (directory / TEST_FOLDER).is_dir()

    def read(self, path: Path, split: Split, image_shape: tuple[int, int, int] | None) -> RawSplit:
        if not path.is_dir():
            raise DataError(f"--labels needs --dataset to name the folder that holds the images, not {path}")
        rows = _csv_rows(self.csv_path)
        class_names = sorted({label for _, _, label in rows})
        if split == "test":
            return _read_test(path, class_names, image_shape)
        _check_csv_rows(path, self.csv_path, rows)
        index_of = {name: index for index, name in enumerate(class_names)}
        labelled = [((path / file), index_of[label]) for _, file, label in rows]
        listed = {file.resolve() for file, _ in labelled}
        test_root = (path / TEST_FOLDER).resolve()
        unlabelled = [
            file
            for file in image_files(path)
            if file.resolve() not in listed and test_root not in file.resolve().parents
        ]
        return _labelled_and_unlabelled(path, labelled, unlabelled, class_names, image_shape)
