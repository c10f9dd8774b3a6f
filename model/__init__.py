"""Networks, the K+1 math, the image pipeline and the model directory format, shared by ``training`` and ``app``.

This package imports neither of them: the arrows go ``app -> model <- training``.
"""

from model.config import DiscriminatorConfig, GeneratorConfig, default_configs
from model.directory import (
    BUNDLED_MODEL_DIR,
    LoadedModel,
    ModelCard,
    ModelDirectoryError,
    load_model_dir,
    normalization_record,
    read_card,
    save_model_dir,
    write_card,
)
from model.kplus1 import class_probabilities, realness_from_logits
from model.networks import Discriminator, Generator

__all__ = [
    "BUNDLED_MODEL_DIR",
    "Discriminator",
    "DiscriminatorConfig",
    "Generator",
    "GeneratorConfig",
    "LoadedModel",
    "ModelCard",
    "ModelDirectoryError",
    "class_probabilities",
    "default_configs",
    "load_model_dir",
    "normalization_record",
    "read_card",
    "realness_from_logits",
    "save_model_dir",
    "write_card",
]
