"""Copy a trained model directory into the package as the bundled default model (``model/bundled/``).

The weights are stored as float16 to keep the package small; the shipped weights are evaluated again on the
test split so the card's figures describe exactly what ships. The labels-only baseline's test accuracy, from
a run with ``--baseline`` on the same labels, is recorded beside them.

    python scripts/bundle_default_model.py runs/benchmarks/fashion-mnist-10-seed0-ssl/model \\
        --baseline runs/benchmarks/fashion-mnist-10-seed0-baseline/model

The bundled model is the realistic protocol's seed-0 run at 10 labels per class (the final model of the default
budget, no validation labels): what a user with those 100 labels gets.
"""

from __future__ import annotations

import argparse
import sys

import torch

from model import BUNDLED_MODEL_DIR, load_model_dir, read_card, save_model_dir
from training.evaluate import classification_report
from training.readers import load_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--baseline", required=True, help="model directory of the labels-only baseline run")
    parser.add_argument("--out", default=str(BUNDLED_MODEL_DIR))
    args = parser.parse_args(argv)

    loaded = load_model_dir(args.model_dir)
    card = loaded.card
    baseline = read_card(args.baseline)
    card.training["weights_dtype"] = "float16"
    card.metrics["baseline_test_accuracy"] = baseline.metrics["test_accuracy"]
    if baseline.metrics.get("validation_accuracy") is not None:  # research runs only: no user has these labels
        card.metrics["baseline_validation_accuracy"] = baseline.metrics["validation_accuracy"]
    card.metrics["baseline_command"] = baseline.training["command"]
    save_model_dir(args.out, loaded.discriminator, loaded.generator, card, weights_dtype=torch.float16)

    shipped = load_model_dir(args.out)
    test = load_dataset(card.training["dataset"], "test")
    report = classification_report(shipped.discriminator, test)
    card.metrics["float32_test_accuracy"] = card.metrics["test_accuracy"]
    card.metrics["test_accuracy"] = report.accuracy
    card.metrics["per_class_test_accuracy"] = report.per_class_accuracy
    card.metrics["confusion_matrix"] = report.confusion.tolist()
    save_model_dir(args.out, shipped.discriminator, shipped.generator, card, weights_dtype=torch.float16)
    print(f"bundled {args.model_dir} -> {args.out}: test accuracy {report.accuracy:.4f} (float16 weights)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
