"""Typed network configs: one dataclass holds a network's whole architecture.

The configs are written into the model card (``model.json``) so a model directory rebuilds its own networks
without any code outside ``model/`` knowing the recipe that produced it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar, Literal

from typing_extensions import Self

Architecture = Literal["mlp", "conv"]
LatentDistribution = Literal["uniform", "normal"]


class _NetworkConfig:
    """What both configs share: the image shape they work on, and a JSON round trip for the model card."""

    channels: int
    height: int
    width: int
    # Fields that follow the dataset (and, for the discriminator, --architecture): never overridden by hand.
    fixed_fields: ClassVar[frozenset[str]] = frozenset({"num_classes", "channels", "height", "width"})

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload, no-any-return]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build from a JSON dict (lists become tuples), refusing unknown keys: a typo must not pass silently."""
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def with_overrides(self, overrides: dict[str, str]) -> Self:
        """A copy with fields set from text (``{"conv_channels": "32,64", "hidden_dropout": "0.3"}``), each
        parsed as the type of the field's current value; tuples are comma-separated. Unknown fields and values
        that do not parse raise ValueError, as do values the config's own checks refuse."""
        current = self.to_dict()
        fixed = set(overrides) & self.fixed_fields
        if fixed:
            raise ValueError(f"{sorted(fixed)} follow the dataset and --architecture; they cannot be overridden")
        unknown = set(overrides) - set(current)
        if unknown:
            raise ValueError(f"unknown {type(self).__name__} fields: {sorted(unknown)}; known: {sorted(current)}")
        parsed: dict[str, Any] = {}
        for name, text in overrides.items():
            value = current[name]
            try:
                if isinstance(value, tuple):
                    element = type(value[0]) if value else float
                    parsed[name] = tuple(element(part) for part in text.split(",") if part.strip())
                    if not parsed[name]:
                        raise ValueError
                else:
                    parsed[name] = type(value)(text)
            except ValueError:
                raise ValueError(f"{name}={text!r}: expected {type(value).__name__} like {value!r}") from None
        return replace(self, **parsed)  # type: ignore[type-var]


@dataclass(frozen=True)
class DiscriminatorConfig(_NetworkConfig):
    """The K+1 discriminator: K class logits; the fake class has its logit fixed at 0 (Salimans et al. 2016)."""

    # --architecture picks the discriminator (and the recipe around it); the generator's may be set apart.
    fixed_fields: ClassVar[frozenset[str]] = _NetworkConfig.fixed_fields | {"architecture"}
    num_classes: int
    channels: int = 1
    height: int = 28
    width: int = 28
    architecture: Architecture = "mlp"
    # MLP recipe: the improved-GAN MNIST net (784-1000-500-250-250-250-K) less its last two 250-unit layers,
    # chosen on validation and a fifth cheaper a step (benchmarks/results/recipe_search.md).
    hidden_sizes: tuple[int, ...] = (1000, 500, 250)
    # Conv recipe (improved-GAN CIFAR, its 96/192 channels): blocks of ``convs_per_block`` 3x3 convs.
    conv_channels: tuple[int, ...] = (96, 192)
    # 3x3 convs per block (the last one strided): 3 in the reference.
    convs_per_block: int = 3
    # Regularisers from the reference code: Gaussian noise (MLP) or dropout (conv), active in train mode only.
    input_noise_std: float = 0.3
    hidden_noise_std: float = 0.5
    input_dropout: float = 0.2
    hidden_dropout: float = 0.5
    # Pixels reach the network in [0, 1]; the network standardises them itself with these, so the
    # generator, the trainer and the server all hand it the same [0, 1] images.
    input_mean: tuple[float, ...] = (0.0,)
    input_std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError("a classifier needs at least 2 classes")
        if self.architecture not in ("mlp", "conv"):
            raise ValueError(f"unknown discriminator architecture {self.architecture!r}")
        if self.convs_per_block < 1:
            raise ValueError("a conv block needs at least one conv")
        for name in ("input_mean", "input_std"):
            if len(getattr(self, name)) not in (1, self.channels):
                raise ValueError(f"{name} needs 1 or {self.channels} values")


