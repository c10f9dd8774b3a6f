"""MNIST-family IDX files (http://yann.lecun.com/exdb/mnist/, "FILE FORMATS" section), gzipped or not."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from training.readers.base import DataError, RawSplit, Split

IDX_FILE_NAMES: dict[Split, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

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


def _read_idx(directory: Path, split: Split) -> RawSplit:
    images_stem, labels_stem = IDX_FILE_NAMES[split]
    images_path, labels_path = _find_idx_file(directory, images_stem), _find_idx_file(directory, labels_stem)
    if images_path is None or labels_path is None:
        raise DataError(f"{directory} has no IDX {split} split: expected {images_stem}[.gz] and {labels_stem}[.gz]")
    images = _read_idx_array(images_path, _IDX_MAGIC_IMAGES)[:, None]  # (N, 1, H, W)
    labels = _read_idx_array(labels_path, _IDX_MAGIC_LABELS)
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
    return RawSplit(images, labels.astype(np.int64), None, str(directory))


class IdxReader:
    name = "idx"

    def detect(self, path: Path) -> bool:
        stems = [stem for pair in IDX_FILE_NAMES.values() for stem in pair]
        if path.is_file():
            return any(_find_idx_file(path.parent, stem) == path for stem in stems)
        return any(_find_idx_file(path, stem) for stem in stems)

    def has_split(self, directory: Path, split: Split) -> bool:
        return _has_idx_split(directory, split)

    def read(self, path: Path, split: Split, image_shape: tuple[int, int, int] | None) -> RawSplit:
        return _read_idx(path if path.is_dir() else path.parent, split)
