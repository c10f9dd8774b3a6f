"""Shared fixtures: tiny models and tiny model directories built on the fly (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
    return _save_random_model(path, disc_config, gen_config, FASHION_CLASSES, background, "tiny-test-fixture", seed)


def _save_random_model(
    path: Path,
    disc_config: DiscriminatorConfig,
    gen_config: GeneratorConfig,
    class_names: list[str],
    background: str,
    dataset: str,
    seed: int,
) -> Path:
    card = ModelCard(
        class_names=list(class_names),
        discriminator=disc_config,
        generator=gen_config,
        normalization=normalization_record(disc_config),
        background=background,
        training={"dataset": dataset, "labels_per_class": 0, "seed": seed},
        metrics={},
    )
    save_model_dir(path, Discriminator(disc_config), Generator(gen_config), card)
    return path


CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def build_tiny_colour_model_dir(path: Path, seed: int = 0) -> Path:
    """A small random-weight 32x32 colour conv model directory, shaped like a CIFAR-10 model (the conv recipe's
    networks at a fraction of their widths), trained on photos: a mixed background, so nothing is inverted."""
    torch.manual_seed(seed)
    disc_config = DiscriminatorConfig(
        num_classes=10, channels=3, height=32, width=32, architecture="conv", conv_channels=(8, 16),
        convs_per_block=1, input_mean=(0.5,) * 3, input_std=(0.5,) * 3,
    )  # fmt: skip
    gen_config = GeneratorConfig(
        channels=3, height=32, width=32, architecture="conv", latent_distribution="normal", base_channels=16,
        upsamplings=3,
    )  # fmt: skip
    return _save_random_model(path, disc_config, gen_config, CIFAR_CLASSES, "mixed", "tiny-colour-fixture", seed)


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> Path:
    return build_tiny_model_dir(tmp_path / "tiny-model")


# A model whose answers a test knows, for the "what to label next" tests (sgan-suggest, POST /suggest): 4x4
# grey images. Its two hidden units are the mean brightness of the left and of the right half; class "left"
# wins when the left half is brighter, "right" when the right is; equal halves leave it unsure. Realness grows
# with brightness: a black image scores D(x) = sigmoid(-4 + log 2) = 0.035, junk.
LEFT, RIGHT, BOTH, DARK = (1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (0.0, 0.0)


def halves(left: float, right: float) -> np.ndarray:
    """A uint8 (4, 4) image: its left half at brightness ``left``, its right half at ``right`` (0 to 1)."""
    pixels = np.zeros((4, 4), dtype=np.uint8)
    pixels[:, :2], pixels[:, 2:] = round(left * 255), round(right * 255)
    return pixels


def build_halves_model_dir(path: Path, class_names: tuple[str, str] = ("left", "right")) -> Path:
    """The model directory of the hand-set model above."""
    config = DiscriminatorConfig(num_classes=2, height=4, width=4, hidden_sizes=(2,))
    discriminator = Discriminator(config)
    hidden, head = discriminator.body[2], discriminator.head
    first = torch.zeros(2, 16)
    first[0, torch.arange(16) % 4 < 2], first[1, torch.arange(16) % 4 >= 2] = 1 / 8, 1 / 8
    with torch.no_grad():  # assigning through the weight-norm parametrisation sets g and v
        hidden.weight = first
        hidden.bias.zero_()
        head.weight = torch.tensor([[20.0, 0.0], [0.0, 20.0]])
        head.bias.fill_(-4.0)
    generator_config = GeneratorConfig(height=4, width=4, hidden_sizes=(8,), latent_size=4)
    card = ModelCard(
        class_names=list(class_names),
        discriminator=config,
        generator=generator_config,
        normalization=normalization_record(config),
        background="dark",
    )
    save_model_dir(path, discriminator, Generator(generator_config), card)
    return path
