"""Label-preserving changes to real images before the discriminator sees them (``--augment``).

Applied on the device to float batches (B, C, H, W), a fresh draw per image and step. The generator's images are
left alone: they are what G makes, and feature matching compares them with the augmented real batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("none", "flip", "flip-shift")
MAX_SHIFT = 2  # pixels, the usual CIFAR-10 translation (a sixteenth of 32)


def augment(pixels: torch.Tensor, kind: str) -> torch.Tensor:
    """``flip`` mirrors a random half of the batch left to right; ``flip-shift`` then moves every image by up to
    ``MAX_SHIFT`` pixels each way."""
    if kind == "none":
        return pixels
    pixels = random_flip(pixels)
    if kind == "flip-shift":
        pixels = random_shift(pixels, MAX_SHIFT)
    return pixels


def random_flip(pixels: torch.Tensor) -> torch.Tensor:
    mirrored = torch.rand(len(pixels), device=pixels.device) < 0.5
    return torch.where(mirrored[:, None, None, None], pixels.flip(3), pixels)


def random_shift(pixels: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Each image moved by its own offset in [-max_shift, max_shift] on both axes. The border is filled by
    reflection, not zeros: a black band would appear on real images only, and D could call "real" by it."""
    batch, _, height, width = pixels.shape
    padded = F.pad(pixels, (max_shift,) * 4, mode="reflect")
    offsets = torch.randint(0, 2 * max_shift + 1, (2, batch), device=pixels.device)
    rows = (offsets[0][:, None] + torch.arange(height, device=pixels.device))[:, None, :, None]
    cols = (offsets[1][:, None] + torch.arange(width, device=pixels.device))[:, None, None, :]
    images = torch.arange(batch, device=pixels.device)[:, None, None, None]
    channels = torch.arange(pixels.shape[1], device=pixels.device)[None, :, None, None]
    return padded[images, channels, rows, cols]
