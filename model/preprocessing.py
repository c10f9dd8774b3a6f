"""How an image becomes the discriminator's input: one function, used by the trainer's folder reader and
by the server, so that both normalise exactly alike.

Arrays are uint8 (C, H, W); the networks take float pixels in [0, 1] (``pixels_to_tensor``) and standardise
them themselves.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps

Background = Literal["dark", "light"]


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
    animation, palette/alpha/16-bit/CMYK converted, resized with a high-quality filter."""
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


def estimate_background(images: np.ndarray) -> Background:
    """Whether images (N, C, H, W) uint8 sit on a dark or a light background, from their 1-pixel border."""
    border = np.concatenate(
        [
            images[..., 0, :].ravel(),
            images[..., -1, :].ravel(),
            images[..., :, 0].ravel(),
            images[..., :, -1].ravel(),
        ]
    )
    return "dark" if float(border.mean()) < 127.5 else "light"


def match_background(array: np.ndarray, model_background: Background) -> np.ndarray:
    """Invert a uint8 image whose background polarity differs from the one the model was trained on."""
    if estimate_background(array[None]) != model_background:
        return 255 - array
    return array


def pixels_to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [0, 1], the discriminator's input scale."""
    tensor = torch.as_tensor(images)
    return tensor.to(torch.float32) / 255.0
