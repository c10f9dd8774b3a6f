"""Decoding a folder's image files into one uint8 array: in parallel processes, with a progress bar, and
cached so that the second run on the same files skips it.

The cache is keyed on every file's path, size and modification time and on the target shape, so a changed,
added or removed file (or another ``--image-size``) decodes afresh. It lives in ``$SGAN_CACHE_DIR`` (default
``~/.cache/sgan-service``), not beside the images, whose folder may be read-only; each entry is written
atomically, so a run killed while caching leaves either the whole entry or none.
"""

from __future__ import annotations

import hashlib
import io
import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model.directory import atomic_write_bytes
from model.imaging import UnreadableImage, read_image_file

logger = logging.getLogger(__name__)

CACHE_DIR_ENV = "SGAN_CACHE_DIR"
# Below this many files a process pool costs more than it saves (each worker imports torch via model/).
PARALLEL_MIN_FILES = 2000
CHUNK_SIZE = 256


def cache_dir() -> Path:
    configured = os.environ.get(CACHE_DIR_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "sgan-service"


def cache_key(paths: Sequence[Path], image_shape: tuple[int, int, int]) -> str:
    digest = hashlib.sha256(repr(tuple(image_shape)).encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def _decode_one(path: Path, image_shape: tuple[int, int, int]) -> np.ndarray | None:
    try:
        return read_image_file(path, image_shape)
    except UnreadableImage as error:
        logger.debug("skipping %s: %s", path, error)
        return None


def _decode_chunk(paths: list[Path], image_shape: tuple[int, int, int]) -> list[np.ndarray | None]:
    return [_decode_one(path, image_shape) for path in paths]


def _decode_all(paths: Sequence[Path], image_shape: tuple[int, int, int], progress: bool) -> np.ndarray:
    """uint8 (N, C, H, W); an unreadable file's slot is left all-zero and reported by ``readable``."""
    images = np.zeros((len(paths), *image_shape), dtype=np.uint8)
    readable = np.zeros(len(paths), dtype=bool)
    chunks = [list(paths[start : start + CHUNK_SIZE]) for start in range(0, len(paths), CHUNK_SIZE)]
    bar = tqdm(total=len(paths), desc="decoding images", unit="img", disable=not progress, leave=False)
    if len(paths) < PARALLEL_MIN_FILES:
        results = (_decode_chunk(chunk, image_shape) for chunk in chunks)
        _collect(results, images, readable, bar)
    else:
        # spawn, not fork: the parent may hold torch's thread pools, which do not survive a fork.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 1, mp_context=context) as pool:
            _collect(pool.map(_decode_chunk, chunks, [image_shape] * len(chunks)), images, readable, bar)
    bar.close()
    return _pack(images, readable)


def _collect(results: object, images: np.ndarray, readable: np.ndarray, bar: tqdm) -> None:
    position = 0
    for chunk in results:  # type: ignore[attr-defined]
        for array in chunk:
            if array is not None:
                images[position] = array
                readable[position] = True
            position += 1
        bar.update(len(chunk))


def _pack(images: np.ndarray, readable: np.ndarray) -> np.ndarray:
    """One record array: the cache stores it whole, so the images and the readable flags never disagree."""
    packed = np.empty(len(images), dtype=[("image", np.uint8, images.shape[1:]), ("readable", bool)])
    packed["image"], packed["readable"] = images, readable
    return packed


def decode_files(
    paths: Sequence[Path], image_shape: tuple[int, int, int], progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Every file in ``paths`` decoded to uint8 (C, H, W) by the server's pipeline: (images (N, C, H, W),
    readable (N,) bool). Read from the cache when the same files were decoded to the same shape before."""
    if not paths:
        return np.zeros((0, *image_shape), dtype=np.uint8), np.zeros(0, dtype=bool)
    entry = cache_dir() / f"decoded-{cache_key(paths, image_shape)}.npy"
    packed = _read_cache(entry, len(paths), image_shape)
    if packed is None:
        packed = _decode_all(paths, image_shape, progress)
        _write_cache(entry, packed)
    else:
        logger.info("read %d decoded images from the cache (%s)", len(paths), entry)
    return np.ascontiguousarray(packed["image"]), packed["readable"].copy()


def _read_cache(entry: Path, count: int, image_shape: tuple[int, int, int]) -> np.ndarray | None:
    if not entry.is_file():
        return None
    try:
        packed = np.load(entry, allow_pickle=False)
    except (OSError, ValueError) as error:  # a damaged entry is decoded afresh and replaced
        logger.warning("ignoring a damaged cache entry %s (%s)", entry, error)
        return None
    if packed.shape != (count,) or packed.dtype["image"].shape != tuple(image_shape):
        return None
    return packed  # type: ignore[no-any-return]


def _write_cache(entry: Path, packed: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, packed, allow_pickle=False)
    try:
        atomic_write_bytes(entry, buffer.getvalue())
    except OSError as error:  # a read-only home: the run goes on, the next one decodes again
        logger.warning(
            "cannot write the decode cache %s (%s); set %s to a writable folder", entry, error, CACHE_DIR_ENV
        )
