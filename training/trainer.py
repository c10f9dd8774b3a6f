"""The training loop: alternates the discriminator and generator phases of the semi-supervised GAN.

Run directory layout (``TrainConfig.out``)::

    config.json            the resolved configuration of the run
    metrics.jsonl          one JSON line per epoch: losses, validation accuracy, realness, timings
    samples/epoch_NNN.png  a grid of generator samples from a fixed noise batch, per epoch
    model/                 the best-by-validation model directory (safetensors + model.json)
    state/training.pt      the resumable training state (weights, optimisers, EMA, RNG, position)
"""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from model import (
    Discriminator,
    DiscriminatorConfig,
    Generator,
    GeneratorConfig,
    ModelCard,
    default_configs,
    load_model_dir,
    normalization_record,
    read_card,
    realness_from_logits,
    save_model_dir,
    write_card,
)
from model.directory import atomic_write_bytes
from model.preprocessing import estimate_background, pixels_to_tensor
from model.sampling import images_to_uint8, png_bytes, tile_grid
from training.augment import random_translate_flip
from training.data import DataError, ImageDataset, SemiSupervisedSplit, load_dataset, split_semi_supervised
from training.evaluate import auroc, classification_report, noise_images, predict_logits
from training.initialization import initialise_weight_norm_from_data
from training.losses import (
    conditional_entropy_loss,
    consistency_loss,
    feature_matching_loss,
    supervised_loss,
    unsupervised_loss,
)
from training.runtime import (
    Distributed,
    init_distributed,
    seed_everything,
    select_device,
    shutdown_distributed,
    use_bf16_autocast,
)
from training.state import load_training_state, save_training_state

logger = logging.getLogger(__name__)

# Recipe defaults per architecture (DESIGN section 3, from the reference improved-GAN code). Chosen on the
# validation split only (Fashion-MNIST, 10 labels/class; benchmarks/results/recipe_search.md): 10% noise images
# among the fakes kept validation accuracy and lifted the realness AUROC of validation images vs noise from
# 0.01 to 1.00; shifts + flips of all batches (-3.8 points), shifts of the labelled batches only (-2 to -4),
# the conditional-entropy term (-1.8) and a mean-teacher term (collapses) all lowered it, so they are off.
# MLP epochs: 50, what a 20-minute budget holds on one CPU core with bf16 steps (about 17 s an epoch with the
# 3-hidden-layer D of model/config.py, 20 s with the reference's 5).
# MLP learning rate: 1e-3, not the reference's 3e-3 (which trains 300 epochs): over 50 epochs the best validation
# accuracy rose from 78.5 to 79.4% at 10 labels/class and stayed at 84.3% at 100 (seed 0; over the benchmark's
# seeds 0-2 it is level at 10, 77.4 vs 77.2%, and 0.3 points higher at 100); 5e-4 was level with 1e-3 after 20
# epochs. Virtual adversarial training (a KL term between D's class probabilities on unlabelled
# images and on adversarially moved copies) lowered validation accuracy at both label counts and is not kept.
RECIPES: dict[str, dict[str, Any]] = {
    "mlp": {
        "learning_rate": 1e-3,
        "epochs": 50,
        "augment_shift": 0,
        "augment_flip": False,
        "fake_noise_fraction": 0.1,
        "entropy_weight": 0.0,
        "consistency_weight": 0.0,
    },
    "conv": {
        "learning_rate": 3e-4,
        "epochs": 30,
        "augment_shift": 0,
        "augment_flip": False,
        "fake_noise_fraction": 0.0,
        "entropy_weight": 0.0,
        "consistency_weight": 0.0,
    },
}
SAMPLE_GRID_SIZE = 100
FIXED_NOISE_SEED = 1234  # its own stream so sample grids are comparable across epochs and resumes


