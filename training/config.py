"""The training configuration, declared once.

``TrainConfig``'s fields carry their command-line help in their metadata: ``sgan-train``'s parser is generated
from them (``add_config_arguments``), ``config.json`` is their JSON, ``--resume`` reads that back, and the
model card records them. A new option is one new field.
"""

from __future__ import annotations

import argparse
import json
import typing
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, replace
from typing import Any

from training.augment import AUGMENTATIONS
from training.readers import DataError

# Recipe defaults per architecture (docs/design.md, Algorithm), chosen on validation only; the measurements
# behind each number are in benchmarks/results/recipe_search.md. Budgets are optimisation steps: the MLP's
# 27,500 are the 50 passes of 550 steps over Fashion-MNIST's pool that a 15-20 minute budget holds on one CPU
# core; the reference conv net's 15,000 are 30 passes over CIFAR-10's 50,000 images (a GPU's budget); conv-cpu's
# 6,800 (about 0.21 s each) fill some 25 minutes of two CPU cores on 32x32 colour, the rest of a half hour going to
# decoding and evaluation. The learning rate decays over the last half (the reference's schedule), conv-cpu's over
# the last fifth: its short run gains more from the held rate than from a long settling (two seeds on validation).
RECIPES: dict[str, dict[str, Any]] = {
    "mlp": {
        "learning_rate": 1e-3,
        "steps": 27_500,
        "fake_noise_fraction": 0.1,
        "augment": "none",
        "feature_matching": "l2",
        "lr_decay_fraction": 0.5,
    },
    "conv": {
        "learning_rate": 3e-4,
        "steps": 15_000,
        "fake_noise_fraction": 0.0,
        "augment": "none",
        "feature_matching": "l1",
        "lr_decay_fraction": 0.5,
    },
    "conv-cpu": {
        "learning_rate": 1e-3,
        "steps": 6_800,
        "fake_noise_fraction": 0.1,
        "augment": "flip",
        "feature_matching": "l1",
        "lr_decay_fraction": 0.2,
    },
}
ARCHITECTURES = tuple(RECIPES)


def default_architecture(image_shape: tuple[int, int, int], on_cuda: bool) -> str:
    """The MLP for 28x28 grey (it beats every conv net a CPU can train there); else the reference conv net on a
    GPU and the CPU-sized one on a CPU."""
    if image_shape == (1, 28, 28):
        return "mlp"
    return "conv" if on_cuda else "conv-cpu"


# Named recipes (--recipe NAME): option values set as the parser's defaults, so flags given beside them win.
# improved-gan-mnist is the reference code's MNIST feature-matching setup (Salimans et al. 2016): the 5-hidden-
# layer D, a constant lr of 3e-3 for 300 epochs of 600 steps (its MNIST script, unlike its CIFAR one, never
# decays it), test weights an average of D at rate 1e-4, no noise images among the fakes. docs/design.md
# (Algorithm) lists where the default recipe departs from it and why.
PRESETS: dict[str, dict[str, Any]] = {
    "improved-gan-mnist": {
        "learning_rate": 3e-3,
        "steps": 180_000,
        "lr_decay_fraction": 0.0,
        "ema_decay": 0.9999,
        "fake_noise_fraction": 0.0,
        "discriminator_options": [("hidden_sizes", "1000,500,250,250,250")],
    },
}
GROUPS = ("data", "run", "recipe", "networks")


def option(
    help: str,
    group: str,
    *,
    flag: str | None = None,
    choices: tuple[str, ...] | None = None,
    required: bool = False,
    on_resume: bool = False,
    in_card: bool = True,
) -> dict[str, Any]:
    """Field metadata for a command-line option. ``flag`` overrides the ``--field-name`` spelling;
    ``on_resume`` options may be given again with ``--resume`` (all others come from config.json);
    ``in_card`` options are recorded in the model card's training facts."""
    return {
        "help": help,
        "group": group,
        "flag": flag,
        "choices": choices,
        "required": required,
        "on_resume": on_resume,
        "in_card": in_card,
    }


