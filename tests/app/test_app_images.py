"""A corpus of malformed and unusual images, made by the tests: each gets the right error code, or the same
classification as the plain image it encodes."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from app_images import (
    animated_gif,
    encode,
    exif_rotated_jpeg,
    garment,
    garment_png,
    gif_with_oversized_frame,
    palette_with_transparency,
    png_header_only,
    rgba_cutout,
    sixteen_bit_png,
)
from fastapi.testclient import TestClient
from PIL import Image

from app.imaging import ImageError, prepare_image
from model import read_card

pytest_plugins = ["app_fixtures"]  # the fixtures of tests/app (see app_fixtures.py)

# Lossy re-encodings (JPEG, or a conversion through another colour space) move pixels by a level or two;
# the tiny random model turns that into differences far below this. A wrong orientation, frame or
# polarity moves whole strokes and shows up far above it (each test checks that too).
SAME_ANSWER = 2e-3


def classify(client: TestClient, data: bytes, **params: object) -> dict:
    response = client.post("/classify", params=params, files={"file": ("upload", data, "application/octet-stream")})
    assert response.status_code == 200, response.text
    return response.json()


def probabilities(answer: dict) -> np.ndarray:
    return np.array(list(answer["probabilities"].values()))


def assert_same_answer(answer: dict, reference: dict) -> None:
    assert answer["label"] == reference["label"]
    np.testing.assert_allclose(probabilities(answer), probabilities(reference), atol=SAME_ANSWER)


def assert_different_answer(answer: dict, reference: dict) -> None:
    assert np.abs(probabilities(answer) - probabilities(reference)).max() > SAME_ANSWER


# ---------------------------------------------------------------------------------------------- refused


def truncated_png() -> bytes:
    data = encode(Image.effect_noise((64, 64), 50).convert("L"), "PNG")
    return data[: len(data) // 2]


def truncated_jpeg() -> bytes:
    data = encode(garment(256).convert("RGB"), "JPEG", quality=90)
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"", 400, "empty"),
        (b"Dear server, this is not an image.\n", 400, "not a decodable image"),
        (b"\x89PNG\r\n\x1a\n", 400, "starts like a PNG image"),  # a signature and nothing else
        (truncated_png(), 400, "cannot decode the PNG image"),
        (truncated_jpeg(), 400, "cannot decode the JPEG image"),
        (png_header_only(100_000, 100_000), 413, "over the limit"),
        (png_header_only(1, 50_000_000), 413, "over the limit"),
        (gif_with_oversized_frame(8000, 8000), 413, "8000x8000"),
        (encode(garment(), "TIFF"), 415, "TIFF"),
        (encode(garment().convert("RGB"), "PPM"), 415, "PPM"),
    ],
    ids=["zero-bytes", "text", "png-signature-only", "truncated-png", "truncated-jpeg", "bomb-100000x100000",
         "bomb-1x50M", "gif-frame-bomb", "tiff", "ppm"],
)  # fmt: skip
def test_bad_images_get_the_right_code(client: TestClient, data: bytes, status: int, message: str) -> None:
    start = time.perf_counter()
    response = client.post("/classify", files={"file": ("upload", data, "application/octet-stream")})
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    # A bomb is refused from its header: no time (or memory) spent decoding 10^10 pixels.
    assert time.perf_counter() - start < 2.0


def test_a_bomb_in_a_batch_refuses_only_that_file(client: TestClient) -> None:
    files = [
        ("files", ("bomb.png", png_header_only(100_000, 100_000), "image/png")),
        ("files", ("ok.png", garment_png(), "image/png")),
    ]
    results = client.post("/classify/batch", files=files).json()["results"]
    assert [item["status_code"] for item in results] == [413, 200]


# ---------------------------------------------------------------------------------------------- accepted


def test_every_promised_format_classifies_like_the_png(client: TestClient) -> None:
    reference = classify(client, garment_png())
    for image_format, options in (("JPEG", {"quality": 95}), ("WEBP", {"lossless": True}), ("GIF", {}), ("BMP", {})):
        answer = classify(client, encode(garment(), image_format, **options))
        assert_same_answer(answer, reference)


def test_exif_rotated_jpeg_classifies_like_the_upright_image(client: TestClient) -> None:
    upright = garment()
    reference = classify(client, encode(upright, "JPEG", quality=95))
    assert_same_answer(classify(client, exif_rotated_jpeg(upright)), reference)
    # The same stored pixels without the EXIF tag are a different (sideways) picture.
    sideways = encode(upright.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95)
    assert_different_answer(classify(client, sideways), reference)


def test_cmyk_jpeg_classifies_like_its_rgb_original(client: TestClient) -> None:
    rgb = Image.merge("RGB", [garment()] * 3)
    cmyk = encode(rgb.convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(cmyk)).mode == "CMYK"
    assert_same_answer(classify(client, cmyk), classify(client, encode(rgb, "JPEG", quality=95)))


def test_16_bit_png_classifies_like_the_8_bit_png(client: TestClient) -> None:
    assert_same_answer(classify(client, sixteen_bit_png(garment())), classify(client, garment_png()))


def test_a_dark_16_bit_png_is_not_stretched_to_full_brightness(app_model_dir: Path) -> None:
    # Values up to 255 out of 65535: a nearly black picture, and it must stay nearly black.
    dim = Image.fromarray(np.asarray(garment(), dtype=np.uint16))
    prepared = prepare_image(encode(dim, "PNG"), read_card(app_model_dir), 10**8, invert="false")
    assert prepared.pixels.max() <= 1


@pytest.mark.parametrize("make", [palette_with_transparency, rgba_cutout], ids=["palette-trns", "rgba"])
def test_transparent_images_are_seen_on_white_like_a_viewer_shows_them(client: TestClient, make) -> None:
    # A dark garment on a transparent background: on white, then inverted to the training polarity.
    answer = classify(client, make(garment()))
    assert answer["inverted"] is True
    assert_same_answer(answer, classify(client, garment_png()))


def test_animated_gif_is_classified_by_its_first_frame(client: TestClient) -> None:
    first, second = garment(), garment().transpose(Image.Transpose.ROTATE_180)
    answer = classify(client, animated_gif(first, second))
    assert_same_answer(answer, classify(client, encode(first, "PNG")))
    assert_different_answer(answer, classify(client, encode(second, "PNG")))


@pytest.mark.parametrize("size", [(1, 1), (3000, 2000), (28, 500)], ids=["1x1", "6-megapixel", "thin"])
def test_any_size_is_resized_as_in_training(client: TestClient, size: tuple[int, int]) -> None:
    image = garment(max(size)).resize(size)
    assert classify(client, encode(image.convert("RGB"), "JPEG", quality=90))["label"]


def test_prepared_pixels_match_training_preprocessing(app_model_dir: Path) -> None:
    """Below the HTTP layer: the arrays themselves, so a silent conversion bug cannot hide behind a
    forgiving model."""
    card = read_card(app_model_dir)

    def pixels(data: bytes) -> np.ndarray:
        return prepare_image(data, card, 10**8).pixels.astype(int)

    reference = pixels(garment_png())
    assert reference.shape == (1, 28, 28)
    assert np.abs(pixels(exif_rotated_jpeg(garment())) - reference).mean() < 1.0
    assert np.abs(pixels(palette_with_transparency(garment())) - reference).mean() < 1.0
    assert np.abs(pixels(sixteen_bit_png(garment())) - reference).max() == 0
    assert np.abs(pixels(garment_png(light_background=True)) - reference).mean() < 1.0


def test_image_errors_carry_their_status(app_model_dir: Path) -> None:
    with pytest.raises(ImageError) as refused:
        prepare_image(png_header_only(20_000, 20_000), read_card(app_model_dir), max_pixels=10**6)
    assert refused.value.status_code == 413
