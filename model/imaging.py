"""The one image pipeline (docs/design.md, Image pipeline): how a picture becomes the discriminator's input, and
how generated images become a PNG grid. The server, the trainer's folder reader, the benchmarks and the tests
all call these functions, so training and serving hand the network the same numbers for the same picture.

In: any PIL image -> decode (first frame, EXIF orientation, mode conversion) -> resize to the model's
(C, H, W) -> polarity (match the training images' background) -> uint8 (C, H, W). The networks take float
pixels in [0, 1] (``pixels_to_tensor``) and standardise them themselves.

Out: generator output in [0, 1] -> uint8 (``tensor_to_pixels``) -> a grid of tiles (``tile_grid``) -> PNG
bytes (``encode_png``). Written here rather than taken from torchvision because torchvision is an optional
extra (its PyPI build does not import against the pinned CPU torch) and a grid is a reshape.
"""

from __future__ import annotations

import io
import math
import os
import struct
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps

# "mixed": training images with no common background (photos): no upload is ever inverted to match it.
Background = Literal["dark", "light", "mixed"]
InvertMode = Literal["auto", "true", "false"]
ImageShape = tuple[int, int, int]  # (channels, height, width)

# Mid-grey between tiles: the edges of every tile stay visible on dark and light backgrounds alike.
GRID_GUTTER = 128

# What Pillow raises for a file that is not a readable image: not an image or an unknown format (OSError),
# truncated data (OSError, EOFError), a corrupt header (SyntaxError, ValueError, struct.error).
_DECODE_ERRORS = (
    OSError,
    EOFError,
    SyntaxError,
    ValueError,
    struct.error,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


class UnreadableImage(ValueError):
    """A file that is not a readable image: corrupt, truncated, not an image, or a decompression bomb."""


# ---------------------------------------------------------------------------------------------- in


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Composite transparent pixels onto white, as a viewer shows them, so transparency never reads as black."""
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(canvas, rgba).convert("RGB")


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit gray ("I;16", "I") scale down by their real range instead of clipping at 255."""
    array = np.asarray(image, dtype=np.float64)
    # An "I;16" image is 16-bit by definition, however dark: guessing its range from its maximum would blow a
    # nearly black 16-bit image up to full brightness. Only the wider modes ("I", "F") carry no declared range.
    sixteen_bit = image.mode.startswith("I;16") or array.max(initial=0) > 255
    top = 65535.0 if sixteen_bit else 255.0
    return Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")


def image_to_array(image: Image.Image, channels: int, height: int, width: int) -> np.ndarray:
    """Any PIL image -> uint8 array (channels, height, width): EXIF orientation applied, first frame of an
    animation, palette/alpha/16-bit/CMYK converted, resized with a high-quality filter. No polarity change."""
    if getattr(image, "is_animated", False):
        image.seek(0)
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = _to_8bit(image)
    elif image.mode in ("RGBA", "LA", "PA") or (
        # Palette, gray and RGB PNGs and GIFs can mark one colour transparent (tRNS) instead of an alpha band.
        image.mode in ("P", "L", "RGB") and "transparency" in image.info
    ):
        image = _flatten_alpha(image)
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.uint8)
    if channels == 1:
        return array[None, :, :].copy()  # (1, H, W)
    return array.transpose(2, 0, 1).copy()  # (3, H, W)


# The share of training images whose borders must agree for the set to have a background: Fashion-MNIST's
# and MNIST's are all dark; CIFAR-10's photos are about 60% dark and 40% light.
CONSISTENT_BACKGROUND_SHARE = 0.9


def _border_means(images: np.ndarray) -> np.ndarray:
    """The mean of each image's 1-pixel border, (N, C, H, W) uint8 -> (N,)."""
    edges = [images[..., 0, :], images[..., -1, :], images[..., :, 0], images[..., :, -1]]
    return np.concatenate([edge.reshape(len(images), -1) for edge in edges], axis=1).mean(axis=1)


