"""Datasets for training: one reader per on-disk format, name resolution for the known datasets, and the
seeded labelled / unlabelled / validation split of DESIGN section 4.

Every reader ends in the same ``ImageDataset`` of uint8 (N, C, H, W) images and int64 labels, so the
trainer never needs to know which format the user brought. Formats: MNIST-family IDX files (gzipped or
not), ``.npz`` arrays under the usual key names, CIFAR-10 python batches, and a folder of images per class
(normalised by ``model.preprocessing.image_to_array``, the function the server uses, so that training sees
exactly what the server sees).

Problems with the user's data raise ``DataError`` with a message that says what to fix; the CLI prints the
message alone.
"""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import re
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from PIL import Image

from model.preprocessing import image_to_array

logger = logging.getLogger(__name__)

Split = Literal["train", "test"]
DatasetFormat = Literal["idx", "npz", "cifar", "folder"]

SPLITS: tuple[Split, ...] = ("train", "test")
# Where Debian's dataset packages install their data (`dataset-fashion-mnist` -> fashion-mnist/).
SYSTEM_DATASETS_DIR = Path("/usr/share/datasets")
DATA_DIR_ENV = "SGAN_DATA_DIR"
DEFAULT_FOLDER_IMAGE_SHAPE: tuple[int, int, int] = (3, 32, 32)
DOWNLOAD_EXTRA_HINT = "pip install 'sgan-service[download]'"


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
    labels: np.ndarray  # int64 (N,), values in 0..K-1
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
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise DataError(
                f"{self.source}: labels run from {self.labels.min()} to {self.labels.max()}, "
                f"but there are {len(self.class_names)} class names "
                f"(labels must be 0..{len(self.class_names) - 1})"
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


# ----------------------------------------------------------------------------------------------------------
# Known datasets
# ----------------------------------------------------------------------------------------------------------

IDX_FILE_NAMES: dict[Split, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR_SUBDIR = "cifar-10-batches-py"  # what the official tarball unpacks to
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{number}" for number in range(1, 6))
CIFAR_FILE_NAMES: dict[Split, tuple[str, ...]] = {"train": CIFAR_TRAIN_BATCHES, "test": ("test_batch",)}
CIFAR10_CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


@dataclass(frozen=True)
class KnownDataset:
    """What a known name means: the formats its files come in (tried in order), its class names in index
    order, and how to get it (the torchvision class behind ``--download``, the Debian package if any)."""

    formats: tuple[DatasetFormat, ...]
    class_names: tuple[str, ...]
    torchvision_class: str
    torchvision_subdir: str  # where that class writes its files under its root
    debian_package: str | None = None

    def expected_files(self, split: Split) -> list[str]:
        """Human-readable file names this dataset's ``split`` may come as, for the not-found message."""
        names = {
            "idx": " + ".join(f"{file}[.gz]" for file in IDX_FILE_NAMES[split]),
            "npz": f"*-{split}-imgs.npz + *-{split}-labels.npz, or an .npz holding x_{split}/y_{split}",
            "cifar": " + ".join(CIFAR_FILE_NAMES[split]) + f" (or under {CIFAR_SUBDIR}/)",
            "folder": f"{split}/<class>/<images>",
        }
        return [names[dataset_format] for dataset_format in self.formats]


KNOWN_DATASETS: dict[str, KnownDataset] = {
    "mnist": KnownDataset(
        formats=("idx", "npz"),
        class_names=tuple(str(digit) for digit in range(10)),
        torchvision_class="MNIST",
        torchvision_subdir="MNIST/raw",
    ),
    "fashion-mnist": KnownDataset(
        formats=("idx", "npz"),
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),  # fmt: skip
        torchvision_class="FashionMNIST",
        torchvision_subdir="FashionMNIST/raw",
        debian_package="dataset-fashion-mnist",
    ),
    # Kuzushiji-MNIST, romanised hiragana in the dataset's own class order (kmnist_classmap.csv).
    "kmnist": KnownDataset(
        formats=("idx", "npz"),
        class_names=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        torchvision_class="KMNIST",
        torchvision_subdir="KMNIST/raw",
    ),
    "cifar10": KnownDataset(
        formats=("cifar",),
        class_names=CIFAR10_CLASS_NAMES,
        torchvision_class="CIFAR10",
        torchvision_subdir=CIFAR_SUBDIR,
    ),
}


class _RawSplit(NamedTuple):
    """What a reader found: class names only when the files carry them."""

    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray  # int64 (N,)
    class_names: list[str] | None
    source: str


# ----------------------------------------------------------------------------------------------------------
# Array checks shared by the readers
# ----------------------------------------------------------------------------------------------------------


def _to_uint8_nchw(images: np.ndarray, source: str) -> np.ndarray:
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


def _to_labels(labels: np.ndarray, count: int, source: str) -> np.ndarray:
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
    if count and labels.min() < 0:
        raise DataError(f"{source}: labels must be class indices 0..K-1, found {labels.min()}")
    return labels.astype(np.int64)


# ----------------------------------------------------------------------------------------------------------
# MNIST-family IDX files (http://yann.lecun.com/exdb/mnist/, "FILE FORMATS" section)
# ----------------------------------------------------------------------------------------------------------

_IDX_MAGIC_IMAGES = 0x00000803  # unsigned bytes, 3 dimensions (N, H, W)
_IDX_MAGIC_LABELS = 0x00000801  # unsigned bytes, 1 dimension (N,)


def _find_idx_file(directory: Path, stem: str) -> Path | None:
    """The file for ``stem``, gzipped or not; also the ``train-images.idx3-ubyte`` spelling that some
    unpackers produce."""
    for name in (stem, stem.replace("-idx", ".idx")):
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _read_idx_array(path: Path, magic: int) -> np.ndarray:
    """One IDX file -> its uint8 array, after checking the magic number and that the data size matches the
    header: a truncated download would otherwise surface as a shape error deep inside training."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip's magic, whatever the file is called
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: cannot read it ({error}); it is truncated or corrupt, get it again") from error
    dimensions = magic & 0xFF
    header_size = 4 + 4 * dimensions
    if len(raw) < header_size:
        raise DataError(f"{path}: only {len(raw)} bytes, shorter than an IDX header; the file is truncated")
    found_magic = int.from_bytes(raw[:4], "big")
    if found_magic != magic:
        raise DataError(
            f"{path}: not an IDX {'image' if magic == _IDX_MAGIC_IMAGES else 'label'} file "
            f"(magic number 0x{found_magic:08x}, expected 0x{magic:08x})"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * axis : 8 + 4 * axis], "big") for axis in range(dimensions))
    expected = int(np.prod(shape))
    if len(raw) - header_size != expected:
        raise DataError(
            f"{path}: holds {len(raw) - header_size} bytes of data but its header promises "
            f"{shape} = {expected}; "
            "the file is truncated or corrupt, get it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape).copy()


def _has_idx_split(directory: Path, split: Split) -> bool:
    return all(_find_idx_file(directory, stem) is not None for stem in IDX_FILE_NAMES[split])


def _read_idx(directory: Path, split: Split) -> _RawSplit:
    images_stem, labels_stem = IDX_FILE_NAMES[split]
    images_path, labels_path = _find_idx_file(directory, images_stem), _find_idx_file(directory, labels_stem)
    if images_path is None or labels_path is None:
        raise DataError(f"{directory} has no IDX {split} split: expected {images_stem}[.gz] and {labels_stem}[.gz]")
    images = _read_idx_array(images_path, _IDX_MAGIC_IMAGES)[:, None]  # (N, 1, H, W)
    labels = _read_idx_array(labels_path, _IDX_MAGIC_LABELS)
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
    return _RawSplit(images, labels.astype(np.int64), None, str(directory))


# ----------------------------------------------------------------------------------------------------------
# .npz arrays
# ----------------------------------------------------------------------------------------------------------

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


def _read_npz(path: Path, split: Split) -> _RawSplit:
    location = _locate_npz_split(_npz_files(path), split)
    if location is None:
        raise DataError(
            f"{path} has no {split} split in .npz form: expected x_{split}/y_{split} or "
            f"{split}_images/{split}_labels keys, images/labels in a file named like {split}.npz, "
            f"or a *-{split}-imgs.npz + *-{split}-labels.npz pair"
        )
    images_source = f"{location.images_path}[{location.images_key or 'arr_0'}]"
    images = _to_uint8_nchw(_npz_array(location.images_path, location.images_key), images_source)
    labels = _to_labels(_npz_array(location.labels_path, location.labels_key), len(images), str(location.labels_path))
    class_names = None
    for names_path in dict.fromkeys((location.images_path, location.labels_path)):
        if "class_names" in _npz_keys(names_path):
            class_names = [str(name) for name in _npz_array(names_path, "class_names").ravel()]
            break
    return _RawSplit(images, labels, class_names, str(location.images_path))


# ----------------------------------------------------------------------------------------------------------
# CIFAR-10 python batches (https://www.cs.toronto.edu/~kriz/cifar.html, "Dataset layout")
# ----------------------------------------------------------------------------------------------------------


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
    labels = _to_labels(np.asarray(_cifar_field(content, "labels", path)), len(images), str(path))
    return images, labels


def _cifar_class_names(directory: Path) -> list[str]:
    """Names from ``batches.meta`` when present, else CIFAR-10's published list."""
    meta_path = directory / "batches.meta"
    if not meta_path.is_file():
        return list(CIFAR10_CLASS_NAMES)
    names = _cifar_field(_unpickle_cifar(meta_path), "label_names", meta_path)
    return [name.decode() if isinstance(name, bytes) else str(name) for name in names]  # type: ignore[attr-defined]


def _read_cifar(directory: Path, split: Split) -> _RawSplit:
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
    return _RawSplit(images, labels, _cifar_class_names(directory), str(directory))


# ----------------------------------------------------------------------------------------------------------
# A folder of images per class
# ----------------------------------------------------------------------------------------------------------

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
    channels, height, width = image_shape
    try:
        with Image.open(path) as image:
            return image_to_array(image, channels, height, width)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
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


def _read_image_folder(root: Path, split: Split, image_shape: tuple[int, int, int]) -> _RawSplit:
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
    return _RawSplit(np.stack(arrays), label_array, class_names, str(split_root))


# ----------------------------------------------------------------------------------------------------------
# Format detection and name resolution
# ----------------------------------------------------------------------------------------------------------


def _detect_format(path: Path) -> DatasetFormat:
    """Which reader a user's file or directory needs, from the names of the files in it."""
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return "npz"
        stems = {stem for pair in IDX_FILE_NAMES.values() for stem in pair}
        if any(_find_idx_file(path.parent, stem) == path for stem in stems):
            return "idx"
        if path.name in (*CIFAR_TRAIN_BATCHES, "test_batch", "batches.meta"):
            return "cifar"
        raise DataError(f"{path}: cannot tell the dataset format from this file; pass the folder that holds it")
    if any(_find_idx_file(path, stem) for pair in IDX_FILE_NAMES.values() for stem in pair):
        return "idx"
    if any(candidate.is_file() for candidate in path.glob("*.npz")):
        return "npz"
    if any(_has_cifar_split(path, split) for split in SPLITS):
        return "cifar"
    if _subfolders(path):
        return "folder"
    raise DataError(
        f"{path}: no dataset found. Expected MNIST-style IDX files "
        f"({', '.join(IDX_FILE_NAMES['train'])}[.gz]), "
        ".npz arrays, CIFAR-10 python batches (data_batch_1..5, test_batch) or one folder of images per class"
    )


def _has_split(directory: Path, dataset_format: DatasetFormat, split: Split) -> bool:
    if not directory.is_dir():
        return False
    if dataset_format == "idx":
        return _has_idx_split(directory, split)
    if dataset_format == "npz":
        return _locate_npz_split(_npz_files(directory), split) is not None
    if dataset_format == "cifar":
        return _has_cifar_split(directory, split)
    return (directory / split).is_dir()


def _read(path: Path, dataset_format: DatasetFormat, split: Split, image_shape: tuple[int, int, int]) -> _RawSplit:
    directory = path if path.is_dir() else path.parent
    if dataset_format == "idx":
        return _read_idx(directory, split)
    if dataset_format == "npz":
        return _read_npz(path, split)
    if dataset_format == "cifar":
        return _read_cifar(directory, split)
    return _read_image_folder(path, split, image_shape)


def _known_name(name: str) -> str | None:
    """The KNOWN_DATASETS key a name means, forgiving case and separators (FashionMNIST, fashion_mnist)."""

    def squash(text: str) -> str:
        return re.sub(r"[-_ ]", "", text.lower())

    return next((known for known in KNOWN_DATASETS if squash(known) == squash(name)), None)


def _candidate_directories(name: str, data_dir: str | Path | None) -> list[Path]:
    """Where a known dataset may be, in the order searched (see ``load_dataset``)."""
    bases = [Path(data_dir).expanduser()] if data_dir is not None else []
    if os.environ.get(DATA_DIR_ENV):
        bases.append(Path(os.environ[DATA_DIR_ENV]).expanduser())
    places = [place for base in bases for place in (base, base / name)]
    places += [Path.cwd() / "data" / name, SYSTEM_DATASETS_DIR / name]
    return list(dict.fromkeys(place.absolute() for place in places))


def _find_known(spec: KnownDataset, places: Sequence[Path], split: Split) -> tuple[Path, DatasetFormat] | None:
    """The first place (or the folder torchvision downloads into, inside it) holding ``split``'s files."""
    for place in places:
        for directory in (place, place / spec.torchvision_subdir):
            for dataset_format in spec.formats:
                if _has_split(directory, dataset_format, split):
                    return directory, dataset_format
    return None


def _not_found_message(name: str, spec: KnownDataset, split: Split, places: Sequence[Path]) -> str:
    looked = "\n".join(f"  - {place}" for place in places)
    files = " or ".join(spec.expected_files(split))
    ways = []
    if spec.debian_package:
        ways.append(
            f"  - install it: apt-get update && apt-get install -y {spec.debian_package} "
            f"(puts it in {SYSTEM_DATASETS_DIR / name})"
        )
    ways += [
        f"  - pass --data-dir DIR (or set {DATA_DIR_ENV}) naming a folder holding the files, or DIR/{name}/",
        f"  - pass --download to fetch it with torchvision ({DOWNLOAD_EXTRA_HINT})",
    ]
    return f"dataset {name!r} ({split} split) not found. Looked for {files} in:\n{looked}\nTo get it:\n" + "\n".join(
        ways
    )


def _download(name: str, spec: KnownDataset, target: Path) -> None:
    """Fetch both splits with torchvision's dataset class; our own readers then read the files it wrote."""
    try:
        import torchvision.datasets
    except Exception as error:  # ImportError when absent; a build that mismatches torch fails in other ways
        raise DataError(
            f"--download needs torchvision, which is not importable here ({type(error).__name__}: {error}). "
            f"Install it with {DOWNLOAD_EXTRA_HINT}, or put the files in place and pass --data-dir"
        ) from error
    dataset_class = getattr(torchvision.datasets, spec.torchvision_class)
    logger.info("downloading %s into %s", name, target)
    try:
        for train in (True, False):
            dataset_class(root=str(target), train=train, download=True)
    except (OSError, RuntimeError) as error:  # URLError is an OSError
        raise DataError(f"downloading {name} into {target} failed: {error}") from error


def _class_names_from_folder_name(path: Path, labels: np.ndarray) -> list[str] | None:
    """Class names for files that carry none, when their folder names a known dataset: a path such as
    /usr/share/datasets/fashion-mnist or torchvision's FashionMNIST/raw should read as that dataset."""
    directory = path if path.is_dir() else path.parent
    for folder in (directory, directory.parent):
        known = _known_name(folder.name)
        if known is not None and labels.max(initial=-1) < len(KNOWN_DATASETS[known].class_names):
            return list(KNOWN_DATASETS[known].class_names)
    return None


def _load_known(name: str, split: Split, data_dir: str | Path | None, download: bool) -> _RawSplit:
    spec = KNOWN_DATASETS[name]
    places = _candidate_directories(name, data_dir)
    found = _find_known(spec, places, split)
    if found is None and download:
        target = (Path(data_dir).expanduser() if data_dir is not None else Path.cwd() / "data") / name
        _download(name, spec, target)
        found = _find_known(spec, [target], split)
    if found is None:
        raise DatasetNotFoundError(_not_found_message(name, spec, split, places))
    directory, dataset_format = found
    logger.info("reading %s %s split (%s) from %s", name, split, dataset_format, directory)
    raw = _read(directory, dataset_format, split, DEFAULT_FOLDER_IMAGE_SHAPE)
    return raw._replace(class_names=raw.class_names or list(spec.class_names))


def load_dataset(
    name: str | Path,
    split: Split,
    data_dir: str | Path | None = None,
    download: bool = False,
    image_shape: tuple[int, int, int] | None = None,
) -> ImageDataset:
    """One split of a dataset as uint8 (N, C, H, W) images.

    ``name`` is a known dataset (``KNOWN_DATASETS``) or a path to a dataset file or directory, whose format
    is detected from its file names. A known dataset is looked for in ``data_dir`` and ``data_dir/<name>``,
    then ``$SGAN_DATA_DIR`` and ``$SGAN_DATA_DIR/<name>``, then ``./data/<name>``, then
    ``/usr/share/datasets/<name>`` (where Debian's dataset packages install); the first holding the split
    wins. With ``download`` a missing known dataset is fetched with torchvision into ``data_dir/<name>``
    (or ``./data/<name>``). ``image_shape`` (C, H, W) is only used to resize images from a folder of images
    (default (3, 32, 32)); other formats keep their native shape.
    """
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    known = _known_name(name) if isinstance(name, str) else None  # a Path is always a path
    if known is not None:
        raw = _load_known(known, split, data_dir, download)
    else:
        path = Path(name).expanduser()
        if not path.exists():
            raise DataError(
                f"unknown dataset {name!r}: not one of {', '.join(KNOWN_DATASETS)}, and no file or folder "
                "by that name exists (a path may name IDX files, .npz arrays, CIFAR-10 batches or a folder "
                "of images per class)"
            )
        dataset_format = _detect_format(path)
        raw = _read(path, dataset_format, split, image_shape or DEFAULT_FOLDER_IMAGE_SHAPE)
        if raw.class_names is None:
            raw = raw._replace(class_names=_class_names_from_folder_name(path, raw.labels))
    class_names = raw.class_names
    if class_names is None:
        class_names = [str(index) for index in range(int(raw.labels.max(initial=-1)) + 1)]
    return ImageDataset(images=raw.images, labels=raw.labels, class_names=class_names, source=raw.source)


# ----------------------------------------------------------------------------------------------------------
# The labelled / unlabelled / validation split (DESIGN section 4)
# ----------------------------------------------------------------------------------------------------------


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