@dataclass
class TrainConfig:
    """Everything that defines a run; written to ``config.json`` in the run directory. ``None`` in a recipe
    field means the recipe's default for the image size (``resolved``)."""

    # --- data
    dataset: str | None = field(
        default=None,
        metadata=option("mnist, fashion-mnist, kmnist, cifar10, or a path to IDX/.npz/CIFAR/image folder", "data"),
    )
    data_dir: str | None = field(
        default=None,
        metadata=option("directory holding the dataset's files (else SGAN_DATA_DIR, ./data)", "data", in_card=False),
    )
    download: bool = field(
        default=False, metadata=option("fetch a named dataset with torchvision", "data", in_card=False)
    )
    labels: str | None = field(
        default=None,
        metadata=option(
            "a CSV of path,label rows (paths relative to --dataset's folder): the listed images are labelled, "
            "every other image in the folder is unlabelled",
            "data",
        ),
    )
    labels_per_class: int | None = field(
        default=None,
        metadata=option(
            "keep only this many labels per class, drawn with --seed (simulates few labels on a fully labelled "
            "benchmark set); default: every label the data has",
            "data",
        ),
    )
    val_labels_per_class: int = field(
        default=0,
        metadata=option(
            "hold this many of your labels per class out of training to choose the best round (default 0: "
            "no labels held out, the final model is kept)",
            "data",
        ),
    )
    val_size: int = field(
        default=0,
        metadata=option(
            "research only, on fully labelled benchmark data: a labelled validation split of this many training "
            "images chooses the best round (its figures are not what a user with few labels gets)",
            "data",
        ),
    )
    train_subset: int | None = field(
        default=None, metadata=option("use only this many training images (quick runs)", "data")
    )
    image_size: int | None = field(
        default=None, metadata=option("image folders: resize to this square size (default 32)", "data")
    )
    channels: int | None = field(
        default=None, metadata=option("image folders: 1 (gray) or 3 (RGB)", "data", choices=("1", "3"))
    )
    # --- run
    out: str = field(
        default="",
        metadata=option("run directory: model/, state/, metrics.jsonl, samples/", "run", required=True, in_card=False),
    )
    steps: int | None = field(
        default=None,
        metadata=option(
            "the training budget in optimisation steps (default: the recipe's, 27,500 for 28x28 grey)",
            "run",
            on_resume=True,
        ),
    )
    epochs: int | None = field(
        default=None,
        metadata=option("the budget in passes over the unlabelled pool, instead of --steps", "run", on_resume=True),
    )
    round_steps: int | None = field(
        default=None,
        metadata=option(
            "steps between log lines, checks and sample grids (default: one pass over the pool, at least 500)",
            "run",
        ),
    )
    seed: int = field(default=0, metadata=option("seed of the split, the weights and the batch order", "run"))
    device: str = field(default="auto", metadata=option("auto (CUDA if present, else CPU), cpu, cuda, cuda:1", "run"))
    precision: str = field(
        default="auto",
        metadata=option(
            "training-step precision: auto = bf16 autocast on CUDA and on CPUs with native bf16, else fp32",
            "run",
            choices=("auto", "bf16", "fp32"),
        ),
    )
    progress: bool = field(
        default=True,
        metadata=option("no progress bar (logs only)", "run", flag="--no-progress", on_resume=True, in_card=False),
    )
    # Off by default: whether a run writes event files should not depend on what is installed (tensorboard_log.py).
    tensorboard: bool = field(
        default=False,
        metadata=option(
            "also write TensorBoard event files to RUN_DIR/tensorboard: the scalars of metrics.jsonl and the sample "
            "grid per round (pip install 'sgan-service[tensorboard]')",
            "run",
            on_resume=True,
            in_card=False,
        ),
    )
    compile: bool = field(
        default=False, metadata=option("torch.compile the networks (worth it on a GPU)", "run", in_card=False)
    )
    # --- recipe
    recipe: str | None = field(
        default=None,
        metadata=option(
            "a named recipe whose options are the defaults (flags given beside it win): "
            "improved-gan-mnist, the reference code's MNIST setup",
            "recipe",
            choices=tuple(PRESETS),
        ),
    )
    baseline: bool = field(
        default=False, metadata=option("labelled images only: no generator, no unlabelled data", "recipe")
    )
    architecture: str | None = field(
        default=None,
        metadata=option(
            "mlp; conv (the reference conv net, for a GPU); conv-cpu (a conv net sized for a CPU). Default: mlp "
            "for 28x28 grey, else conv on CUDA and conv-cpu on the CPU",
            "recipe",
            choices=ARCHITECTURES,
        ),
    )
    batch_size: int = field(default=100, metadata=option("images per batch, of each kind", "recipe"))
    learning_rate: float | None = field(
        default=None, metadata=option("default: the recipe's (1e-3 mlp, 3e-4 conv)", "recipe")
    )
    beta1: float = field(default=0.5, metadata=option("Adam's beta1 (the reference's 0.5)", "recipe"))
    lr_decay_fraction: float | None = field(
        default=None,
        metadata=option(
            "the learning rate decays linearly to 0 over this final share of training. Default: the recipe's "
            "(0.5; 0.2 for conv-cpu)",
            "recipe",
        ),
    )
    unsup_weight: float = field(default=1.0, metadata=option("weight of the unsupervised loss", "recipe"))
    # Known fakes that teach D that noise is not real, so the realness score also flags far-out-of-distribution
    # inputs (docs/design.md, Algorithm).
    fake_noise_fraction: float | None = field(
        default=None, metadata=option("share of each fake batch replaced by noise images (known fakes)", "recipe")
    )
    augment: str | None = field(
        default=None,
        metadata=option(
            "label-preserving changes to real images before D sees them: none, or flip (random left-right "
            "mirroring; photos tolerate it, digits and clothes measured worse). Default: the recipe's",
            "recipe",
            choices=AUGMENTATIONS,
        ),
    )
    feature_matching: str | None = field(
        default=None,
        metadata=option(
            "the generator's distance between the batch means of D's features: l2 (squared, the reference's "
            "MNIST code) or l1 (mean absolute, its CIFAR-10 code). Default: the recipe's",
            "recipe",
            choices=("l2", "l1"),
        ),
    )
    ema_decay: float = field(default=0.999, metadata=option("EMA of D's weights used for evaluation", "recipe"))
    # --- networks: fields set over the recipe's, as text ({"conv_channels": "32,64"}); see ``with_overrides``.
    discriminator_options: dict[str, str] = field(
        default_factory=dict,
        metadata=option("set a field of the discriminator's config (repeatable)", "networks", flag="--discriminator"),
    )
    generator_options: dict[str, str] = field(
        default_factory=dict,
        metadata=option("set a field of the generator's config (repeatable)", "networks", flag="--generator"),
    )
    # The command line that started the run (not an option).
    command: list[str] = field(default_factory=list)

    def resolved(self, image_shape: tuple[int, int, int], on_cuda: bool) -> TrainConfig:
        """Fill the recipe defaults that depend on the image size and the device."""
        architecture = self.architecture or default_architecture(image_shape, on_cuda)
        recipe = RECIPES[architecture]
        filled = {name: value for name, value in recipe.items() if getattr(self, name) is None}
        if self.epochs is not None:  # the budget was given in passes
            filled.pop("steps", None)
        if self.steps is not None and self.epochs is not None:
            raise DataError("give the budget as --steps or as --epochs, not both")
        return replace(self, architecture=architecture, **filled)

    def recipe_value(self, name: str) -> Any:
        """A recipe field of a resolved config (never None there)."""
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"{name} is unset: call resolved() first")
        return value

    def card_facts(self) -> dict[str, Any]:
        """The options the model card records (all but where the run lives and how it shows progress)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("in_card", True)}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str) -> TrainConfig:
        data = json.loads(text)
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise DataError(f"{source}: options this version does not know: {', '.join(sorted(unknown))}")
        return cls(**data)


# ----------------------------------------------------------------------------------------------------------
# The command line, generated from the fields
# ----------------------------------------------------------------------------------------------------------


def _cli_fields() -> list[Field[Any]]:
    return [f for f in fields(TrainConfig) if "help" in f.metadata]


def _flag(config_field: Field[Any]) -> str:
    return config_field.metadata["flag"] or "--" + config_field.name.replace("_", "-")


def _network_option(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    return name.strip(), value.strip()


def _argument_kwargs(config_field: Field[Any], field_type: Any) -> dict[str, Any]:
    """argparse keywords for one field, from its type: bools are switches, dicts repeatable FIELD=VALUE."""
    meta = config_field.metadata
    kwargs: dict[str, Any] = {"dest": config_field.name, "help": meta["help"]}
    if field_type is bool:
        return {**kwargs, "action": "store_false" if config_field.default is True else "store_true"}
    if typing.get_origin(field_type) is dict:
        return {**kwargs, "action": "append", "type": _network_option, "default": [], "metavar": "FIELD=VALUE"}
    scalar = next(arg for arg in typing.get_args(field_type) or (field_type,) if arg is not type(None))
    kwargs["type"] = scalar
    kwargs["default"] = None if config_field.default is MISSING else config_field.default
    if meta["choices"]:
        kwargs["choices"] = [scalar(choice) for choice in meta["choices"]]
    if meta["required"]:
        kwargs["required"] = True
    return kwargs


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One argparse group per ``group``, one option per field."""
    hints = typing.get_type_hints(TrainConfig)
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for config_field in _cli_fields():
        kwargs = _argument_kwargs(config_field, hints[config_field.name])
        groups[config_field.metadata["group"]].add_argument(_flag(config_field), **kwargs)


def apply_preset(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Make a ``--recipe NAME`` in ``argv`` set the parser's defaults to that recipe's option values."""
    probe = argparse.ArgumentParser(add_help=False)
    probe.add_argument("--recipe", choices=tuple(PRESETS))
    name = probe.parse_known_args(argv)[0].recipe
    if name:
        parser.set_defaults(
            **{key: list(value) if isinstance(value, list) else value for key, value in PRESETS[name].items()}
        )


def config_from_args(args: argparse.Namespace, command: list[str]) -> TrainConfig:
    values = {f.name: getattr(args, f.name) for f in _cli_fields()}
    for name in ("discriminator_options", "generator_options"):
        values[name] = dict(values[name])
    return TrainConfig(**values, command=command)


def resume_config(saved: TrainConfig, args: argparse.Namespace) -> TrainConfig:
    """The saved run's config with the options that may change on resume (``on_resume``) set from ``args``."""
    changes = {
        f.name: getattr(args, f.name)
        for f in _cli_fields()
        if f.metadata["on_resume"] and getattr(args, f.name) is not None
    }
    if "steps" in changes or "epochs" in changes:  # a new budget replaces the old one, in either unit
        changes = {"steps": None, "epochs": None, **changes}
    return replace(saved, **changes)
