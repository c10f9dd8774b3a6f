"""Untrusted uploads -> the discriminator's input: identify and size-check the client's bytes, then hand the
pixel work to the model's own pipeline (``model.imaging``), exactly as in training.

Every failure is an ``ImageError`` carrying the HTTP status a client should see (docs/design.md, HTTP
contract); nothing a client sends can escape as another exception.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool

from model import ModelCard
from model.imaging import InvertMode, to_model_pixels

logger = logging.getLogger(__name__)

# The only parsers that ever see client bytes: the formats the service promises.
SUPPORTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
SUPPORTED_TYPES_TEXT = "PNG, JPEG, WebP, GIF or BMP"
# Uploads of at most this many pixels are decoded on the event loop, larger ones in a worker thread. Measured on
# the 2-core benchmark machine: prepare_image takes 50 us for a 28x28 PNG and 89 us for 64x64 (158 us at
# 128x128, 495 us at 256x256), while a round trip through the thread pool alone takes 50-100 us plus GIL
# hand-offs, and Pillow holds the GIL for most of such a small decode anyway (benchmarks/results/serving.md).
# A photo still never stalls the loop.
INLINE_DECODE_MAX_PIXELS = 64 * 64
# Image media types a client may declare that we know we cannot decode: a 415, not a 400, when decoding fails.
_UNSUPPORTED_DECLARED = ("image/svg", "image/heic", "image/heif", "image/avif", "image/tiff", "image/x-icon")


class ImageError(Exception):
    """An upload the service refuses, with the status code and the message its client gets."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


@dataclass(frozen=True)
class PreparedImage:
    pixels: np.ndarray  # (C, H, W) uint8, in the polarity the model was trained on
    inverted: bool
    source_format: str
    source_size: tuple[int, int]  # (width, height) as uploaded, before EXIF rotation


async def prepare_upload(
    data: bytes,
    card: ModelCard,
    max_pixels: int,
    invert: InvertMode = "auto",
    declared_type: str | None = None,
) -> PreparedImage:
    """``prepare_image`` for a request handler: the header is read on the event loop (cheap, and it gives the
    pixel count); a small image is decoded there too, a large one in a worker thread (INLINE_DECODE_MAX_PIXELS)."""
    image = open_image(data, max_pixels, declared_type)
    width, height = image.size
    if width * height <= INLINE_DECODE_MAX_PIXELS:
        return decode_image(image, card, max_pixels, invert)
    # Decoding a large image is CPU work in C that mostly releases the GIL: a thread keeps the event loop free.
    return await run_in_threadpool(decode_image, image, card, max_pixels, invert)


def prepare_image(
    data: bytes,
    card: ModelCard,
    max_pixels: int,
    invert: InvertMode = "auto",
    declared_type: str | None = None,
) -> PreparedImage:
    """Bytes -> uint8 (C, H, W) ready for the engine: decoded, EXIF-rotated, converted, resized and matched to
    the training images' background polarity. Blocking: ``open_image`` then ``decode_image``."""
    return decode_image(open_image(data, max_pixels, declared_type), card, max_pixels, invert)


def open_image(data: bytes, max_pixels: int, declared_type: str | None = None) -> Image.Image:
    """Identify an upload and check its pixel count from the header, without decoding any pixel data."""
    if not data:
        raise ImageError(400, "the image is empty (0 bytes)")
    try:
        # The JPEG parser also opens the multi-picture JPEGs ("MPO") that many phone cameras write.
        image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except UnidentifiedImageError:
        raise _unidentified(data, declared_type) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard fired first (at twice its MAX_IMAGE_PIXELS): still the client's oversized image.
        raise _too_many_pixels(max_pixels, exc) from None
    except Exception as exc:  # a corrupt header: Pillow raises SyntaxError, ValueError, struct.error, ...
        raise ImageError(400, f"cannot read the image header: {exc}") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageError(400, f"the image header gives an empty size {width}x{height}")
    if width * height > max_pixels:
        raise ImageError(
            413, f"the image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
        )
    return image


def decode_image(image: Image.Image, card: ModelCard, max_pixels: int, invert: InvertMode = "auto") -> PreparedImage:
    """The pixel work of ``prepare_image`` (``model.imaging.to_model_pixels``) on an image ``open_image`` has
    identified and size-checked; closes it. Its cost grows with the pixel count (``INLINE_DECODE_MAX_PIXELS``)."""
    source_format = image.format or "unknown"
    source_size = image.size
    try:
        image.load()
        # Some formats learn their true canvas only while decoding (a GIF frame may grow it): check again.
        if image.size[0] * image.size[1] > max_pixels:
            raise ImageError(413, f"the decoded image is {image.size[0]}x{image.size[1]} pixels, over the limit")
        pixels, inverted = to_model_pixels(image, card.image_shape, card.background, invert)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_many_pixels(max_pixels, exc) from None
    except Exception as exc:
        # Truncated data ("image file is truncated"), a broken palette, bad EXIF...: all are the client's
        # bytes, so a 400 that says what the decoder said, never a 500.
        logger.info("undecodable %s upload: %r", source_format, exc)
        raise ImageError(400, f"cannot decode the {source_format} image: {exc}") from None
    finally:
        image.close()
    return PreparedImage(pixels, inverted, source_format, source_size)


def _too_many_pixels(max_pixels: int, exc: Exception) -> ImageError:
    return ImageError(413, f"the image has too many pixels, over the limit of {max_pixels}: {exc}")


def _unidentified(data: bytes, declared_type: str | None) -> ImageError:
    """Tell "an image in a format we do not take" (415) from "not an image at all" (400)."""
    declared = (declared_type or "").lower()
    if declared.startswith(_UNSUPPORTED_DECLARED):
        return ImageError(415, f"unsupported image type {declared}: send {SUPPORTED_TYPES_TEXT}")
    name = _sniff_format(data[:16])
    if name is None:
        return ImageError(400, f"the data is not a decodable image (expected {SUPPORTED_TYPES_TEXT})")
    if name in SUPPORTED_FORMATS:
        return ImageError(400, f"the data starts like a {name} image but its header cannot be read")
    return ImageError(415, f"unsupported image format {name}: send {SUPPORTED_TYPES_TEXT}")


def _sniff_format(prefix: bytes) -> str | None:
    """Name the format from its signature alone, with Pillow's per-format checks: no other parser runs."""
    # Hand-rolled over Pillow's registry because Pillow has no public "identify without parsing" call, and a
    # sniffing library (filetype, libmagic) would be another dependency naming formats unlike Pillow does.
    Image.init()
    for name in Image.ID:
        accept = Image.OPEN[name][1]
        try:
            if accept is not None and accept(prefix):
                return name
        except Exception:  # a check that expected more bytes
            continue
    return None