@dataclass
class TrainConfig:
    """Everything that defines a run; written to ``config.json`` in the run directory."""

    dataset: str
    out: str
    labels_per_class: int = 10
    data_dir: str | None = None
    download: bool = False
    epochs: int | None = None  # None: the recipe's default for the architecture
    seed: int = 0
    val_size: int = 5000
    baseline: bool = False  # labelled images only: no generator, no unlabelled data
    architecture: str | None = None  # None: the best recipe for the image size
    batch_size: int = 100
    learning_rate: float | None = None
    beta1: float = 0.5
    unsup_weight: float = 1.0
    ema_decay: float = 0.999
    # Augmentation of training batches (labelled and unlabelled): None takes the recipe's default.
    augment_shift: int | None = None  # random translation by up to this many pixels
    augment_flip: bool | None = None  # random horizontal flips
    # Share of each fake batch replaced by uniform-noise images: known fakes that teach D that noise is not
    # real, so the realness score also flags far-out-of-distribution inputs. None takes the recipe's default.
    fake_noise_fraction: float | None = None
    # Weight of the conditional entropy of p(y | x_u) in D's loss (Bad GAN). None takes the recipe's default.
    entropy_weight: float | None = None
    # Weight of the mean-teacher consistency term: D's class probabilities on an unlabelled batch against those
    # of its EMA (the teacher) on a view shifted by up to ``consistency_shift`` pixels (and mirrored with
    # ``augment_flip``). It ramps up over the first ``consistency_rampup`` of training, while the teacher is
    # still poor. None takes the recipe's default.
    consistency_weight: float | None = None
    consistency_shift: int = 2
    consistency_rampup: float = 0.1
    # Network fields set over the recipe's, as text (``{"conv_channels": "32,64"}``): see ``with_overrides``.
    discriminator_options: dict[str, str] = field(default_factory=dict)
    generator_options: dict[str, str] = field(default_factory=dict)
    # Linear decay of the learning rate to 0 over this final fraction of training.
    lr_decay_fraction: float = 0.5
    device: str = "auto"
    # Mixed precision of the training steps: auto = bf16 autocast on CUDA and on CPUs with native bf16.
    precision: str = "auto"
    train_subset: int | None = None  # use only this many training images (quick runs, tests)
    image_size: int | None = None  # image-folder datasets: resize to this (default 32)
    channels: int | None = None  # image-folder datasets: 1 or 3 (default 3)
    progress: bool = True
    compile: bool = False  # torch.compile the networks (CUDA; slow to start, faster per step)
    command: list[str] = field(default_factory=list)

    def resolved(self, image_shape: tuple[int, int, int]) -> TrainConfig:
        """Fill the recipe defaults that depend on the image size."""
        architecture = self.architecture or ("mlp" if image_shape == (1, 28, 28) else "conv")
        recipe = RECIPES[architecture]
        return TrainConfig(
            **{
                **asdict(self),
                "architecture": architecture,
                "epochs": self.epochs if self.epochs is not None else recipe["epochs"],
                "learning_rate": self.learning_rate or recipe["learning_rate"],
                "augment_shift": recipe["augment_shift"] if self.augment_shift is None else self.augment_shift,
                "augment_flip": recipe["augment_flip"] if self.augment_flip is None else self.augment_flip,
                **{
                    name: recipe[name] if getattr(self, name) is None else getattr(self, name)
                    for name in ("fake_noise_fraction", "entropy_weight", "consistency_weight")
                },
            }
        )


def _code_version() -> str:
    try:
        return metadata.version("sgan-service")
    except metadata.PackageNotFoundError:
        return "unknown"


def folder_image_shape(config: TrainConfig) -> tuple[int, int, int] | None:
    if config.image_size is None and config.channels is None:
        return None
    size = config.image_size or 32
    return (config.channels or 3, size, size)


def network_configs(
    config: TrainConfig, num_classes: int, image_shape: tuple[int, int, int]
) -> tuple[DiscriminatorConfig, GeneratorConfig]:
    """The recipe's networks for the image size, with the run's network options set over them."""
    disc_config, gen_config = default_configs(num_classes, *image_shape, architecture=config.architecture)  # type: ignore[arg-type]
    try:
        return (
            disc_config.with_overrides(config.discriminator_options),
            gen_config.with_overrides(config.generator_options),
        )
    except ValueError as exc:
        raise DataError(f"network option: {exc}") from None


