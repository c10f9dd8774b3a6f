"""The training loop: builds the networks and optimisers of one run, sequences the objective's steps over
epochs (single device, AMP, DDP), validates, keeps the chosen model, and stops cleanly on request.

What a step optimises is ``training.objective``; where files go is ``training.rundir``.
"""

from __future__ import annotations

import logging
import platform
import time
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from model import (
    Discriminator,
    DiscriminatorConfig,
    Generator,
    GeneratorConfig,
    ModelCard,
    default_configs,
    normalization_record,
)
from model.imaging import encode_png, estimate_background, pixels_to_tensor, tensor_to_pixels, tile_grid
from training.batches import epoch_order
from training.config import TrainConfig
from training.ema import WeightEMA
from training.initialization import initialise_weight_norm_from_data
from training.objective import Batch, Objective, StepNetworks, build_objective
from training.readers import DataError, ImageDataset
from training.rundir import RunDirectory
from training.runtime import Distributed, agree_to_stop, mean_over_ranks, select_device, use_bf16_autocast
from training.schedule import LinearDecaySchedule
from training.split import SemiSupervisedSplit
from training.validation import HeldOutCheck

logger = logging.getLogger(__name__)

SAMPLE_GRID_SIZE = 100
FIXED_NOISE_SEED = 1234  # its own stream so sample grids are comparable across epochs and resumes


def code_version() -> str:
    try:
        return metadata.version("sgan-service")
    except metadata.PackageNotFoundError:
        return "unknown"


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


