"""Tiling generated images into one PNG grid: the trainer's per-epoch samples and the server's /sample.

Written here rather than taken from torchvision because torchvision is an optional extra (its PyPI build
does not import against the pinned CPU torch) and a grid is a reshape.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image


def images_to_uint8(images: torch.Tensor) -> np.ndarray:
    """Generator output in [0, 1], (N, C, H, W) float -> uint8 (N, C, H, W)."""
    return (images.detach().float().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


def tile_grid(images: np.ndarray, columns: int | None = None, padding: int = 2) -> Image.Image:
    """uint8 (N, C, H, W) -> one PIL image with the N images in rows of ``columns`` (default: square)."""
    count, channels, height, width = images.shape
    columns = columns or max(1, math.ceil(math.sqrt(count)))
    rows = math.ceil(count / columns)
    grid = np.zeros(
        (channels, rows * (height + padding) + padding, columns * (width + padding) + padding), dtype=np.uint8
    )
    for index in range(count):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        grid[:, top : top + height, left : left + width] = images[index]
    if channels == 1:
        return Image.fromarray(grid[0], mode="L")
    return Image.fromarray(grid.transpose(1, 2, 0), mode="RGB")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
