"""Label-preserving augmentation of uint8 image batches, on the device that holds them (no host work).

Random translation by up to ``max_shift`` pixels (zero padding, which is the background of dark-background
datasets such as MNIST and Fashion-MNIST) and, optionally, a random horizontal flip. Both keep an image in the
data distribution, so they are sound for the unlabelled and the labelled batches alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_translate_flip(images: torch.Tensor, max_shift: int, flip: bool) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W), each image shifted by its own offset in [-max_shift, max_shift]^2
    and, with ``flip``, mirrored left-right with probability 1/2."""
    batch, _channels, height, width = images.shape
    if flip:
        mirrored = torch.rand(batch, device=images.device) < 0.5
        images = torch.where(mirrored[:, None, None, None], images.flip(-1), images)
    if max_shift <= 0:
        return images
    padded = F.pad(images, (max_shift,) * 4)  # (B, C, H + 2s, W + 2s), zeros
    offsets = torch.randint(0, 2 * max_shift + 1, (2, batch), device=images.device)
    rows = offsets[0][:, None] + torch.arange(height, device=images.device)  # (B, H)
    cols = offsets[1][:, None] + torch.arange(width, device=images.device)  # (B, W)
    batch_index = torch.arange(batch, device=images.device)[:, None, None]
    # Advanced indexing over (batch, row, col) puts the channel axis last: (B, H, W, C).
    cropped = padded.permute(0, 2, 3, 1)[batch_index, rows[:, :, None], cols[:, None, :]]
    return cropped.permute(0, 3, 1, 2).contiguous()