@dataclass
class RunProgress:
    """Where a run stands; saved with the state so a resumed run continues from here."""

    epoch: int = 0  # epochs finished
    step_in_epoch: int = 0  # steps of the current epoch finished (non-zero only after a mid-epoch stop)
    best_validation_accuracy: float = -1.0
    best_epoch: int = 0
    elapsed_seconds: float = 0.0  # training time, across resumes


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
        self.run_dir = RunDirectory(config.out)
        self.distributed = distributed or Distributed()
        self.device = select_device(config.device, self.distributed.local_rank)
        self.class_names = train_set.class_names
        self.source = train_set.source
        self.background = estimate_background(train_set.images[split.unlabelled[:5000]])
        self.stop_requested = False
        self._build_networks(network_configs(config, train_set.num_classes, train_set.image_shape))
        self._place_data(train_set, split)
        # Under DDP every rank takes its own share of the unlabelled set, so an epoch has fewer steps per rank.
        self.steps_per_epoch = max(1, len(self.unlabelled_images) // (config.batch_size * self.distributed.world_size))
        self.schedule = LinearDecaySchedule(
            config.recipe_value("learning_rate"),
            config.recipe_value("epochs") * self.steps_per_epoch,
            config.lr_decay_fraction,
        )
        self.objective: Objective | None = None  # built in fit, around the networks the steps call
        self.progress = RunProgress()
        self.fixed_noise = self.generator.sample_latent(
            SAMPLE_GRID_SIZE, generator=torch.Generator(self.device).manual_seed(FIXED_NOISE_SEED)
        )

    def _build_networks(self, configs: tuple[DiscriminatorConfig, GeneratorConfig]) -> None:
        disc_config, gen_config = configs
        on_cuda = self.device.type == "cuda"
        self.bf16 = use_bf16_autocast(self.device, self.config.precision)
        if on_cuda:
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
        # channels_last lets cuDNN use its NHWC tensor-core convolutions; MLPs and the CPU gain nothing from it.
        channels_last = on_cuda and disc_config.architecture == "conv"
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.discriminator = Discriminator(disc_config).to(self.device, memory_format=self.memory_format)  # type: ignore[call-overload]
        self.generator = Generator(gen_config).to(self.device, memory_format=self.memory_format)  # type: ignore[call-overload]
        betas = (self.config.beta1, 0.999)
        lr = self.config.recipe_value("learning_rate")
        # The fused CUDA kernel updates all parameters in one launch; the CPU keeps the default (foreach).
        fused = True if on_cuda else None
        self.disc_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=betas, fused=fused)
        self.gen_optimizer = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=betas, fused=fused)
        self.ema = WeightEMA(self.discriminator, self.config.ema_decay)

    def _place_data(self, train_set: ImageDataset, split: SemiSupervisedSplit) -> None:
        """The whole training set stays on the device as uint8; batches are gathered by index (no host work)."""
        images = torch.tensor(train_set.images, device=self.device)
        labels = torch.tensor(train_set.labels, device=self.device)
        self.labelled_images, self.labelled_targets = images[split.labelled], labels[split.labelled]
        self.unlabelled_images = images[split.unlabelled]
        self.held_out_check = HeldOutCheck(train_set.images[split.validation], train_set.labels[split.validation])

    # ----------------------------------------------------------------------------------------------
    # State
    # ----------------------------------------------------------------------------------------------
    def save_state(self) -> None:
        self.run_dir.save_state(
            {
                "discriminator": self.discriminator.state_dict(),
                "generator": self.generator.state_dict(),
                "ema": self.ema.state_dict(),
                "disc_optimizer": self.disc_optimizer.state_dict(),
                "gen_optimizer": self.gen_optimizer.state_dict(),
                "progress": asdict(self.progress),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
        )

    def load_state(self) -> None:
        state = self.run_dir.load_state(map_location=self.device)
        self.discriminator.load_state_dict(state["discriminator"])
        self.generator.load_state_dict(state["generator"])
        self.ema.load_state_dict(state["ema"])
        self.disc_optimizer.load_state_dict(state["disc_optimizer"])
        self.gen_optimizer.load_state_dict(state["gen_optimizer"])
        self.progress = RunProgress(**state["progress"])
        torch.set_rng_state(state["torch_rng"].cpu())
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        self.run_dir.truncate_metrics(self.progress.epoch)
        logger.info("resumed at epoch %d, step %d", self.progress.epoch + 1, self.progress.step_in_epoch)

    # ----------------------------------------------------------------------------------------------
    # Setting up the steps
    # ----------------------------------------------------------------------------------------------
    def _initialise(self) -> None:
        """Data-dependent init of D's weight-normalised layers from one unlabelled batch (reference code)."""
        count = min(500, len(self.unlabelled_images))
        batch = pixels_to_tensor(self.unlabelled_images[:count])
        initialise_weight_norm_from_data(self.discriminator, batch, output_layer=self.discriminator.head)
        self.ema = WeightEMA(self.discriminator, self.config.ema_decay)

    def _autocast(self) -> AbstractContextManager[None]:
        # bf16 (weights, optimiser and losses stay fp32): twice the matmul throughput on CUDA and on CPUs with
        # native bf16, and no loss scaling needed. Evaluation always runs in fp32.
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def prepare_step_modules(self) -> None:
        """Wrap the networks the steps call (DDP, torch.compile), after initialisation or resume, and build
        the objective around them."""
        disc_forward: torch.nn.Module = self.discriminator
        gen_forward: torch.nn.Module = self.generator
        if self.distributed.enabled:
            # Each rank draws its own fakes and noise: a torch stream per rank and resume point.
            torch.manual_seed(
                hash((self.config.seed, self.distributed.rank, self.progress.epoch, self.progress.step_in_epoch))
                % 2**62
            )
            # Wrapped after initialisation/resume: DDP broadcasts rank 0's weights to every rank here.
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            disc_forward = DistributedDataParallel(self.discriminator, device_ids=device_ids)
            gen_forward = DistributedDataParallel(self.generator, device_ids=device_ids)
        if self.config.compile:
            disc_forward = torch.compile(disc_forward)  # type: ignore[assignment]
            gen_forward = torch.compile(gen_forward)  # type: ignore[assignment]
        networks = StepNetworks(self.discriminator, self.generator, disc_forward, gen_forward)
        self.objective = build_objective(self.config, networks, self.disc_optimizer, self.gen_optimizer, self._autocast)

    def epoch_order(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This rank's batch order of ``epoch`` (``training.batches``), on the device."""
        order = epoch_order(
            self.config.seed,
            epoch,
            len(self.labelled_images),
            len(self.unlabelled_images),
            self.distributed.rank,
            self.distributed.world_size,
        )
        return tuple(torch.from_numpy(indices).to(self.device) for indices in order)  # type: ignore[return-value]

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        """A uint8 batch -> the networks' float input."""
        return pixels_to_tensor(images).contiguous(memory_format=self.memory_format)

    def _batch(self, orders: tuple[torch.Tensor, torch.Tensor, torch.Tensor], step: int) -> Batch:
        window = slice(step * self.config.batch_size, (step + 1) * self.config.batch_size)
        labelled, unlabelled, matching = (order[window] for order in orders)
        if self.config.baseline:
            return Batch(self._pixels(self.labelled_images[labelled]), self.labelled_targets[labelled])
        return Batch(
            labelled=self._pixels(self.labelled_images[labelled]),
            targets=self.labelled_targets[labelled],
            unlabelled=self._pixels(self.unlabelled_images[unlabelled]),
            matching=self._pixels(self.unlabelled_images[matching]),
        )

    def step(
        self, orders: tuple[torch.Tensor, torch.Tensor, torch.Tensor], step: int, global_step: int
    ) -> dict[str, torch.Tensor]:
        """One optimisation step on batch ``step`` of an epoch's ``orders``, then the EMA update."""
        assert self.objective is not None, "prepare_step_modules() builds the objective"
        losses = self.objective.step(self._batch(orders, step))
        self.ema.update(self.discriminator, global_step + 1)
        return losses

    # ----------------------------------------------------------------------------------------------
    # Epochs
    # ----------------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> None:
        if resume:
            self.load_state()
        else:
            self._initialise()
        self.prepare_step_modules()
        total_epochs = int(self.config.recipe_value("epochs"))
        while self.progress.epoch < total_epochs and not self.stop_requested:
            self._run_epoch(total_epochs)

    def _train_steps(self, total_epochs: int) -> tuple[dict[str, torch.Tensor], int, float]:
        """The epoch's remaining steps (all of them, unless a stop is requested). Returns the losses summed on
        the device, the number of steps run and the last learning rate."""
        orders = self.epoch_order(self.progress.epoch)
        sums: dict[str, torch.Tensor] = {}
        steps_done = 0
        first_step = self.progress.epoch * self.steps_per_epoch
        lr = self.schedule.rate(first_step + self.progress.step_in_epoch)
        self.discriminator.train()
        self.generator.train()
        bar = tqdm(
            range(self.progress.step_in_epoch, self.steps_per_epoch),
            desc=f"epoch {self.progress.epoch + 1}/{total_epochs}",
            disable=not (self.config.progress and self.distributed.is_main),
            leave=False,
        )
        for step in bar:
            lr = self.schedule.apply(first_step + step, self.disc_optimizer, self.gen_optimizer)
            losses = self.step(orders, step, first_step + step)
            for name, value in losses.items():  # summed on the device: no host sync inside the step
                sums[name] = sums.get(name, 0) + value
            steps_done += 1
            self.progress.step_in_epoch = step + 1
            # Reading a loss forces a host-device sync: on CUDA the bar shows losses once per epoch only.
            if self.config.progress and step % 50 == 0 and self.device.type == "cpu":
                bar.set_postfix({name: f"{(total / steps_done).item():.3f}" for name, total in sums.items()})
            if agree_to_stop(self.distributed, self.device, self.stop_requested, step + 1):
                self.stop_requested = True  # another rank may have asked
                break
        bar.close()
        return sums, steps_done, lr

    def _run_epoch(self, total_epochs: int) -> None:
        epoch_start = time.perf_counter()
        sums, steps_done, lr = self._train_steps(total_epochs)
        self.progress.elapsed_seconds += time.perf_counter() - epoch_start
        if self.stop_requested and self.progress.step_in_epoch < self.steps_per_epoch:
            if self.distributed.is_main:
                self.save_state()  # mid-epoch: resume continues from this step
            logger.info(
                "stopped at epoch %d step %d; state saved", self.progress.epoch + 1, self.progress.step_in_epoch
            )
            return
        self.progress.epoch += 1
        self.progress.step_in_epoch = 0
        record: dict[str, Any] = {"epoch": self.progress.epoch, **mean_over_ranks(self.distributed, sums, steps_done)}
        # Every rank validates (the EMA weights are identical on all ranks) so all take the same decisions;
        # only rank 0 writes files.
        record.update(self.held_out_check(self.ema.module, self.progress.epoch))  # type: ignore[arg-type]
        record["seconds"] = round(time.perf_counter() - epoch_start, 2)
        record["learning_rate"] = lr
        self._end_epoch(record, total_epochs)

    def _end_epoch(self, record: dict[str, Any], total_epochs: int) -> None:
        """Keep the model if it is the best so far, then log the epoch and save the state."""
        improved = record["val_accuracy"] > self.progress.best_validation_accuracy
        if improved:
            self.progress.best_validation_accuracy = record["val_accuracy"]
            self.progress.best_epoch = self.progress.epoch
        record["best_val_accuracy"] = self.progress.best_validation_accuracy
        if self.distributed.is_main:
            if improved:
                self.run_dir.write_model(self.ema.module, self.generator, model_card(self, record["val_accuracy"]))  # type: ignore[arg-type]
            self._write_samples(self.progress.epoch)
            self.run_dir.append_metrics(record)
            # The state is saved after the model and the log, so a resume never skips a best model.
            self.save_state()
        logger.info(
            "epoch %d/%d: %s",
            self.progress.epoch,
            total_epochs,
            ", ".join(f"{k}={v:.4f}" for k, v in record.items() if isinstance(v, float)),
        )

    # ----------------------------------------------------------------------------------------------
    # What an epoch leaves behind
    # ----------------------------------------------------------------------------------------------
    def _write_samples(self, epoch: int) -> None:
        if self.config.baseline:
            return
        self.generator.eval()
        with torch.no_grad():
            images = tensor_to_pixels(self.generator(self.fixed_noise))
        self.generator.train()
        self.run_dir.write_samples(epoch, encode_png(tile_grid(images, columns=10)))


def model_card(trainer: Trainer, validation_accuracy: float) -> ModelCard:
    """The card of the model the trainer holds now: its configs, the run's options and facts, its metrics."""
    disc_config = trainer.discriminator.config
    return ModelCard(
        class_names=list(trainer.class_names),
        discriminator=disc_config,
        generator=trainer.generator.config,
        normalization=normalization_record(disc_config),
        background=trainer.background,
        training={
            **trainer.config.card_facts(),
            "source": trainer.source,
            "mode": "baseline" if trainer.config.baseline else "semi-supervised",
            "num_labelled": len(trainer.labelled_images),
            "num_unlabelled": 0 if trainer.config.baseline else len(trainer.unlabelled_images),
            "best_epoch": trainer.progress.best_epoch,
            "device": str(trainer.device),
            "precision": "bf16" if trainer.bf16 else "fp32",
            "duration_seconds": round(trainer.progress.elapsed_seconds, 1),
            "code_version": code_version(),
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
        },
        metrics={"validation_accuracy": validation_accuracy},
    )
