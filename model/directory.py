"""The model directory: what training writes and the server reads (docs/design.md, Model directory).

```
<model-dir>/
  discriminator.safetensors   # weights only, never a pickle
  generator.safetensors
  model.json                  # the model card: configs, classes, normalisation, metrics, SHA-256 of weights
```

Writing is atomic: the directory is staged beside its destination and swapped in with renames, so a reader
never sees a half-written model. Loading checks each weight file's SHA-256 against the card and refuses a
mismatch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from model.config import DiscriminatorConfig, GeneratorConfig
from model.networks import Discriminator, Generator

FORMAT_VERSION = 1
CARD_FILE = "model.json"
DISCRIMINATOR_FILE = "discriminator.safetensors"
GENERATOR_FILE = "generator.safetensors"
BUNDLED_MODEL_DIR = Path(__file__).resolve().parent / "bundled" / "fashion-mnist"


class ModelDirectoryError(RuntimeError):
    """A model directory that is missing, incomplete, corrupt or of an unknown format."""


@dataclass
class ModelCard:
    """Everything needed to rebuild and correctly feed the networks, plus how they were made and how good
    they are."""

    class_names: list[str]
    discriminator: DiscriminatorConfig
    generator: GeneratorConfig
    # Exactly what training did to pixels: uint8 / 255 -> [0, 1], then (x - mean) / std inside the network.
    normalization: dict[str, Any]
    background: str  # "dark" or "light": the polarity of the training images
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # weight file name -> SHA-256
    format_version: int = FORMAT_VERSION

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.discriminator.image_shape

    @property
    def latent_size(self) -> int:
        return self.generator.latent_size

    @property
    def model_id(self) -> str:
        """Short, content-derived id: changes whenever the discriminator's weights change."""
        return self.files.get(DISCRIMINATOR_FILE, "unsaved")[:12]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["image_shape"] = list(self.image_shape)
        data["latent_size"] = self.latent_size
        data["model_id"] = self.model_id
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ModelDirectoryError(f"unsupported model format version {version!r} (expected {FORMAT_VERSION})")
        try:
            return cls(
                class_names=list(data["class_names"]),
                discriminator=DiscriminatorConfig.from_dict(data["discriminator"]),
                generator=GeneratorConfig.from_dict(data["generator"]),
                normalization=dict(data["normalization"]),
                background=str(data["background"]),
                training=dict(data.get("training", {})),
                metrics=dict(data.get("metrics", {})),
                files=dict(data["files"]),
                format_version=version,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelDirectoryError(f"malformed model card: {exc}") from exc


def normalization_record(config: DiscriminatorConfig) -> dict[str, Any]:
    """The card's description of the input pipeline, derived from the config that implements it."""
    return {
        "pixel_scale": "uint8 / 255 -> [0, 1]",
        "mean": list(config.input_mean),
        "std": list(config.input_std),
        "color_mode": "L" if config.channels == 1 else "RGB",
        "resize": "PIL LANCZOS to (height, width)",
    }


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _contiguous_state(module: torch.nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors (what safetensors needs); floating tensors cast to ``dtype`` when given."""
    state = {}
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        state[name] = tensor.contiguous()
    return state


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old content or the new, never a part: temp file, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # mkstemp creates the file 0600; a model or log is read by others (a server running as another user).
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def save_model_dir(
    path: str | Path,
    discriminator: Discriminator,
    generator: Generator,
    card: ModelCard,
    weights_dtype: torch.dtype | None = None,
) -> ModelCard:
    """Write the model directory atomically and return the card with the weight hashes filled in.

    ``weights_dtype=torch.float16`` halves the files (the bundled model ships so); loading casts the weights
    back into the float32 networks."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.staging-", dir=path.parent))
    staging.chmod(0o755)  # mkdtemp makes it 0700: the server may run as another user than the trainer
    try:
        save_file(_contiguous_state(discriminator, weights_dtype), str(staging / DISCRIMINATOR_FILE))
        save_file(_contiguous_state(generator, weights_dtype), str(staging / GENERATOR_FILE))
        for name in (DISCRIMINATOR_FILE, GENERATOR_FILE):
            (staging / name).chmod(0o644)  # safetensors writes 0600; the server may be another user
        card.files = {name: sha256_file(staging / name) for name in (DISCRIMINATOR_FILE, GENERATOR_FILE)}
        write_card(staging, card)
        # rename(2) cannot replace a non-empty directory: move the old one aside, swap, then delete it.
        retired = None
        if path.exists():
            retired = path.with_name(f".{path.name}.retired-{os.getpid()}")
            shutil.rmtree(retired, ignore_errors=True)
            os.replace(path, retired)
        os.replace(staging, path)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return card


def write_card(path: str | Path, card: ModelCard) -> None:
    """Rewrite only the card of an existing model directory (e.g. to add test metrics after training).
    The weight hashes in ``card.files`` must still describe the files on disk."""
    atomic_write_bytes(Path(path) / CARD_FILE, (json.dumps(card.to_dict(), indent=2) + "\n").encode())


def read_card(path: str | Path) -> ModelCard:
    card_path = Path(path) / CARD_FILE
    if not card_path.is_file():
        raise ModelDirectoryError(f"{card_path} not found: is {path} a model directory written by sgan-train?")
    try:
        data = json.loads(card_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelDirectoryError(f"cannot read {card_path}: {exc}") from exc
    return ModelCard.from_dict(data)


@dataclass
class LoadedModel:
    card: ModelCard
    discriminator: Discriminator
    generator: Generator


def _load_weights(module: torch.nn.Module, path: Path, expected_sha256: str | None) -> None:
    # Read once, then hash and parse the same bytes: a file replaced between a hash and a second read (a live
    # server reloading while a new model is published) could otherwise load unchecked weights.
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelDirectoryError(f"{path} not found") from None
    except OSError as exc:
        raise ModelDirectoryError(f"cannot read {path}: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if expected_sha256 != actual:
        raise ModelDirectoryError(
            f"{path.name}: SHA-256 {actual} does not match the model card ({expected_sha256}); "
            "the file is corrupt or was replaced: refusing to load it"
        )
    try:
        state = load_safetensors(data)  # safetensors: plain tensors, no code runs
        module.load_state_dict(state, strict=True)
    except Exception as exc:  # a safetensors header error or a shape mismatch: both mean a broken directory
        raise ModelDirectoryError(f"cannot load {path}: {exc}") from exc


def load_model_dir(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild both networks from a model directory, in eval mode, after checking the weight hashes."""
    path = Path(path)
    card = read_card(path)
    discriminator = Discriminator(card.discriminator)
    generator = Generator(card.generator)
    _load_weights(discriminator, path / DISCRIMINATOR_FILE, card.files.get(DISCRIMINATOR_FILE))
    _load_weights(generator, path / GENERATOR_FILE, card.files.get(GENERATOR_FILE))
    return LoadedModel(card, discriminator.to(device).eval(), generator.to(device).eval())
