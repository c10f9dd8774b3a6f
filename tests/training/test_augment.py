"""The label-preserving augmentations D's real batches get (training/augment.py)."""

from __future__ import annotations

import pytest
import torch

from training.augment import augment, random_flip


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


def test_flip_keeps_shape_dtype_and_pixel_range() -> None:
    pixels = _batch()
    out = augment(pixels, "flip")
    assert out.shape == pixels.shape and out.dtype == pixels.dtype
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not torch.equal(out, pixels)


def test_an_unknown_augmentation_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown augmentation 'shift'"):
        augment(_batch(), "shift")
