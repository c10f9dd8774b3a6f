"""Label-preserving changes to real images before the discriminator sees them (``--augment``).

Applied on the device to float batches (B, C, H, W), a fresh draw per image and step. The generator's images are
left alone: they are what G makes, and feature matching compares them with the augmented real batch. Shifts of up
to 2 pixels did not help on CIFAR-10 and lost on Fashion-MNIST (benchmarks/results/recipe_search.md).
"""

from __future__ import annotations

import torch

AUGMENTATIONS = ("none", "flip")


def augment(pixels: torch.Tensor, kind: str) -> torch.Tensor:
    """``flip`` mirrors a random half of the batch left to right; ``none`` returns it as it is."""
    if kind == "none":
        return pixels
    if kind == "flip":
        return random_flip(pixels)
    raise ValueError(f"unknown augmentation {kind!r}: one of {', '.join(AUGMENTATIONS)}")


def random_flip(pixels: torch.Tensor) -> torch.Tensor:
    mirrored = torch.rand(len(pixels), device=pixels.device) < 0.5
    return torch.where(mirrored[:, None, None, None], pixels.flip(3), pixels)
