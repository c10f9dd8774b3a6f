"""``sgan-export``: the bundled model's discriminator and generator as ONNX files that onnxruntime runs to the
same numbers as torch, on real Fashion-MNIST test images, with a dynamic batch and the preprocessing contract in
the metadata."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model import BUNDLED_MODEL_DIR, load_model_dir
from model.export import main

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

FASHION_TEST_IMAGES = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
REAL_IMAGES = 2000
# Float32 through two different kernels (torch's and onnxruntime's GEMMs sum in other orders): measured at
# 2e-6 on these images (benchmarks/results/onnx.md); anything near 1e-4 would be a different network.
TOLERANCE = 1e-5


def fashion_test_images(count: int) -> np.ndarray:
    """The first ``count`` Fashion-MNIST test images, uint8 (N, 1, 28, 28): IDX, 16-byte header."""
    with gzip.open(FASHION_TEST_IMAGES) as handle:
        data = np.frombuffer(handle.read(), dtype=np.uint8, offset=16)
    return data.reshape(-1, 1, 28, 28)[:count]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("onnx")
    discriminator, generator = folder / "d.onnx", folder / "g.onnx"
    status = main([str(BUNDLED_MODEL_DIR), "--onnx", str(discriminator), "--generator-onnx", str(generator)])
    assert status == 0
    return discriminator, generator


def session(path: Path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_TEST_IMAGES.is_file(), reason="needs Debian's dataset-fashion-mnist")
def test_the_exported_discriminator_answers_like_torch_on_real_images(exported: tuple[Path, Path]) -> None:
    loaded = load_model_dir(BUNDLED_MODEL_DIR)
    pixels = torch.from_numpy(fashion_test_images(REAL_IMAGES).astype(np.float32) / 255.0)  # (N, 1, 28, 28)
    with torch.inference_mode():
        logits = loaded.discriminator(pixels)
    expected_probabilities = torch.softmax(logits, dim=-1).numpy()
    expected_realness = torch.sigmoid(torch.logsumexp(logits, dim=-1)).numpy()
    run = session(exported[0])
    for batch in (1, 7, 500):  # the batch dimension is dynamic
        for start in range(0, 500 if batch == 500 else 14, batch):
            stop = start + batch
            _, probabilities, realness = run.run(None, {"pixels": pixels[start:stop].numpy()})
            assert probabilities.shape == (batch, 10) and realness.shape == (batch,)
    _, probabilities, realness = run.run(None, {"pixels": pixels.numpy()})
    assert np.abs(probabilities - expected_probabilities).max() < TOLERANCE
    assert np.abs(realness - expected_realness).max() < TOLERANCE
    assert (probabilities.argmax(1) == expected_probabilities.argmax(1)).all()


@pytest.mark.slow
def test_the_files_carry_the_preprocessing_contract_and_the_generator_matches(exported: tuple[Path, Path]) -> None:
    loaded = load_model_dir(BUNDLED_MODEL_DIR)
    card = loaded.card
    metadata = {prop.key: prop.value for prop in onnx.load(str(exported[0])).metadata_props}
    assert json.loads(metadata["sgan.class_names"]) == card.class_names
    assert json.loads(metadata["sgan.image_shape"]) == list(card.image_shape)
    assert metadata["sgan.model_id"] == card.model_id and metadata["sgan.background"] == card.background
    assert "uint8 / 255" in metadata["sgan.input"] and "LANCZOS" in metadata["sgan.preprocessing"]
    assert json.loads(metadata["sgan.card"])["files"] == card.files

    latent = loaded.generator.sample_latent(5, generator=torch.Generator().manual_seed(0), device="cpu")
    with torch.inference_mode():
        expected = loaded.generator.eval()(latent).numpy()
    (images,) = session(exported[1]).run(None, {"latent": latent.numpy()})
    assert images.shape == (5, *card.image_shape)
    assert np.abs(images - expected).max() < TOLERANCE
    generator_metadata = {prop.key: prop.value for prop in onnx.load(str(exported[1])).metadata_props}
    assert "U(0, 1)" in generator_metadata["sgan.latent"]
