"""Shared fixtures: tiny models and tiny model directories built on the fly (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model import (
    Discriminator,
    DiscriminatorConfig,
    Generator,
    GeneratorConfig,
    ModelCard,
    normalization_record,
    save_model_dir,
)

# The test models are tiny: a second intra-op thread buys nothing and, on a 2-core machine that also runs
# servers and subprocesses from the tests, OpenMP threads spinning against each other slow runs severalfold.
torch.set_num_threads(1)

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


def build_tiny_model_dir(path: Path, seed: int = 0, background: str = "dark") -> Path:
    """A small random-weight 28x28 gray MLP model directory: enough for contract tests, fast on any CPU."""
    torch.manual_seed(seed)
    disc_config = DiscriminatorConfig(num_classes=10, hidden_sizes=(64, 32))
    gen_config = GeneratorConfig(hidden_sizes=(32,), latent_size=16)
    card = ModelCard(
        class_names=list(FASHION_CLASSES),
        discriminator=disc_config,
        generator=gen_config,
        normalization=normalization_record(disc_config),
        background=background,
        training={"dataset": "tiny-test-fixture", "labels_per_class": 0, "seed": seed},
        metrics={},
    )
    save_model_dir(path, Discriminator(disc_config), Generator(gen_config), card)
    return path


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> Path:
    return build_tiny_model_dir(tmp_path / "tiny-model")
