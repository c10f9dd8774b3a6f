"""Batch augmentation: flips mirror, shifts move content within the bounds, nothing else changes."""

from __future__ import annotations

import torch

from training.augment import random_translate_flip


def test_flip_only_mirrors_some_images_and_keeps_the_others() -> None:
    torch.manual_seed(0)
    images = torch.randint(0, 256, (64, 1, 6, 7), dtype=torch.uint8)
    out = random_translate_flip(images, max_shift=0, flip=True)
    mirrored = [bool(torch.equal(o, i.flip(-1))) for o, i in zip(out, images, strict=True)]
    kept = [bool(torch.equal(o, i)) for o, i in zip(out, images, strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True))
    assert 10 < sum(mirrored) < 54  # about half


def test_shift_moves_a_single_bright_pixel_by_at_most_the_bound() -> None:
    torch.manual_seed(0)
    images = torch.zeros(200, 3, 9, 9, dtype=torch.uint8)
    images[:, :, 4, 4] = 255
    out = random_translate_flip(images, max_shift=2, flip=False)
    assert out.shape == images.shape and out.dtype == torch.uint8
    positions = set()
    for image in out:
        rows, cols = torch.nonzero(image[0], as_tuple=True)
        assert len(rows) == 1 and torch.equal(image[0], image[1])  # channels move together
        positions.add((int(rows[0]) - 4, int(cols[0]) - 4))
    assert positions == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}  # every offset, no other
