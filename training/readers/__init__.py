"""Datasets for training: one reader per on-disk format, registered here, and ``load_dataset``, which picks one.

Every reader ends in the same ``ImageDataset`` of uint8 (N, C, H, W) images and int64 labels, so the trainer
never needs to know which format the user brought. Formats: MNIST-family IDX files (gzipped or not), ``.npz``
arrays under the usual key names, CIFAR-10 python batches, and a folder of images per class.

Problems with the user's data raise ``DataError`` with a message that says what to fix; the CLI prints the
message alone.
"""

from __future__ import annotations

from pathlib import Path

from training.readers.base import (
    SPLITS,
    UNLABELLED,
    DataError,
    DatasetNotFoundError,
    ImageDataset,
    RawSplit,
    Reader,
    Split,
)
from training.readers.cifar import CifarReader
from training.readers.folder import FolderReader
from training.readers.idx import IDX_FILE_NAMES, IdxReader
from training.readers.known import KNOWN_DATASETS, class_names_from_folder_name, known_name, load_known
from training.readers.npz import NpzReader
from training.readers.partly import CsvLabelsReader, PartlyLabelledFolderReader

__all__ = [
    "KNOWN_DATASETS",
    "UNLABELLED",
    "READERS",
    "DataError",
    "DatasetNotFoundError",
    "ImageDataset",
    "Split",
    "load_dataset",
]

# Every format, in the order detection tries them: the first whose ``detect`` accepts a path reads it. (A
# folder plus a CSV of labels is not detected: ``--labels`` names the CSV.)
READERS: dict[str, Reader] = {
    reader.name: reader
    for reader in (IdxReader(), NpzReader(), CifarReader(), PartlyLabelledFolderReader(), FolderReader())
}


def detect_reader(path: Path) -> Reader:
    """The reader for a user's file or folder, from the names of the files in it."""
    for reader in READERS.values():
        if reader.detect(path):
            return reader
    if path.is_file():
        raise DataError(f"{path}: cannot tell the dataset format from this file; pass the folder that holds it")
    raise DataError(
        f"{path}: no dataset found. Expected MNIST-style IDX files "
        f"({', '.join(IDX_FILE_NAMES['train'])}[.gz]), "
        ".npz arrays, CIFAR-10 python batches (data_batch_1..5, test_batch) or one folder of images per class"
    )


def load_dataset(
    name: str | Path,
    split: Split,
    data_dir: str | Path | None = None,
    download: bool = False,
    image_shape: tuple[int, int, int] | None = None,
    labels_csv: str | Path | None = None,
) -> ImageDataset:
    """One split of a dataset as uint8 (N, C, H, W) images.

    ``name`` is a known dataset (``KNOWN_DATASETS``) or a path to a dataset file or directory, whose format
    is detected from its file names. A known dataset is looked for in ``data_dir`` and ``data_dir/<name>``,
    then ``$SGAN_DATA_DIR`` and ``$SGAN_DATA_DIR/<name>``, then ``./data/<name>``, then
    ``/usr/share/datasets/<name>`` (where Debian's dataset packages install); the first holding the split
    wins. With ``download`` a missing known dataset is fetched with torchvision into ``data_dir/<name>``
    (or ``./data/<name>``). ``image_shape`` (C, H, W) is only used to resize images from a folder of images
    (None: chosen from the images); other formats keep their native shape. ``labels_csv`` names a CSV of ``path,label``
    rows for a folder of images (``name``): the listed images are labelled, the others unlabelled (label -1).
    """
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    known = known_name(name) if isinstance(name, str) and labels_csv is None else None  # a Path is always a path
    if known:
        raw = load_known(known, split, data_dir, download, READERS)
    else:
        raw = _load_path(Path(name), split, image_shape, labels_csv)
    class_names = raw.class_names
    if class_names is None:
        class_names = [str(index) for index in range(int(raw.labels.max(initial=-1)) + 1)]
    return ImageDataset(images=raw.images, labels=raw.labels, class_names=class_names, source=raw.source)


def _load_path(
    path: Path, split: Split, image_shape: tuple[int, int, int] | None, labels_csv: str | Path | None
) -> RawSplit:
    path = path.expanduser()
    if not path.exists():
        raise DataError(
            f"unknown dataset {str(path)!r}: not one of {', '.join(KNOWN_DATASETS)}, and no file or folder "
            "by that name exists (a path may name IDX files, .npz arrays, CIFAR-10 batches or a folder "
            "of images per class)"
        )
    if labels_csv is not None and not Path(labels_csv).expanduser().is_file():
        raise DataError(f"--labels {labels_csv}: no such file")
    reader = CsvLabelsReader(Path(labels_csv).expanduser()) if labels_csv is not None else detect_reader(path)
    raw = reader.read(path, split, image_shape)
    if raw.class_names is None:
        raw = raw._replace(class_names=class_names_from_folder_name(path, raw.labels))
    return raw