def estimate_background(images: np.ndarray) -> Background:
    """Whether images (N, C, H, W) uint8 sit on a dark or a light background, from their 1-pixel border."""
    return "dark" if float(_border_means(images).mean()) < 127.5 else "light"


def training_background(images: np.ndarray) -> Background:
    """The training set's background: dark or light when nearly all its images agree, else mixed (photos),
    for which no upload is inverted: flipping a photo's colours because its sky is bright would be wrong."""
    dark_share = float((_border_means(images) < 127.5).mean()) if len(images) else 1.0
    if dark_share >= CONSISTENT_BACKGROUND_SHARE:
        return "dark"
    return "light" if dark_share <= 1 - CONSISTENT_BACKGROUND_SHARE else "mixed"


def match_polarity(pixels: np.ndarray, background: str, invert: InvertMode = "auto") -> tuple[np.ndarray, bool]:
    """uint8 (C, H, W) -> the same in the training images' polarity, and whether it was inverted.

    ``background`` is the card's ("dark", "light" or "mixed"). The model only knows its training polarity
    (Fashion-MNIST: light garments on black), so a photo of a shirt on a white table must be inverted first:
    "auto" decides from the image's border, "true" and "false" force it. A model trained on images of mixed
    backgrounds (photos) has no polarity to match: "auto" never inverts for it.
    """
    auto_inverts = background != "mixed" and estimate_background(pixels[None]) != background
    inverted = invert == "true" or (invert == "auto" and auto_inverts)
    return (255 - pixels if inverted else pixels), inverted


def to_model_pixels(
    image: Image.Image, image_shape: ImageShape, background: str, invert: InvertMode = "auto"
) -> tuple[np.ndarray, bool]:
    """The whole way in for a picture to classify: decoded, resized, in the training polarity. Returns uint8
    (C, H, W) and whether it was inverted."""
    channels, height, width = image_shape
    return match_polarity(image_to_array(image, channels, height, width), background, invert)


def read_image_file(path: str | os.PathLike[str], image_shape: ImageShape) -> np.ndarray:
    """One training image file -> uint8 (C, H, W), decoded and resized like an upload; its polarity is kept
    (training images define it). Raises ``UnreadableImage`` for a file that is not a readable image;
    a decompression bomb is one past Pillow's ``Image.MAX_IMAGE_PIXELS`` guard."""
    channels, height, width = image_shape
    try:
        with Image.open(path) as image:
            return image_to_array(image, channels, height, width)
    except _DECODE_ERRORS as error:
        raise UnreadableImage(f"{path} is not a readable image: {error}") from error


def pixels_to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [0, 1], the discriminator's input scale."""
    tensor = torch.as_tensor(images)
    return tensor.to(torch.float32) / 255.0


# ---------------------------------------------------------------------------------------------- out


def tensor_to_pixels(images: torch.Tensor) -> np.ndarray:
    """Generator output in [0, 1], (N, C, H, W) float -> uint8 (N, C, H, W), rounded half up."""
    return (images.detach().float().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


def tile_grid(images: np.ndarray, columns: int | None = None, padding: int = 2) -> np.ndarray:
    """uint8 (N, C, H, W) -> one uint8 (C, H', W') image: the N images in rows of ``columns`` (default: near
    square) with a ``GRID_GUTTER`` gutter. No images give one empty tile, so the grid is always a valid image."""
    count, channels, height, width = images.shape
    columns = columns or max(1, math.ceil(math.sqrt(count)))
    rows = max(1, math.ceil(count / columns))
    grid = np.full(
        (channels, rows * (height + padding) + padding, columns * (width + padding) + padding),
        GRID_GUTTER,
        dtype=np.uint8,
    )
    for index in range(count):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        grid[:, top : top + height, left : left + width] = images[index]
    return grid


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 (C, H, W) -> PNG bytes (gray for one channel, RGB for three)."""
    if pixels.shape[0] == 1:
        image = Image.fromarray(np.ascontiguousarray(pixels[0]))  # (H, W) uint8 -> "L"
    else:
        image = Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)))  # (H, W, 3) uint8 -> "RGB"
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
