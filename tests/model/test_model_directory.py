"""The model directory: round trip, hash refusal, atomic replacement, and the K+1 math."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_model_dir

from model import (
    Discriminator,
    DiscriminatorConfig,
    Generator,
    GeneratorConfig,
    ModelDirectoryError,
    class_probabilities,
    default_configs,
    load_model_dir,
    read_card,
    realness_from_logits,
)
from model.directory import DISCRIMINATOR_FILE, GENERATOR_FILE


def test_round_trip_reproduces_outputs_and_card(tiny_model_dir: Path) -> None:
    loaded = load_model_dir(tiny_model_dir)
    again = load_model_dir(tiny_model_dir)
    images = torch.rand(5, 1, 28, 28)
    latent = loaded.generator.sample_latent(3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded.discriminator(images), again.discriminator(images))
    assert torch.equal(loaded.generator(latent), again.generator(latent))
    card = json.loads((tiny_model_dir / "model.json").read_text())
    assert card["class_names"][0] == "T-shirt/top"
    assert card["image_shape"] == [1, 28, 28]
    assert card["background"] == "dark"
    assert set(card["files"]) == {DISCRIMINATOR_FILE, GENERATOR_FILE}
    assert card["model_id"] == card["files"][DISCRIMINATOR_FILE][:12]


def test_weights_are_safetensors_not_pickles(tiny_model_dir: Path) -> None:
    header_length = int.from_bytes((tiny_model_dir / DISCRIMINATOR_FILE).read_bytes()[:8], "little")
    header = json.loads((tiny_model_dir / DISCRIMINATOR_FILE).read_bytes()[8 : 8 + header_length])
    assert any(key.startswith("body.") for key in header)


def test_tampered_weights_are_refused(tiny_model_dir: Path) -> None:
    path = tiny_model_dir / DISCRIMINATOR_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelDirectoryError, match="SHA-256"):
        load_model_dir(tiny_model_dir)


def test_missing_or_foreign_directory_is_a_clear_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(ModelDirectoryError, match="model.json"):
        load_model_dir(tmp_path / "nowhere")
    card = json.loads((tiny_model_dir / "model.json").read_text())
    card["format_version"] = 99
    (tiny_model_dir / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelDirectoryError, match="version"):
        read_card(tiny_model_dir)


def test_saving_over_an_existing_directory_replaces_it_whole(tmp_path: Path) -> None:
    first = build_tiny_model_dir(tmp_path / "model", seed=1)
    first_id = read_card(first).model_id
    build_tiny_model_dir(tmp_path / "model", seed=2)
    assert read_card(first).model_id != first_id
    load_model_dir(first)  # hashes match the new weights
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "model"]
    assert leftovers == []  # no staging or retired directories left behind


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_networks_for_each_recipe_and_size(architecture: str, shape: tuple[int, int, int]) -> None:
    disc_config, gen_config = default_configs(10, *shape, architecture=architecture)  # type: ignore[arg-type]
    discriminator, generator = Discriminator(disc_config), Generator(gen_config)
    fake = generator(generator.sample_latent(4))
    assert fake.shape == (4, *shape)
    assert float(fake.detach().min()) >= 0.0 and float(fake.detach().max()) <= 1.0
    assert discriminator(fake).shape == (4, 10)
    assert discriminator.forward_features(fake).shape == (4, discriminator.feature_size)


@pytest.mark.parametrize(
    ("size", "blocks", "upsamplings", "generator_grid"),
    [(28, 2, 2, 7), (32, 2, 3, 4), (64, 3, 4, 4), (96, 4, 4, 6)],
)
def test_conv_depth_follows_the_image_size(size: int, blocks: int, upsamplings: int, generator_grid: int) -> None:
    disc_config, gen_config = default_configs(10, 3, size, size, architecture="conv")
    assert len(disc_config.conv_channels) == blocks and gen_config.upsamplings == upsamplings
    generator, discriminator = Generator(gen_config), Discriminator(disc_config)
    assert isinstance(generator.net[3], torch.nn.Unflatten)
    assert generator.net[3].unflattened_size[1:] == (generator_grid, generator_grid)
    fake = generator(generator.sample_latent(2))
    assert fake.shape == (2, 3, size, size)
    # The discriminator brings the map down to at most 8x8 before its head, whatever the size.
    strided = [m for m in discriminator.body if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == blocks and size / 2**blocks <= 8
    assert discriminator(fake).shape == (2, 10)


def test_a_generator_card_written_before_upsamplings_existed_loads_as_it_was_trained() -> None:
    # Cards written before the field existed: two upsamplings from H/4, whatever the size.
    old = GeneratorConfig.from_dict({"channels": 3, "height": 32, "width": 32, "architecture": "conv"})
    assert old.upsamplings == 2
    assert Generator(old)(torch.randn(2, 100)).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="divisible by 8"):
        GeneratorConfig(channels=3, height=28, width=28, architecture="conv", upsamplings=3)


@pytest.mark.parametrize("convs_per_block", [1, 2, 3])
def test_conv_blocks_have_the_configured_depth_and_halve_the_resolution(convs_per_block: int) -> None:
    config = DiscriminatorConfig(
        num_classes=10, architecture="conv", conv_channels=(8, 16), convs_per_block=convs_per_block
    )
    discriminator = Discriminator(config)
    convs = [m for m in discriminator.body if isinstance(m, torch.nn.Conv2d)]
    # Two blocks of ``convs_per_block`` convs, then the 3x3 + two 1x1 head convs.
    assert len(convs) == 2 * convs_per_block + 3
    assert [c.stride for c in convs[: 2 * convs_per_block]].count((2, 2)) == 2
    assert discriminator(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="at least one conv"):
        DiscriminatorConfig(num_classes=10, architecture="conv", convs_per_block=0)


def test_overrides_parse_by_field_type_and_keep_the_data_fields() -> None:
    disc, gen = default_configs(10, 1, 28, 28, architecture="conv")
    narrowed = disc.with_overrides({"conv_channels": "32, 64", "hidden_dropout": "0.3", "convs_per_block": "1"})
    assert (narrowed.conv_channels, narrowed.hidden_dropout, narrowed.convs_per_block) == ((32, 64), 0.3, 1)
    assert gen.with_overrides({"architecture": "mlp"}).architecture == "mlp"  # a generator of another kind
    for field, value in (("architecture", "mlp"), ("num_classes", "3"), ("height", "32")):
        with pytest.raises(ValueError, match="cannot be overridden"):
            disc.with_overrides({field: value})
    with pytest.raises(ValueError, match="channels"):
        gen.with_overrides({"channels": "3"})


def test_configs_round_trip_and_refuse_unknown_fields() -> None:
    config = DiscriminatorConfig(num_classes=3, hidden_sizes=(8, 4))
    assert DiscriminatorConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown"):
        GeneratorConfig.from_dict({"latent_sizee": 3})


def test_realness_is_z_over_z_plus_one() -> None:
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), math.log(1.0)], [-50.0, -50.0]])
    z = torch.exp(logits).sum(dim=1)
    assert torch.allclose(realness_from_logits(logits), z / (z + 1))
    assert realness_from_logits(logits)[1].item() == pytest.approx(0.8)
    assert torch.allclose(class_probabilities(logits)[1], torch.tensor([0.75, 0.25]))
    # Large logits must not overflow: a confident real image has realness 1, not nan.
    assert realness_from_logits(torch.tensor([[1000.0, 0.0]])).item() == 1.0


def test_a_model_directory_is_readable_by_other_users(tiny_model_dir: Path) -> None:
    # The trainer (root in a container) and the server (an unprivileged user) are often different users.
    assert tiny_model_dir.stat().st_mode & 0o005 == 0o005
    for path in tiny_model_dir.iterdir():
        assert path.stat().st_mode & 0o004, path.name
