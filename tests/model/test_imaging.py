"""The image pipeline on its own: files in, polarity, generated images out as a grid, weight-norm folding."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
from model.imaging import (
    GRID_GUTTER,
    UnreadableImage,
    encode_png,
    match_polarity,
    read_image_file,
    tensor_to_pixels,
    tile_grid,
    training_background,
)
from model.networks import fold_weight_norm


def light_background_shirt(size: int = 56) -> Image.Image:
    """A dark block on white, like a product photo."""
    pixels = np.full((size, size), 255, dtype=np.uint8)
    pixels[size // 4 : 3 * size // 4, size // 3 : 2 * size // 3] = 20
    return Image.fromarray(pixels)


def test_read_image_file_resizes_and_keeps_the_polarity(tmp_path: Path) -> None:
    path = tmp_path / "shirt.png"
    light_background_shirt().save(path)
    pixels = read_image_file(path, (1, 28, 28))
    assert pixels.shape == (1, 28, 28) and pixels.dtype == np.uint8
    assert pixels[0, 0, 0] == 255 and pixels[0, 14, 14] < 40  # still a dark shirt on white: training defines it
    assert read_image_file(path, (3, 14, 14)).shape == (3, 14, 14)


def test_read_image_file_refuses_what_is_not_a_readable_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    buffer = io.BytesIO()
    light_background_shirt().save(buffer, format="PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    for path in (text, truncated, tmp_path / "missing.png"):
        with pytest.raises(UnreadableImage, match=path.name):
            read_image_file(path, (1, 28, 28))
    # A decompression bomb: over twice Pillow's pixel limit.
    whole = tmp_path / "whole.png"
    whole.write_bytes(buffer.getvalue())
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(UnreadableImage):
        read_image_file(whole, (1, 28, 28))


def test_polarity_follows_the_invert_mode() -> None:
    light = np.full((1, 8, 8), 250, dtype=np.uint8)
    pixels, inverted = match_polarity(light, "dark")
    assert inverted and pixels.max() == 5
    assert match_polarity(light, "light")[1] is False
    assert match_polarity(light, "dark", invert="false")[1] is False
    assert match_polarity(light, "light", invert="true")[1] is True
    # A model trained on photos (mixed backgrounds) never inverts on its own; asked to, it does.
    assert match_polarity(light, "mixed")[1] is False and match_polarity(light, "mixed", invert="true")[1] is True


def test_training_background_is_mixed_for_photos_and_dark_for_garments_on_black() -> None:
    rng = np.random.default_rng(0)
    garments = np.zeros((50, 1, 28, 28), dtype=np.uint8)
    garments[:, :, 4:24, 4:24] = 200
    assert training_background(garments) == "dark" and training_background(255 - garments) == "light"
    # Photos: some with a bright sky or wall at the border, some dark; a few strays do not make a set mixed.
    photos = np.concatenate([np.full((30, 3, 32, 32), 220, np.uint8), np.full((20, 3, 32, 32), 30, np.uint8)])
    assert training_background(photos) == "mixed"
    mostly_dark = np.concatenate([garments[:48], 255 - garments[:2]])
    assert training_background(mostly_dark) == "dark"
    assert training_background(rng.integers(0, 256, (0, 1, 8, 8), dtype=np.uint8)) == "dark"


def test_generated_images_round_half_up_and_clamp() -> None:
    images = torch.tensor([-0.2, 0.0, 0.5, 1.0, 1.3]).view(1, 1, 1, 5)
    assert tensor_to_pixels(images).tolist() == [[[[0, 0, 128, 255, 255]]]]


def test_grid_lays_tiles_out_in_rows_with_a_grey_gutter() -> None:
    images = np.stack([np.full((1, 4, 4), value, dtype=np.uint8) for value in (10, 20, 30)])  # (3, 1, 4, 4)
    grid = tile_grid(images, padding=1)
    assert grid.shape == (1, 2 * 5 + 1, 2 * 5 + 1)  # 2 columns, 2 rows
    assert grid[0, 1, 1] == 10 and grid[0, 1, 6] == 20 and grid[0, 6, 1] == 30
    assert grid[0, 0, 0] == GRID_GUTTER and grid[0, 6, 6] == GRID_GUTTER  # gutter and the empty fourth tile
    assert tile_grid(images, columns=3).shape == (1, 4 + 4, 3 * 6 + 2)
    decoded = Image.open(io.BytesIO(encode_png(grid)))
    assert decoded.mode == "L" and np.array_equal(np.asarray(decoded), grid[0])


def test_a_grid_of_no_images_is_one_empty_tile() -> None:
    grid = tile_grid(np.zeros((0, 3, 4, 4), dtype=np.uint8))
    assert grid.shape == (3, 8, 8) and (grid == GRID_GUTTER).all()
    assert Image.open(io.BytesIO(encode_png(grid))).size == (8, 8)


def test_folding_weight_norm_keeps_the_outputs() -> None:
    torch.manual_seed(0)
    discriminator = Discriminator(DiscriminatorConfig(num_classes=3, hidden_sizes=(16,))).eval()
    generator = Generator(GeneratorConfig(hidden_sizes=(8,), latent_size=4)).eval()
    images, latent = torch.rand(2, 1, 28, 28), torch.rand(2, 4)
    with torch.no_grad():
        before = discriminator(images), generator(latent)
        fold_weight_norm(discriminator)
        fold_weight_norm(generator)
        after = discriminator(images), generator(latent)
    assert not any(hasattr(layer, "parametrizations") for layer in [*discriminator.modules(), *generator.modules()])
    assert all(torch.equal(folded, original) for folded, original in zip(after, before, strict=True))
