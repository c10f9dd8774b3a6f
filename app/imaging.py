"""Uploads -> the discriminator's input: decode and validate untrusted bytes, then normalise exactly as in
training (``model.preprocessing``).

Every failure is an ``ImageError`` carrying the HTTP status a client should see; nothing a client sends can
escape as another exception.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from model import ModelCard
from model.preprocessing import estimate_background, image_to_array

logger = logging.getLogger(__name__)

InvertMode = Literal["auto", "true", "false"]

# The only parsers that ever see client bytes: the formats the service promises.
SUPPORTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
SUPPORTED_TYPES_TEXT = "PNG, JPEG, WebP, GIF or BMP"
# Uploads of at most this many pixels are decoded on the event loop, larger ones in a worker thread. Measured on
# the 2-core benchmark machine: prepare_image takes 50 us for a 28x28 PNG and 89 us for 64x64 (158 us at
# 128x128, 495 us at 256x256), while a round trip through the thread pool alone takes 50-100 us plus GIL
# hand-offs, and Pillow holds the GIL for most of such a small decode anyway. A photo still never stalls the loop.
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
        raise ImageError(413, f"the image has too many pixels, over the limit of {max_pixels}: {exc}") from None
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
    Image.init()
    for name in Image.ID:
        accept = Image.OPEN[name][1]
        try:
            if accept is not None and accept(prefix):
                return name
        except Exception:  # a check that expected more bytes
            continue
    return None


def prepare_image(
    data: bytes,
    card: ModelCard,
    max_pixels: int,
    invert: InvertMode = "auto",
    declared_type: str | None = None,
) -> PreparedImage:
    """Bytes -> uint8 (C, H, W) ready for ``pixels_to_tensor``: decoded, EXIF-rotated, converted, resized and
    matched to the training images' background polarity. Blocking: ``open_image`` then ``decode_image``."""
    return decode_image(open_image(data, max_pixels, declared_type), card, max_pixels, invert)


def decode_image(image: Image.Image, card: ModelCard, max_pixels: int, invert: InvertMode = "auto") -> PreparedImage:
    """The pixel work of ``prepare_image`` on an image ``open_image`` has identified and size-checked; closes
    it. Its cost grows with the pixel count (``INLINE_DECODE_MAX_PIXELS``)."""
    source_format = image.format or "unknown"
    source_size = image.size
    channels, height, width = card.image_shape
    try:
        image.load()
        # Some formats learn their true canvas only while decoding (a GIF frame may grow it): check again.
        if image.size[0] * image.size[1] > max_pixels:
            raise ImageError(413, f"the decoded image is {image.size[0]}x{image.size[1]} pixels, over the limit")
        pixels = image_to_array(image, channels, height, width)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(413, f"the image has too many pixels, over the limit of {max_pixels}: {exc}") from None
    except Exception as exc:
        # Truncated data ("image file is truncated"), a broken palette, bad EXIF...: all are the client's
        # bytes, so a 400 that says what the decoder said, never a 500.
        logger.info("undecodable %s upload: %r", source_format, exc)
        raise ImageError(400, f"cannot decode the {source_format} image: {exc}") from None
    finally:
        image.close()

    # The model only knows its training polarity (e.g. Fashion-MNIST: light garments on black); a photo of a
    # shirt on a white table must be inverted first. "auto" decides from the image border, as
    # model.preprocessing.match_background does; the caller can force either way.
    inverted = invert == "true" or (invert == "auto" and estimate_background(pixels[None]) != card.background)
    if inverted:
        pixels = 255 - pixels
    return PreparedImage(pixels, inverted, source_format, source_size)


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 (C, H, W) -> PNG bytes (gray for one channel, RGB for three)."""
    buffer = io.BytesIO()
    _to_pil(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_grid_png(images: list[np.ndarray], tile_shape: tuple[int, int, int], padding: int = 2) -> bytes:
    """Lay uint8 (C, H, W) images out in a near-square grid with a gray gutter; a single gray tile when
    there are none, so the answer is always a valid PNG."""
    channels, height, width = tile_shape
    columns = max(1, math.ceil(math.sqrt(len(images))))
    rows = max(1, math.ceil(len(images) / columns))
    grid = np.full(
        (channels, rows * (height + padding) + padding, columns * (width + padding) + padding), 128, np.uint8
    )
    for position, pixels in enumerate(images):
        top = padding + (position // columns) * (height + padding)
        left = padding + (position % columns) * (width + padding)
        grid[:, top : top + height, left : left + width] = pixels
    return encode_png(grid)


def _to_pil(pixels: np.ndarray) -> Image.Image:
    if pixels.shape[0] == 1:
        return Image.fromarray(np.ascontiguousarray(pixels[0]))  # (H, W) uint8 -> "L"
    return Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)))  # (H, W, 3) uint8 -> "RGB"
