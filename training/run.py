"""One whole training run: read the data, draw the split, fit, then read the test split once and record the
figures in the model card (docs/design.md, Evaluation protocol)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from model import load_model_dir, read_card, write_card
from model.config import conv_size_problem
from training.config import TrainConfig
from training.evaluate import classification_report
from training.readers import DataError, ImageDataset, load_dataset
from training.report import write_run_report
from training.runtime import Distributed, init_distributed, seed_everything, select_device, shutdown_distributed
from training.split import SemiSupervisedSplit, split_semi_supervised
from training.trainer import Trainer

logger = logging.getLogger(__name__)


def folder_image_shape(config: TrainConfig) -> tuple[int, int, int] | None:
    """The shape asked for with --image-size / --channels (image folders only), checked before any decoding."""
    if config.image_size is None and config.channels is None:
        return None
    shape = (config.channels or 3, config.image_size or 32, config.image_size or 32)
    if config.architecture != "mlp" and shape != (1, 28, 28):
        _check_conv_size(shape)
    return shape


def _check_conv_size(image_shape: tuple[int, int, int]) -> None:
    problem = conv_size_problem(*image_shape[1:])
    if problem:
        raise DataError(
            f"{problem}, and these images are {image_shape[1]}x{image_shape[2]}: pick one with --image-size "
            "(image folders), or --architecture mlp"
        )


def _subset(train_set: ImageDataset, count: int, seed: int) -> ImageDataset:
    if count > len(train_set.labels):
        raise DataError(f"--train-subset {count} exceeds the {len(train_set.labels)} images")
    keep = np.sort(np.random.default_rng(seed).permutation(len(train_set.labels))[:count])
    return ImageDataset(train_set.images[keep], train_set.labels[keep], train_set.class_names, train_set.source)


def prepare(config: TrainConfig) -> tuple[TrainConfig, ImageDataset, SemiSupervisedSplit]:
    """Read the training split, resolve the recipe for its image size, and draw the SSL split."""
    if not config.dataset:
        raise DataError("--dataset is required (e.g. --dataset fashion-mnist)")
    train_set = load_dataset(
        config.dataset,
        "train",
        data_dir=config.data_dir,
        download=config.download,
        image_shape=folder_image_shape(config),
        labels_csv=config.labels,
    )
    if config.train_subset is not None:
        train_set = _subset(train_set, config.train_subset, config.seed)
    # The shape the training images were decoded to (chosen from them for an image folder): the test split
    # and a resumed run read theirs the same way.
    config = replace(config, channels=train_set.image_shape[0], image_size=train_set.image_shape[1])
    _check_protocol(config, train_set)
    config = config.resolved(train_set.image_shape, on_cuda=select_device(config.device).type == "cuda")
    if config.architecture != "mlp":
        _check_conv_size(train_set.image_shape)
    split = split_semi_supervised(
        train_set.labels,
        config.labels_per_class,
        config.val_size,
        config.seed,
        num_classes=train_set.num_classes,
        val_labels_per_class=config.val_labels_per_class,
    )
    if not config.baseline and len(split.unlabelled) == len(split.labelled):
        logger.warning("no unlabelled images: training the labels-only model (a semi-supervised GAN needs some)")
        config = replace(config, baseline=True)
    return config, train_set, split


def _check_protocol(config: TrainConfig, train_set: ImageDataset) -> None:
    """Options that only make sense on fully labelled benchmark data (docs/design.md, Evaluation protocol)."""
    if not train_set.num_unlabelled:
        return
    if config.labels_per_class is not None:
        raise DataError(
            f"--labels-per-class simulates few labels on a fully labelled set, but {train_set.source} already says "
            f"which images are labelled ({len(train_set) - train_set.num_unlabelled} are); drop the option"
        )
    if config.val_size:
        raise DataError(
            "--val-size carves a labelled validation split from a fully labelled benchmark set (research only); "
            "on your own data hold out some of your labels with --val-labels-per-class K"
        )


def finish(trainer: Trainer, test_set: ImageDataset | None) -> dict[str, Any]:
    """After the last epoch: read the test split once, with the chosen model, and record the figures in its
    model card."""
    model_dir = trainer.run_dir.model_dir
    loaded = load_model_dir(model_dir)
    card = read_card(model_dir)
    card.training["duration_seconds"] = round(trainer.progress.elapsed_seconds, 1)
    if test_set is not None:
        test_set = test_set.labelled_only()
        report = classification_report(loaded.discriminator, test_set)
        card.metrics.update(
            {
                "test_accuracy": report.accuracy,
                "per_class_test_accuracy": report.per_class_accuracy,
                "confusion_matrix": report.confusion.tolist(),
                "test_mean_realness": report.mean_realness,
                "num_test_images": len(test_set.labels),
            }
        )
    write_card(model_dir, card)
    return card.metrics


def train(
    config: TrainConfig, resume: bool = False, on_trainer: Callable[[Trainer], None] | None = None
) -> dict[str, Any]:
    """Run (or resume) a whole training and return the chosen model's metrics."""
    distributed = init_distributed(config.device)
    try:
        return _train(config, resume, on_trainer, distributed)
    finally:
        shutdown_distributed()


def _log_start(config: TrainConfig, train_set: ImageDataset, split: SemiSupervisedSplit, trainer: Trainer) -> None:
    logger.info(
        "%s: %d labelled, %d unlabelled, %d held-out images of %s; %s on %s, %d steps (%.1f passes), model: %s",
        config.dataset,
        len(split.labelled),
        0 if config.baseline else len(split.unlabelled),
        len(split.validation),
        "x".join(map(str, train_set.image_shape)),
        "baseline" if config.baseline else "semi-supervised GAN",
        trainer.device,
        trainer.budget.total_steps,
        trainer.budget.passes(trainer.budget.total_steps),
        trainer.selection.rule,
    )


def _load_test_split(config: TrainConfig) -> ImageDataset | None:
    try:
        return load_dataset(
            config.dataset,  # type: ignore[arg-type]
            "test",
            data_dir=config.data_dir,
            image_shape=folder_image_shape(config),
            labels_csv=config.labels,
        )
    except DataError as exc:
        logger.warning("no test split (%s): the model card has no test accuracy", exc)
        return None


def _train(
    config: TrainConfig, resume: bool, on_trainer: Callable[[Trainer], None] | None, distributed: Distributed
) -> dict[str, Any]:
    config, train_set, split = prepare(config)
    seed_everything(config.seed)  # the same on every rank: identical initial weights
    trainer = Trainer(config, train_set, split, distributed)
    if on_trainer is not None:
        on_trainer(trainer)
    if not resume and distributed.is_main:
        trainer.run_dir.write_config(config)
    _log_start(config, train_set, split, trainer)
    del train_set  # the trainer holds what it needs; the test split is read only at the end
    trainer.fit(resume=resume)
    if trainer.stop_requested:
        if distributed.is_main:
            write_run_report(trainer.run_dir, None, stopped=True)
        return {"stopped": True, "step": trainer.progress.step}
    if distributed.enabled:
        logger.info(
            "rank %d of %d: discriminator checksum %.12e",
            distributed.rank,
            distributed.world_size,
            sum(p.double().sum().item() for p in trainer.discriminator.state_dict().values()),
        )
        if not distributed.is_main:
            return {"rank": distributed.rank}
    test_set = _load_test_split(config)
    metrics = finish(trainer, test_set)
    write_run_report(trainer.run_dir, test_set)
    return metrics
