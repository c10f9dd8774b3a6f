"""The training loop: builds the networks and optimisers of one run, sequences the objective's steps over a
budget of optimisation steps (single device, AMP, DDP), measures each round, keeps the chosen model, and
stops cleanly on request.

The budget is counted in steps, not in passes over the unlabelled pool, so a small pool cycles more often and
a large one is not cut short; the learning-rate decay and the EMA follow the step count. A round is the stretch
between two log lines (one pass over the pool, at least ``MIN_ROUND_STEPS``). What a step optimises is
``training.objective``; where files go is ``training.rundir``; how the model is chosen is
``training.validation``.
"""

from __future__ import annotations

import logging
import math
import platform
import time
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, replace
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
from model.config import Architecture
from model.imaging import encode_png, pixels_to_tensor, tensor_to_pixels, tile_grid, training_background
from training.augment import augment
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
from training.tensorboard_log import TensorBoardLog
from training.validation import HeldOutCheck, ModelSelection, UnlabelledSignals

logger = logging.getLogger(__name__)

SAMPLE_GRID_SIZE = 100
FIXED_NOISE_SEED = 1234  # its own stream so sample grids are comparable across rounds and resumes
# A round (log line, checks, sample grid) is one pass over the unlabelled pool, but at least this many steps,
# so that a small pool does not log every few seconds: about half a minute of MLP steps on a CPU core.
MIN_ROUND_STEPS = 500


def code_version() -> str:
    try:
        return metadata.version("sgan-service")
    except metadata.PackageNotFoundError:
        return "unknown"


def network_configs(
    config: TrainConfig, num_classes: int, image_shape: tuple[int, int, int]
) -> tuple[DiscriminatorConfig, GeneratorConfig]:
    """The recipe's networks for the image size, with the run's network options set over them."""
    architecture: Architecture = "mlp" if config.architecture == "mlp" else "conv"
    disc_config, gen_config = default_configs(num_classes, *image_shape, architecture=architecture)
    if config.architecture == "conv-cpu":
        disc_config, gen_config = cpu_sized(disc_config, gen_config)
    try:
        return (
            disc_config.with_overrides(config.discriminator_options),
            gen_config.with_overrides(config.generator_options),
        )
    except ValueError as exc:
        raise DataError(f"network option: {exc}") from None