@dataclass(frozen=True)
class GeneratorConfig(_NetworkConfig):
    """The generator maps a latent vector to an image in [0, 1] of the discriminator's input shape."""

    channels: int = 1
    height: int = 28
    width: int = 28
    architecture: Architecture = "mlp"
    latent_size: int = 100
    latent_distribution: LatentDistribution = "uniform"
    # MLP recipe (improved-GAN MNIST): z -> 500 -> 500 -> pixels, batch norm + softplus.
    hidden_sizes: tuple[int, ...] = (500, 500)
    # Conv recipe (DCGAN-style): project to (base_channels, H/2^u, W/2^u), then ``upsamplings`` (u) 2x
    # transposed convs, each halving the channels. ``default_configs`` sets u from the image size; 2 is what
    # model cards written before the field existed were trained with.
    base_channels: int = 256
    upsamplings: int = 2

    def __post_init__(self) -> None:
        if self.architecture not in ("mlp", "conv"):
            raise ValueError(f"unknown generator architecture {self.architecture!r}")
        if self.latent_distribution not in ("uniform", "normal"):
            raise ValueError(f"unknown latent distribution {self.latent_distribution!r}")
        if self.architecture == "conv":
            if self.upsamplings < 1:
                raise ValueError("the conv generator needs at least one upsampling")
            step = 2**self.upsamplings
            if self.height % step or self.width % step:
                raise ValueError(
                    f"the conv generator with {self.upsamplings} upsamplings needs height and width divisible by {step}"
                )
            if self.base_channels >> (self.upsamplings - 1) < 1:
                raise ValueError("base_channels is too small for that many upsamplings (each halves the channels)")


# The conv networks' depth follows the image size: the discriminator halves the resolution once per block until
# the map is at most this big (8x8 for 32x32, as in the reference); the generator starts from the smallest grid
# of at least 4x4 that doubles exactly to the image size (4x4 for 32x32, as in the reference; 7x7 for 28x28).
SMALLEST_DISCRIMINATOR_MAP = 8
SMALLEST_GENERATOR_GRID = 4
MIN_CONV_IMAGE_SIZE = 16


def conv_blocks_for(size: int) -> int:
    """Strided blocks that bring ``size`` down to at most SMALLEST_DISCRIMINATOR_MAP (at least 2)."""
    blocks = 2
    while -(-size // 2**blocks) > SMALLEST_DISCRIMINATOR_MAP:
        blocks += 1
    return blocks


def upsamplings_for(height: int, width: int) -> int:
    """The most 2x upsamplings that reach (height, width) exactly from a grid of at least 4x4 (at least 1)."""
    upsamplings = 1
    while all(side % 2 ** (upsamplings + 1) == 0 and side // 2 ** (upsamplings + 1) >= SMALLEST_GENERATOR_GRID
              for side in (height, width)):  # fmt: skip
        upsamplings += 1
    return upsamplings


def conv_size_problem(height: int, width: int) -> str | None:
    """Why the conv networks cannot take this size, or None: at least 16 pixels a side, each a multiple of 4."""
    if min(height, width) < MIN_CONV_IMAGE_SIZE:
        return f"the conv networks need images of at least {MIN_CONV_IMAGE_SIZE}x{MIN_CONV_IMAGE_SIZE}"
    if height % 4 or width % 4:
        return "the conv networks need a height and width divisible by 4 (e.g. 32, 64, 96)"
    return None


def default_configs(
    num_classes: int, channels: int, height: int, width: int, architecture: Architecture | None = None
) -> tuple[DiscriminatorConfig, GeneratorConfig]:
    """The reference recipe's networks for an image size: the MLP for 28x28 gray, the conv nets otherwise, their
    depth following the size (``conv_blocks_for``, ``upsamplings_for``)."""
    if architecture is None:
        architecture = "mlp" if (channels, height, width) == (1, 28, 28) else "conv"
    if architecture == "mlp":
        disc = DiscriminatorConfig(num_classes, channels, height, width, architecture="mlp")
        gen = GeneratorConfig(channels, height, width, architecture="mlp", latent_distribution="uniform")
    else:
        disc = DiscriminatorConfig(
            num_classes,
            channels,
            height,
            width,
            architecture="conv",
            conv_channels=(96, 192) + (192,) * (conv_blocks_for(max(height, width)) - 2),
            input_mean=(0.5,) * channels,
            input_std=(0.5,) * channels,
        )
        gen = GeneratorConfig(  # the reference's CIFAR-10 generator: U(0,1)^100 projected to 512 channels at 4x4
            channels,
            height,
            width,
            architecture="conv",
            latent_distribution="uniform",
            base_channels=512,
            upsamplings=upsamplings_for(height, width),
        )
    return disc, gen
