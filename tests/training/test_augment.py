"""The label-preserving augmentations D's real batches get (training/augment.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from training.augment import MAX_SHIFT, augment, random_flip, random_shift


def _batch(count: int = 64) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(count, 3, 8, 8)


def test_none_returns_the_batch_unchanged() -> None:
    pixels = _batch()
    assert augment(pixels, "none") is pixels


def test_flip_mirrors_some_images_and_keeps_the_rest() -> None:
    pixels = _batch()
    flipped = random_flip(pixels)
    mirrored = [torch.equal(out, image.flip(2)) for out, image in zip(flipped, pixels, strict=True)]
    kept = [torch.equal(out, image) for out, image in zip(flipped, pixels, strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True))
    assert 10 < sum(mirrored) < 54  # about half of 64


def test_shift_moves_each_image_by_its_own_offset_within_the_reflected_border() -> None:
    pixels = _batch()
    shifted = random_shift(pixels, MAX_SHIFT)
    padded = F.pad(pixels, (MAX_SHIFT,) * 4, mode="reflect")
    window = range(2 * MAX_SHIFT + 1)
    offsets = []
    for index, out in enumerate(shifted):
        found = [(r, c) for r in window for c in window if torch.equal(padded[index, :, r : r + 8, c : c + 8], out)]
        assert len(found) == 1, f"image {index} is not a shifted copy"
        offsets.append(found[0])
    assert len(set(offsets)) > 10  # offsets are drawn per image, not once per batch


@pytest.mark.parametrize("kind", ["flip", "flip-shift"])
def test_augmentation_keeps_shape_dtype_and_pixel_range(kind: str) -> None:
    pixels = _batch()
    out = augment(pixels, kind)
    assert out.shape == pixels.shape and out.dtype == pixels.dtype
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not torch.equal(out, pixels)