def cpu_sized(
    disc_config: DiscriminatorConfig, gen_config: GeneratorConfig
) -> tuple[DiscriminatorConfig, GeneratorConfig]:
    """The conv-cpu recipe's networks: the reference's number of blocks for the image size at a third of its widths
    and two convs a block (the reference's 1.9 s step is a GPU's; this one is 0.16-0.18 s on two CPU cores;
    two convs a block beat one conv at half the widths in the same time on validation, recipe_search.md), with
    less dropout, which a net this small does not need, and a generator from 128 channels with normal latents, as
    measured (a quarter of the reference's 512)."""
    narrower = tuple(channels // 3 for channels in disc_config.conv_channels)
    return (
        replace(disc_config, conv_channels=narrower, convs_per_block=2, hidden_dropout=0.3),
        replace(gen_config, base_channels=128, latent_distribution="normal"),
    )


@dataclass(frozen=True)
class Budget:
    """The run's length in optimisation steps, and how it divides into passes and rounds."""

    total_steps: int
    steps_per_pass: int  # one pass over (this rank's share of) the unlabelled pool
    round_steps: int

    @classmethod
    def of(cls, config: TrainConfig, steps_per_pass: int) -> Budget:
        if config.steps is not None:
            total = config.steps
        elif config.epochs is not None:
            total = config.epochs * steps_per_pass
        else:
            total = config.recipe_value("steps")
        round_steps = config.round_steps or max(steps_per_pass, MIN_ROUND_STEPS)
        if total < 1 or round_steps < 1:
            raise DataError(f"the budget must be at least one step, got {total} steps in rounds of {round_steps}")
        return cls(total, steps_per_pass, round_steps)

    @property
    def rounds(self) -> int:
        return math.ceil(self.total_steps / self.round_steps)

    def passes(self, steps: int) -> float:
        return round(steps / self.steps_per_pass, 2)


@dataclass
class RunProgress:
    """Where a run stands; saved with the state so a resumed run continues from here."""

    step: int = 0  # optimisation steps finished
    round: int = 0  # rounds finished
    elapsed_seconds: float = 0.0  # training time, across resumes


def _adam(network: torch.nn.Module, config: TrainConfig, fused: bool | None) -> torch.optim.Adam:
    lr = config.recipe_value("learning_rate")
    return torch.optim.Adam(network.parameters(), lr=lr, betas=(config.beta1, 0.999), fused=fused)


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
        self.background = training_background(train_set.images[split.unlabelled[:5000]])
        self.stop_requested = False
        tensorboard_wanted = config.tensorboard and self.distributed.is_main
        self.tensorboard = TensorBoardLog(self.run_dir.path / "tensorboard") if tensorboard_wanted else None
        self._build_networks(network_configs(config, train_set.num_classes, train_set.image_shape))
        self._place_data(train_set, split)
        # Under DDP every rank takes its own share of the unlabelled set, so a pass has fewer steps per rank.
        steps_per_pass = max(1, len(self.unlabelled_images) // (config.batch_size * self.distributed.world_size))
        self.budget = Budget.of(config, steps_per_pass)
        self.schedule = LinearDecaySchedule(
            config.recipe_value("learning_rate"), self.budget.total_steps, config.recipe_value("lr_decay_fraction")
        )
        self.objective: Objective | None = None  # built in fit, around the networks the steps call
        self.progress = RunProgress()
        self._order_cache: tuple[int, tuple[torch.Tensor, ...]] | None = None
        self.fixed_noise = self.generator.sample_latent(
            SAMPLE_GRID_SIZE, generator=torch.Generator(self.device).manual_seed(FIXED_NOISE_SEED)
        )

    def _build_networks(self, configs: tuple[DiscriminatorConfig, GeneratorConfig]) -> None:
        disc_config, gen_config = configs
        on_cuda = self.device.type == "cuda"
        self.bf16 = use_bf16_autocast(self.device, self.config.precision)
        if on_cuda:
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
        # channels_last lets cuDNN use its NHWC tensor-core convolutions, and oneDNN's CPU convolutions are faster
        # in it too: a fifth off conv-cpu's step, a third off the reference net's (benchmarks/results/
        # train_speed.md). MLPs gain nothing from it.
        channels_last = disc_config.architecture == "conv"
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.discriminator = Discriminator(disc_config).to(self.device, memory_format=self.memory_format)  # type: ignore[call-overload]
        self.generator = Generator(gen_config).to(self.device, memory_format=self.memory_format)  # type: ignore[call-overload]
        # The fused CUDA kernel updates all parameters in one launch; the CPU keeps the default (foreach).
        self.disc_optimizer = _adam(self.discriminator, self.config, True if on_cuda else None)
        self.gen_optimizer = _adam(self.generator, self.config, True if on_cuda else None)
        self.ema = WeightEMA(self.discriminator, self.config.ema_decay)

    def _place_data(self, train_set: ImageDataset, split: SemiSupervisedSplit) -> None:
        """The whole training set stays on the device as uint8; batches are gathered by index (no host work)."""
        images = torch.tensor(train_set.images, device=self.device)
        labels = torch.tensor(train_set.labels, device=self.device)
        self.labelled_images, self.labelled_targets = images[split.labelled], labels[split.labelled]
        self.unlabelled_images = images[split.unlabelled]
        self.signals = UnlabelledSignals(train_set.images[split.unlabelled], self.config.seed)
        held_out = None
        if len(split.validation):
            held_out = HeldOutCheck(train_set.images[split.validation], train_set.labels[split.validation])
        rule = "validation split" if self.config.val_size else "held-out labels" if held_out else "final"
        self.selection = ModelSelection(held_out, rule, self.config.val_labels_per_class)

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
                "selection": self.selection.state_dict(),
                "previous_predictions": self.signals.previous_predictions,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
        )

    def load_state(self) -> None:
        state = self.run_dir.load_state(map_location=self.device)
        try:
            self.discriminator.load_state_dict(state["discriminator"])
            self.generator.load_state_dict(state["generator"])
        except RuntimeError as exc:  # e.g. a run begun by a version whose recipe built other networks
            detail = str(exc).splitlines()[-1].strip()  # torch lists one mismatch a line
            raise DataError(
                f"{self.run_dir.state_path}: the saved networks differ from the ones this version builds for the "
                f"run's options ({detail}); train anew with another --out"
            ) from None
        self.ema.load_state_dict(state["ema"])
        self.disc_optimizer.load_state_dict(state["disc_optimizer"])
        self.gen_optimizer.load_state_dict(state["gen_optimizer"])
        self.progress = RunProgress(**state["progress"])
        self.selection.load_state_dict(state["selection"])
        self.signals.previous_predictions = state["previous_predictions"]
        torch.set_rng_state(state["torch_rng"].cpu())
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        self.run_dir.truncate_metrics(self.progress.round)
        logger.info("resumed at step %d of %d", self.progress.step, self.budget.total_steps)

    # ----------------------------------------------------------------------------------------------
    # Steps
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
            torch.manual_seed(hash((self.config.seed, self.distributed.rank, self.progress.step)) % 2**62)
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
        """This rank's batch order of pass ``epoch`` over the pool (``training.batches``), on the device."""
        order = epoch_order(
            self.config.seed,
            epoch,
            len(self.labelled_images),
            len(self.unlabelled_images),
            self.distributed.rank,
            self.distributed.world_size,
        )
        return tuple(torch.from_numpy(indices).to(self.device) for indices in order)  # type: ignore[return-value]

    def _batch(self, global_step: int) -> Batch:
        pass_index, step = divmod(global_step, self.budget.steps_per_pass)
        if self._order_cache is None or self._order_cache[0] != pass_index:
            self._order_cache = (pass_index, self.epoch_order(pass_index))
        window = slice(step * self.config.batch_size, (step + 1) * self.config.batch_size)
        labelled, unlabelled, matching = (order[window] for order in self._order_cache[1])
        pixels = self._real_pixels
        if self.config.baseline:
            return Batch(pixels(self.labelled_images[labelled]), self.labelled_targets[labelled])
        return Batch(
            labelled=pixels(self.labelled_images[labelled]),
            targets=self.labelled_targets[labelled],
            unlabelled=pixels(self.unlabelled_images[unlabelled]),
            matching=pixels(self.unlabelled_images[matching]),
        )

    def _real_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """A batch of real images as D takes them, with the recipe's label-preserving augmentation."""
        pixels = augment(pixels_to_tensor(images), self.config.recipe_value("augment"))
        return pixels.contiguous(memory_format=self.memory_format)

    def step(self, global_step: int) -> dict[str, torch.Tensor]:
        """Optimisation step ``global_step`` (0-based) at its learning rate, then the EMA update."""
        assert self.objective is not None, "prepare_step_modules() builds the objective"
        self.schedule.apply(global_step, self.disc_optimizer, self.gen_optimizer)
        losses = self.objective.step(self._batch(global_step))
        self.ema.update(self.discriminator, global_step + 1)
        return losses

    # ----------------------------------------------------------------------------------------------
    # Rounds
    # ----------------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> None:
        if resume:
            self.load_state()
        else:
            self._initialise()
        self.prepare_step_modules()
        while self.progress.step < self.budget.total_steps and not self.stop_requested:
            self._run_round()
        if self.tensorboard is not None:
            self.tensorboard.close()

    def _train_steps(self, end: int) -> tuple[dict[str, torch.Tensor], int]:
        """Steps up to ``end`` (unless a stop is requested): the losses summed on the device, and their count."""
        sums: dict[str, torch.Tensor] = {}
        first = self.progress.step
        bar = tqdm(
            range(first, end),
            desc=f"round {self.progress.round + 1}/{self.budget.rounds}",
            disable=not (self.config.progress and self.distributed.is_main),
            leave=False,
            unit="step",
        )
        self.discriminator.train()
        self.generator.train()
        for global_step in bar:
            for name, value in self.step(global_step).items():  # summed on the device: no host sync in a step
                sums[name] = sums.get(name, 0) + value
            self.progress.step = global_step + 1
            # Reading a loss forces a host-device sync: on CUDA the bar shows losses once per round only.
            if self.config.progress and global_step % 50 == 0 and self.device.type == "cpu":
                done = global_step + 1 - first
                bar.set_postfix({name: f"{(total / done).item():.3f}" for name, total in sums.items()})
            if agree_to_stop(self.distributed, self.device, self.stop_requested, global_step + 1):
                self.stop_requested = True  # another rank may have asked
                break
        bar.close()
        return sums, self.progress.step - first

    def _run_round(self) -> None:
        round_start = time.perf_counter()
        end = min((self.progress.round + 1) * self.budget.round_steps, self.budget.total_steps)
        sums, steps_done = self._train_steps(end)
        self.progress.elapsed_seconds += time.perf_counter() - round_start
        if self.stop_requested and self.progress.step < end:
            if self.distributed.is_main:
                self.save_state()  # mid-round: resume continues from this step
            logger.info("stopped at step %d; state saved", self.progress.step)
            return
        self.progress.round += 1
        step = self.progress.step
        record: dict[str, Any] = {"round": self.progress.round, "step": step, "passes": self.budget.passes(step)}
        record.update(mean_over_ranks(self.distributed, sums, steps_done))
        # Every rank measures (the EMA weights are identical on all ranks) so all take the same decisions;
        # only rank 0 writes files.
        samples = None if self.config.baseline else self._samples()  # the baseline trains no generator
        record.update(self.selection.evaluate(self.ema.module))  # type: ignore[arg-type]
        record.update(self.signals(self.ema.module, samples, self.progress.round))  # type: ignore[arg-type]
        record["seconds"] = round(time.perf_counter() - round_start, 2)
        record["learning_rate"] = self.schedule.rate(step - 1)
        self._end_round(record, samples)

    def _samples(self) -> torch.Tensor:
        """The generator's images of the fixed noise batch, uint8 (N, C, H, W)."""
        self.generator.eval()
        with torch.no_grad():
            images = torch.from_numpy(tensor_to_pixels(self.generator(self.fixed_noise)))
        self.generator.train()
        return images

    def _end_round(self, record: dict[str, Any], samples: torch.Tensor | None) -> None:
        """Keep the model if the selection rule says so, then log the round and save the state."""
        keep = self.selection.is_best(record)
        if self.distributed.is_main:
            if keep:
                self.run_dir.write_model(self.ema.module, self.generator, model_card(self))  # type: ignore[arg-type]
            grid = None if samples is None else tile_grid(samples.numpy(), columns=10)
            if grid is not None:
                self.run_dir.write_samples(self.progress.round, encode_png(grid))
            self.run_dir.append_metrics(record)
            if self.tensorboard is not None:
                self.tensorboard.write_round(record, grid)
            # The state is saved after the model and the log, so a resume never skips a kept model.
            self.save_state()
        logger.info(
            "round %d/%d: %s",
            self.progress.round,
            self.budget.rounds,
            ", ".join(f"{k}={v:.4f}" for k, v in record.items() if isinstance(v, float)),
        )


def labelled_per_class(trainer: Trainer) -> dict[str, int]:
    counts = torch.bincount(trainer.labelled_targets.cpu(), minlength=len(trainer.class_names)).tolist()
    return dict(zip(trainer.class_names, counts, strict=True))


def model_card(trainer: Trainer) -> ModelCard:
    """The card of the model the trainer keeps now: its configs, the run's options and facts, how it was
    chosen."""
    disc_config = trainer.discriminator.config
    budget, progress = trainer.budget, trainer.progress
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
            "labelled_per_class": labelled_per_class(trainer),
            "num_unlabelled": 0 if trainer.config.baseline else len(trainer.unlabelled_images),
            "budget_steps": budget.total_steps,
            "steps_per_pass": budget.steps_per_pass,
            "steps_done": progress.step,
            "passes": budget.passes(progress.step),
            "selection": trainer.selection.card(),
            "device": str(trainer.device),
            "precision": "bf16" if trainer.bf16 else "fp32",
            "duration_seconds": round(progress.elapsed_seconds, 1),
            "code_version": code_version(),
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
        },
        metrics={"validation_accuracy": trainer.selection.best_accuracy} if trainer.selection.held_out else {},
    )
