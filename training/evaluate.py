"""Evaluation: accuracy, per-class accuracy, confusion matrix, and the realness score as an
out-of-distribution detector. ``sgan-eval`` is this module's ``main``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model import Discriminator, LoadedModel, ModelDirectoryError, load_model_dir, realness_from_logits
from model.imaging import pixels_to_tensor
from training.readers import DataError, ImageDataset, load_dataset
from training.runtime import select_device

logger = logging.getLogger(__name__)


@torch.no_grad()
def predict_logits(
    discriminator: Discriminator, images: np.ndarray | torch.Tensor, batch_size: int = 1000
) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> logits (N, K) on the CPU, in eval mode; the train/eval mode is restored."""
    device = next(discriminator.parameters()).device
    was_training = discriminator.training
    discriminator.eval()
    try:
        images = torch.as_tensor(images)
        outputs = [
            discriminator(pixels_to_tensor(images[start : start + batch_size].to(device))).float().cpu()
            for start in range(0, len(images), batch_size)
        ]
    finally:
        discriminator.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0, discriminator.config.num_classes)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Area under the ROC curve for "in-distribution scores higher", via the Mann-Whitney U statistic with
    ties counted half. Written here (a few lines) because scikit-learn is only a test dependency."""
    scores = np.concatenate([in_scores, out_scores]).astype(np.float64)
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # Average ranks over ties so equal scores count as a coin flip.
    _, first_index, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average_rank = first_index + (counts + 1) / 2.0
    ranks[order] = np.repeat(average_rank, counts)
    rank_sum_in = ranks[: len(in_scores)].sum()
    n_in, n_out = len(in_scores), len(out_scores)
    return float((rank_sum_in - n_in * (n_in + 1) / 2.0) / (n_in * n_out))


@dataclass
class ClassificationReport:
    accuracy: float
    per_class_accuracy: dict[str, float]
    confusion: np.ndarray
    mean_realness: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "test_accuracy": self.accuracy,
            "per_class_accuracy": self.per_class_accuracy,
            "confusion_matrix": self.confusion.tolist(),
            "mean_realness": self.mean_realness,
        }


def classification_report(discriminator: Discriminator, dataset: ImageDataset) -> ClassificationReport:
    logits = predict_logits(discriminator, dataset.images)
    predictions = logits.argmax(dim=1).numpy()
    labels = dataset.labels
    confusion = confusion_matrix(labels, predictions, len(dataset.class_names))
    per_class_totals = confusion.sum(axis=1)
    per_class = {
        name: float(confusion[k, k] / per_class_totals[k]) if per_class_totals[k] else float("nan")
        for k, name in enumerate(dataset.class_names)
    }
    return ClassificationReport(
        accuracy=float((predictions == labels).mean()) if len(labels) else float("nan"),
        per_class_accuracy=per_class,
        confusion=confusion,
        mean_realness=float(realness_from_logits(logits).mean()) if len(labels) else float("nan"),
    )


def realness_scores(discriminator: Discriminator, images: np.ndarray) -> np.ndarray:
    return realness_from_logits(predict_logits(discriminator, images)).numpy()


def noise_images(count: int, image_shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Uniform noise images, the simplest out-of-distribution set."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(count, *image_shape), dtype=np.uint8)


def load_ood_images(name: str, image_shape: tuple[int, int, int], data_dir: str | None, count: int) -> np.ndarray:
    """``noise`` or any dataset name/path; the test split when there is one, else the training split.
    Images whose shape differs from the model's are refused (resize them into a folder dataset first)."""
    if name == "noise":
        return noise_images(count, image_shape)
    try:
        dataset = load_dataset(name, "test", data_dir=data_dir, image_shape=image_shape)
    except DataError:
        dataset = load_dataset(name, "train", data_dir=data_dir, image_shape=image_shape)
    if dataset.image_shape != image_shape:
        raise DataError(
            f"out-of-distribution images are {dataset.image_shape}, the model takes {image_shape}: "
            "put them in a folder of images (any size is resized) and pass that folder"
        )
    return dataset.images[:count]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sgan-eval",
        description="Evaluate a model directory on a dataset's test split (for an image folder: its test/<class>/).",
    )
    parser.add_argument("model_dir", help="model directory written by sgan-train (holds model.json)")
    parser.add_argument("--dataset", required=True, help="dataset name (e.g. fashion-mnist) or path")
    parser.add_argument("--data-dir", help="directory holding the dataset files")
    parser.add_argument("--labels", help="the CSV of labels the model was trained with, for a folder of images")
    parser.add_argument(
        "--ood-dataset",
        action="append",
        default=[],
        help="out-of-distribution dataset name/path, or 'noise'; repeatable. Reports the realness AUROC.",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    parser.add_argument(
        "--report", metavar="HTML", help="also write a report with plots, one HTML file (needs the report extra)"
    )
    parser.add_argument(
        "--baseline-model",
        metavar="DIR",
        help="a labels-only model (sgan-train --baseline) whose per-class accuracy on the same images --report "
        "shows beside this model's",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return parser


def write_evaluation_report(
    args: argparse.Namespace,
    loaded: LoadedModel,
    test: ImageDataset,
    report: ClassificationReport,
    ood_images: dict[str, np.ndarray],
) -> None:
    from training.report import INSTALL_HINT, evaluation_report, report_available  # it imports this module

    if not report_available():
        raise DataError(f"--report needs matplotlib: {INSTALL_HINT}")
    baseline = None
    if args.baseline_model:
        baseline_model = load_model_dir(args.baseline_model, device=next(loaded.discriminator.parameters()).device)
        if baseline_model.card.class_names != loaded.card.class_names:
            raise DataError(f"--baseline-model {args.baseline_model} has other classes than the model")
        baseline = classification_report(baseline_model.discriminator, test).per_class_accuracy
    evaluation_report(args.model_dir, loaded, test, report, ood_images, baseline).write(Path(args.report))
    logger.info("report: %s", args.report)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        loaded = load_model_dir(args.model_dir, device=select_device(args.device))
        shape = loaded.card.image_shape
        test = load_dataset(
            args.dataset, "test", data_dir=args.data_dir, image_shape=shape, labels_csv=args.labels
        ).labelled_only()
        if test.image_shape != shape:
            raise DataError(f"the dataset's images are {test.image_shape}, the model takes {shape}")
        if test.class_names != loaded.card.class_names:
            raise DataError(f"the dataset's classes {test.class_names} are not the model's {loaded.card.class_names}")
        report = classification_report(loaded.discriminator, test)
        result = report.to_dict()
        result["model_id"] = loaded.card.model_id
        result["num_test_images"] = len(test.labels)
        ood_images = {name: load_ood_images(name, shape, args.data_dir, len(test.labels)) for name in args.ood_dataset}
        if ood_images:
            in_scores = realness_scores(loaded.discriminator, test.images)
            result["ood_auroc"] = {
                name: auroc(in_scores, realness_scores(loaded.discriminator, images))
                for name, images in ood_images.items()
            }
        if args.report:
            write_evaluation_report(args, loaded, test, report, ood_images)
    except (DataError, ModelDirectoryError) as exc:
        print(f"sgan-eval: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        print(f"test accuracy: {result['test_accuracy']:.4f} on {result['num_test_images']} images")
        for name, accuracy in result["per_class_accuracy"].items():
            print(f"  {name:>16}: {accuracy:.4f}")
        for name, value in result.get("ood_auroc", {}).items():
            print(f"realness AUROC vs {name}: {value:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