class Trainer:
    """Owns the networks, optimisers and data of one run; ``fit`` runs it to the end (or to a stop)."""

    def __init__(
        self,
        config: TrainConfig,
        train_set: ImageDataset,
        split: SemiSupervisedSplit,
        distributed: Distributed | None = None,
    ) -> None:
        self.config = config
        self.run_dir = Path(config.out)
        self.distributed = distributed or Distributed()
        self.device = select_device(config.device, self.distributed.local_rank)
        self.class_names = train_set.class_names
        self.source = train_set.source
        self.background = estimate_background(train_set.images[split.unlabelled[:5000]])
        self.stop_requested = False

        disc_config, gen_config = network_configs(config, train_set.num_classes, train_set.image_shape)
        on_cuda = self.device.type == "cuda"
        self.bf16 = use_bf16_autocast(self.device, config.precision)
        if on_cuda:
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
        # channels_last lets cuDNN use its NHWC tensor-core convolutions; MLPs and the CPU gain nothing from it.
        channels_last = on_cuda and disc_config.architecture == "conv"
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.discriminator = Discriminator(disc_config).to(self.device, memory_format=self.memory_format)
        self.generator = Generator(gen_config).to(self.device, memory_format=self.memory_format)
        # The whole dataset stays on the device as uint8; batches are gathered by index (no host work).
        images = torch.tensor(train_set.images, device=self.device)
        labels = torch.tensor(train_set.labels, device=self.device)
        self.labelled_images, self.labelled_targets = images[split.labelled], labels[split.labelled]
        self.unlabelled_images = images[split.unlabelled]
        self.validation_images = train_set.images[split.validation]
        self.validation_labels = train_set.labels[split.validation]

        betas = (config.beta1, 0.999)
        lr = config.learning_rate
        # The fused CUDA kernel updates all parameters in one launch; the CPU keeps the default (foreach).
        fused = True if on_cuda else None
        self.disc_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=betas, fused=fused)
        self.gen_optimizer = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=betas, fused=fused)
        self.ema_updates = 0  # EMA updates so far: the global step count, kept across resumes
        self.ema = self._new_ema()
        # Under DDP every rank takes its own share of the unlabelled set, so an epoch has fewer steps per rank.
        self.steps_per_epoch = max(1, len(self.unlabelled_images) // (config.batch_size * self.distributed.world_size))
        # What the steps call: the bare networks, or their DDP wrappers (set in fit, after initialisation).
        self.disc_step: torch.nn.Module = self.discriminator
        self.gen_step: torch.nn.Module = self.generator
        self.epoch = 0
        self.step_in_epoch = 0
        self.best_validation_accuracy = -1.0
        self.best_epoch = 0
        self.elapsed_seconds = 0.0
        self.fixed_noise = self.generator.sample_latent(
            SAMPLE_GRID_SIZE, generator=torch.Generator(self.device).manual_seed(FIXED_NOISE_SEED)
        )

    # ----------------------------------------------------------------------------------------------
    # State
    # ----------------------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.run_dir / "state" / "training.pt"

    @property
    def model_dir(self) -> Path:
        return self.run_dir / "model"

    def save_state(self) -> None:
        save_training_state(
            self.state_path,
            {
                "discriminator": self.discriminator.state_dict(),
                "generator": self.generator.state_dict(),
                "ema": self.ema.state_dict(),
                "disc_optimizer": self.disc_optimizer.state_dict(),
                "gen_optimizer": self.gen_optimizer.state_dict(),
                "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch,
                "best_validation_accuracy": self.best_validation_accuracy,
                "best_epoch": self.best_epoch,
                "elapsed_seconds": self.elapsed_seconds,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
        )

    def load_state(self) -> None:
        state = load_training_state(self.state_path, map_location=self.device)
        self.discriminator.load_state_dict(state["discriminator"])
        self.generator.load_state_dict(state["generator"])
        self.ema.load_state_dict(state["ema"])
        self.disc_optimizer.load_state_dict(state["disc_optimizer"])
        self.gen_optimizer.load_state_dict(state["gen_optimizer"])
        self.epoch = int(state["epoch"])
        self.step_in_epoch = int(state["step_in_epoch"])
        self.best_validation_accuracy = float(state["best_validation_accuracy"])
        self.best_epoch = int(state["best_epoch"])
        self.elapsed_seconds = float(state["elapsed_seconds"])
        torch.set_rng_state(state["torch_rng"].cpu())
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        self._truncate_metrics_log()
        logger.info("resumed at epoch %d, step %d", self.epoch + 1, self.step_in_epoch)

    def _truncate_metrics_log(self) -> None:
        """Drop log lines for epochs the resumed state has not finished (they will be run again)."""
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return
        kept = [line for line in path.read_text().splitlines() if json.loads(line)["epoch"] <= self.epoch]
        atomic_write_bytes(path, "".join(line + "\n" for line in kept).encode())

    # ----------------------------------------------------------------------------------------------
    # One step
    # ----------------------------------------------------------------------------------------------
    def _learning_rate(self, global_step: int) -> float:
        total = self.config.epochs * self.steps_per_epoch  # type: ignore[operator]
        decay_start = total * (1.0 - self.config.lr_decay_fraction)
        if global_step < decay_start:
            return self.config.learning_rate  # type: ignore[return-value]
        return self.config.learning_rate * max(0.0, (total - global_step) / max(1.0, total - decay_start))  # type: ignore[operator]

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        """A uint8 training batch -> the networks' float input, augmented as the recipe says."""
        if self.config.augment_shift or self.config.augment_flip:
            images = random_translate_flip(images, self.config.augment_shift or 0, bool(self.config.augment_flip))
        return pixels_to_tensor(images).contiguous(memory_format=self.memory_format)

    def _autocast(self) -> Any:
        # bf16 (weights, optimiser and losses stay fp32): twice the matmul throughput on CUDA and on CPUs with
        # native bf16, and no loss scaling needed. Evaluation always runs in fp32.
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _consistency_ramp(self, global_step: int) -> float:
        """0 -> 1 over the first ``consistency_rampup`` of training, in the exp(-5 (1 - t)^2) shape of the
        mean-teacher paper."""
        ramp_steps = self.config.consistency_rampup * self.config.epochs * self.steps_per_epoch  # type: ignore[operator]
        if global_step >= ramp_steps:
            return 1.0
        return math.exp(-5.0 * (1.0 - global_step / ramp_steps) ** 2)

    def _teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The EMA discriminator's logits (eval mode: no noise, no dropout) on a shifted view of a uint8 batch."""
        view = random_translate_flip(images, self.config.consistency_shift, bool(self.config.augment_flip))
        teacher: Discriminator = self.ema.module  # type: ignore[assignment]
        teacher.eval()
        try:
            with torch.no_grad():
                return teacher(pixels_to_tensor(view).contiguous(memory_format=self.memory_format))
        finally:
            teacher.train()

    def _train_step(
        self,
        labelled_idx: torch.Tensor,
        unlabelled_idx: torch.Tensor,
        matching_idx: torch.Tensor,
        global_step: int = 0,
    ) -> dict[str, torch.Tensor]:
        x_labelled = self._pixels(self.labelled_images[labelled_idx])  # (B, C, H, W)
        y_labelled = self.labelled_targets[labelled_idx]  # (B,)
        batch = len(labelled_idx)

        if self.config.baseline:
            # --- Labels only: the same network and budget, without the unlabelled images and the generator.
            with self._autocast():
                loss_sup = supervised_loss(self.disc_step(x_labelled), y_labelled)
            self.disc_optimizer.zero_grad(set_to_none=True)
            loss_sup.backward()
            self.disc_optimizer.step()
            return {"loss_sup": loss_sup.detach()}

        x_unlabelled = self._pixels(self.unlabelled_images[unlabelled_idx])
        # --- Discriminator: maximise log p(y | x_l) + log D(x_u) + log(1 - D(G(z))).
        with self._autocast():
            fake = self.gen_step(self.generator.sample_latent(batch)).detach()
            noise_count = int(batch * (self.config.fake_noise_fraction or 0.0))
            if noise_count:
                fake = torch.cat([torch.rand_like(fake[:noise_count]), fake[noise_count:]])
            # One forward over the three batches: the discriminator has no batch statistics, so this is
            # the same as three passes, and faster.
            logits = self.disc_step(torch.cat([x_labelled, x_unlabelled, fake]))
            logits_labelled, logits_unlabelled, logits_fake = logits.split(batch)
            loss_sup = supervised_loss(logits_labelled, y_labelled)
            loss_unsup = unsupervised_loss(logits_unlabelled, logits_fake)
            loss_disc = loss_sup + self.config.unsup_weight * loss_unsup
            extra: dict[str, torch.Tensor] = {}
            if self.config.entropy_weight:
                extra["loss_entropy"] = conditional_entropy_loss(logits_unlabelled)
                loss_disc = loss_disc + self.config.entropy_weight * extra["loss_entropy"]
            if self.config.consistency_weight:
                teacher_logits = self._teacher_logits(self.unlabelled_images[unlabelled_idx])
                extra["loss_consistency"] = consistency_loss(logits_unlabelled, teacher_logits)
                weight = self.config.consistency_weight * self._consistency_ramp(global_step)
                loss_disc = loss_disc + weight * extra["loss_consistency"]
        self.disc_optimizer.zero_grad(set_to_none=True)
        loss_disc.backward()
        self.disc_optimizer.step()

        # --- Generator: feature matching against a second, independently drawn unlabelled batch.
        x_matching = self._pixels(self.unlabelled_images[matching_idx])
        # Gradients flow through D to G, but D is not updated: the bare D is used, so DDP syncs only G's grads.
        self.discriminator.requires_grad_(False)
        try:
            with self._autocast():
                with torch.no_grad():
                    features_real = self.discriminator.forward_features(x_matching)
                features_fake = self.discriminator.forward_features(self.gen_step(self.generator.sample_latent(batch)))
                loss_gen = feature_matching_loss(features_real, features_fake)
            self.gen_optimizer.zero_grad(set_to_none=True)
            loss_gen.backward()
            self.gen_optimizer.step()
        finally:
            self.discriminator.requires_grad_(True)
        return {
            "loss_sup": loss_sup.detach(),
            "loss_unsup": loss_unsup.detach(),
            "loss_gen": loss_gen.detach(),
            **{name: value.detach() for name, value in extra.items()},
        }

    # ----------------------------------------------------------------------------------------------
    # Epochs
    # ----------------------------------------------------------------------------------------------
    def _epoch_order(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batch order of an epoch, derived from (seed, epoch) so a resumed run sees the same order.

        Under DDP all ranks draw the same permutations of the unlabelled set and each keeps its own strided
        share, so ranks see disjoint unlabelled batches; every rank has the whole labelled set, in its own order.
        """
        rank, world = self.distributed.rank, self.distributed.world_size
        rng = np.random.default_rng([self.config.seed, epoch])
        n_unlabelled, n_labelled = len(self.unlabelled_images), len(self.labelled_images)
        unlabelled = rng.permutation(n_unlabelled)[rank::world]
        matching = rng.permutation(n_unlabelled)[rank::world]
        # The labelled set is tiled to the unlabelled size, as in the reference code.
        rank_rng = np.random.default_rng([self.config.seed, epoch, rank]) if world > 1 else rng
        repeats = math.ceil(len(unlabelled) / n_labelled)
        labelled = np.concatenate([rank_rng.permutation(n_labelled) for _ in range(repeats)])[: len(unlabelled)]

        def to_device(order: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(order).to(self.device)

        return to_device(labelled), to_device(unlabelled), to_device(matching)

    def _new_ema(self) -> AveragedModel:
        return AveragedModel(self.discriminator, multi_avg_fn=self._ema_average, use_buffers=True)

    def update_ema(self, updates: int) -> None:
        """Fold the current weights into the EMA as its ``updates``-th update (1 = the first)."""
        self.ema_updates = updates
        self.ema.update_parameters(self.discriminator)

    def _ema_average(
        self, averaged: list[torch.Tensor], current: list[torch.Tensor], _num_averaged: torch.Tensor | int
    ) -> None:
        """Bias-corrected EMA, as Adam corrects its moments: after t updates it is the decay-weighted mean of
        the t weights seen, with no weight left on the random initial ones (a plain EMA started from a copy
        keeps decay^t of them: 58% after a 550-step epoch at decay 0.999). The step count is a Python int, so
        this costs no host-device sync."""
        decay, t = self.config.ema_decay, self.ema_updates
        step_decay = decay * (1 - decay ** (t - 1)) / (1 - decay**t)
        for average, value in zip(averaged, current, strict=True):
            average.lerp_(value, 1 - step_decay)

    def _initialise(self) -> None:
        """Data-dependent init of D's weight-normalised layers from one unlabelled batch (reference code)."""
        count = min(500, len(self.unlabelled_images))
        batch = pixels_to_tensor(self.unlabelled_images[:count])
        initialise_weight_norm_from_data(self.discriminator, batch, output_layer=self.discriminator.head)
        self.ema = self._new_ema()

    def _validate(self) -> dict[str, float]:
        model: Discriminator = self.ema.module  # type: ignore[assignment]
        logits = predict_logits(model, self.validation_images)
        accuracy = float((logits.argmax(dim=1).numpy() == self.validation_labels).mean())
        realness = realness_from_logits(logits).numpy()
        # How well realness separates validation images from noise images (an OOD check on training data only).
        noise = noise_images(len(self.validation_images), self.discriminator.config.image_shape, seed=self.epoch)
        noise_realness = realness_from_logits(predict_logits(model, noise)).numpy()
        return {
            "val_accuracy": accuracy,
            "val_realness": float(realness.mean()),
            "val_noise_auroc": auroc(realness, noise_realness),
        }

    def _write_samples(self, epoch: int) -> None:
        if self.config.baseline:
            return
        self.generator.eval()
        with torch.no_grad():
            images = images_to_uint8(self.generator(self.fixed_noise))
        self.generator.train()
        path = self.run_dir / "samples" / f"epoch_{epoch:03d}.png"
        atomic_write_bytes(path, png_bytes(tile_grid(images, columns=10)))

    def _card(self, validation_accuracy: float) -> ModelCard:
        disc_config = self.discriminator.config
        config = self.config
        return ModelCard(
            class_names=list(self.class_names),
            discriminator=disc_config,
            generator=self.generator.config,
            normalization=normalization_record(disc_config),
            background=self.background,
            training={
                "dataset": config.dataset,
                "source": self.source,
                "mode": "baseline" if config.baseline else "semi-supervised",
                "labels_per_class": config.labels_per_class,
                "num_labelled": len(self.labelled_images),
                "num_unlabelled": 0 if config.baseline else len(self.unlabelled_images),
                "val_size": config.val_size,
                "seed": config.seed,
                "epochs": config.epochs,
                "best_epoch": self.best_epoch,
                "learning_rate": config.learning_rate,
                "batch_size": config.batch_size,
                "augment_shift": config.augment_shift,
                "augment_flip": config.augment_flip,
                "fake_noise_fraction": config.fake_noise_fraction,
                "entropy_weight": config.entropy_weight,
                "consistency_weight": config.consistency_weight,
                "device": str(self.device),
                "precision": "bf16" if self.bf16 else "fp32",
                "duration_seconds": round(self.elapsed_seconds, 1),
                "code_version": _code_version(),
                "torch_version": torch.__version__,
                "python_version": platform.python_version(),
                "command": config.command,
            },
            metrics={"validation_accuracy": validation_accuracy},
        )

    def fit(self, resume: bool = False) -> None:
        if resume:
            self.load_state()
        else:
            self._initialise()
        self.prepare_step_modules()
        total_epochs: int = self.config.epochs  # type: ignore[assignment]
        while self.epoch < total_epochs and not self.stop_requested:
            self._run_epoch(total_epochs)

    def prepare_step_modules(self) -> None:
        """Wrap the networks the steps call (DDP, torch.compile), after initialisation or resume."""
        if self.distributed.enabled:
            # Each rank draws its own fakes and noise: a torch stream per rank and resume point.
            torch.manual_seed(hash((self.config.seed, self.distributed.rank, self.epoch, self.step_in_epoch)) % 2**62)
            # Wrapped after initialisation/resume: DDP broadcasts rank 0's weights to every rank here.
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.disc_step = DistributedDataParallel(self.discriminator, device_ids=device_ids)
            self.gen_step = DistributedDataParallel(self.generator, device_ids=device_ids)
        if self.config.compile:
            self.disc_step = torch.compile(self.disc_step)  # type: ignore[assignment]
            self.gen_step = torch.compile(self.gen_step)  # type: ignore[assignment]

    def _agree_to_stop(self, step: int) -> bool:
        """Whether to stop now. Under DDP every rank must stop at the same step (a rank that leaves early
        would hang the others in an all-reduce), so the ranks vote every few steps; a world of one answers
        at once without any sync."""
        if not self.distributed.enabled:
            return self.stop_requested
        if step % 50:
            return False
        flag = torch.tensor([1.0 if self.stop_requested else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        self.stop_requested = bool(flag.item())
        return self.stop_requested

    def _run_epoch(self, total_epochs: int) -> None:
        epoch_start = time.perf_counter()
        labelled_order, unlabelled_order, matching_order = self._epoch_order(self.epoch)
        batch = self.config.batch_size
        sums: dict[str, torch.Tensor] = {}
        steps_done = 0
        lr = self._learning_rate(self.epoch * self.steps_per_epoch + self.step_in_epoch)
        self.discriminator.train()
        self.generator.train()
        bar = tqdm(
            range(self.step_in_epoch, self.steps_per_epoch),
            desc=f"epoch {self.epoch + 1}/{total_epochs}",
            disable=not (self.config.progress and self.distributed.is_main),
            leave=False,
        )
        for step in bar:
            lr = self._learning_rate(self.epoch * self.steps_per_epoch + step)
            for optimizer in (self.disc_optimizer, self.gen_optimizer):
                for group in optimizer.param_groups:
                    group["lr"] = lr
            window = slice(step * batch, (step + 1) * batch)
            global_step = self.epoch * self.steps_per_epoch + step
            losses = self._train_step(
                labelled_order[window], unlabelled_order[window], matching_order[window], global_step
            )
            self.update_ema(global_step + 1)
            for name, value in losses.items():  # summed on the device: no host sync inside the step
                sums[name] = sums.get(name, 0) + value
            steps_done += 1
            self.step_in_epoch = step + 1
            # Reading a loss forces a host-device sync: on CUDA the bar shows losses once per epoch only.
            if self.config.progress and step % 50 == 0 and self.device.type == "cpu":
                bar.set_postfix({name: f"{(total / steps_done).item():.3f}" for name, total in sums.items()})
            if self._agree_to_stop(step + 1):
                break
        bar.close()
        self.elapsed_seconds += time.perf_counter() - epoch_start
        if self.stop_requested and self.step_in_epoch < self.steps_per_epoch:
            if self.distributed.is_main:
                self.save_state()  # mid-epoch: resume continues from this step
            logger.info("stopped at epoch %d step %d; state saved", self.epoch + 1, self.step_in_epoch)
            return

        self.epoch += 1
        self.step_in_epoch = 0
        averages = {name: total / max(1, steps_done) for name, total in sums.items()}
        if self.distributed.enabled:  # one sync per epoch: the losses averaged over ranks
            stacked = torch.stack(list(averages.values()))
            dist.all_reduce(stacked)
            averages = dict(zip(averages, stacked / self.distributed.world_size, strict=True))
        record: dict[str, Any] = {"epoch": self.epoch}
        record.update({name: value.item() for name, value in averages.items()})
        # Every rank validates (the EMA weights are identical on all ranks) so all take the same decisions;
        # only rank 0 writes files.
        record.update(self._validate())
        record["seconds"] = round(time.perf_counter() - epoch_start, 2)
        record["learning_rate"] = lr
        improved = record["val_accuracy"] > self.best_validation_accuracy
        if improved:
            self.best_validation_accuracy = record["val_accuracy"]
            self.best_epoch = self.epoch
        record["best_val_accuracy"] = self.best_validation_accuracy
        if self.distributed.is_main:
            if improved:
                save_model_dir(self.model_dir, self.ema.module, self.generator, self._card(record["val_accuracy"]))  # type: ignore[arg-type]
            self._write_samples(self.epoch)
            with open(self.run_dir / "metrics.jsonl", "a") as log:
                log.write(json.dumps(record) + "\n")
            # The state is saved after the model and the log, so a resume never skips a best model.
            self.save_state()
        logger.info(
            "epoch %d/%d: %s",
            self.epoch,
            total_epochs,
            ", ".join(f"{k}={v:.4f}" for k, v in record.items() if isinstance(v, float)),
        )


def finish(trainer: Trainer, test_set: ImageDataset | None) -> dict[str, Any]:
    """After the last epoch: read the test split once, with the best-by-validation model, and record the
    figures in its model card."""
    loaded = load_model_dir(trainer.model_dir)
    card = read_card(trainer.model_dir)
    card.training["duration_seconds"] = round(trainer.elapsed_seconds, 1)
    if test_set is not None:
        report = classification_report(loaded.discriminator, test_set)
        card.metrics.update(
            {
                "test_accuracy": report.accuracy,
                "per_class_test_accuracy": report.per_class_accuracy,
                "test_mean_realness": report.mean_realness,
                "num_test_images": len(test_set.labels),
            }
        )
    write_card(trainer.model_dir, card)
    return card.metrics


def prepare(config: TrainConfig) -> tuple[TrainConfig, ImageDataset, SemiSupervisedSplit]:
    """Read the training split, resolve the recipe for its image size, and draw the SSL split."""
    train_set = load_dataset(
        config.dataset,
        "train",
        data_dir=config.data_dir,
        download=config.download,
        image_shape=folder_image_shape(config),
    )
    if config.train_subset is not None:
        if config.train_subset > len(train_set.labels):
            raise DataError(f"--train-subset {config.train_subset} exceeds the {len(train_set.labels)} images")
        keep = np.sort(np.random.default_rng(config.seed).permutation(len(train_set.labels))[: config.train_subset])
        train_set = ImageDataset(
            train_set.images[keep], train_set.labels[keep], train_set.class_names, train_set.source
        )
    config = config.resolved(train_set.image_shape)
    if config.val_size < 1:
        raise DataError("--val-size must be at least 1: the validation split is what picks the best epoch")
    split = split_semi_supervised(
        train_set.labels, config.labels_per_class, config.val_size, config.seed, num_classes=train_set.num_classes
    )
    return config, train_set, split


def write_config(config: TrainConfig) -> None:
    path = Path(config.out) / "config.json"
    atomic_write_bytes(path, (json.dumps(asdict(config), indent=2) + "\n").encode())


def read_config(run_dir: str | Path) -> TrainConfig:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise DataError(f"{path} not found: nothing to resume in {run_dir}")
    return TrainConfig(**json.loads(path.read_text()))


def train(
    config: TrainConfig, resume: bool = False, on_trainer: Callable[[Trainer], None] | None = None
) -> dict[str, Any]:
    """Run (or resume) a whole training and return the best model's metrics."""
    distributed = init_distributed(config.device)
    try:
        return _train(config, resume, on_trainer, distributed)
    finally:
        shutdown_distributed()


def _train(
    config: TrainConfig, resume: bool, on_trainer: Callable[[Trainer], None] | None, distributed: Distributed
) -> dict[str, Any]:
    config, train_set, split = prepare(config)
    seed_everything(config.seed)  # the same on every rank: identical initial weights
    trainer = Trainer(config, train_set, split, distributed)
    if on_trainer is not None:
        on_trainer(trainer)
    if not resume and distributed.is_main:
        write_config(config)
    logger.info(
        "%s: %d labelled, %d unlabelled, %d validation images of %s; %s on %s, %d epochs",
        config.dataset,
        len(split.labelled),
        0 if config.baseline else len(split.unlabelled),
        len(split.validation),
        "x".join(map(str, train_set.image_shape)),
        "baseline" if config.baseline else "semi-supervised GAN",
        trainer.device,
        config.epochs,
    )
    del train_set  # the trainer holds what it needs; the test split is read only at the end
    trainer.fit(resume=resume)
    if trainer.stop_requested:
        return {"stopped": True, "epoch": trainer.epoch}
    if distributed.enabled:
        logger.info(
            "rank %d of %d: discriminator checksum %.12e",
            distributed.rank,
            distributed.world_size,
            sum(p.double().sum().item() for p in trainer.discriminator.state_dict().values()),
        )
        if not distributed.is_main:
            return {"rank": distributed.rank}
    try:
        test_set: ImageDataset | None = load_dataset(
            config.dataset, "test", data_dir=config.data_dir, image_shape=folder_image_shape(config)
        )
    except DataError as exc:
        logger.warning("no test split (%s): the model card reports validation accuracy only", exc)
        test_set = None
    return finish(trainer, test_set)
