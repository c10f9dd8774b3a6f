"""Training speed: images/s of a full training step and seconds per Fashion-MNIST epoch, by device and model.

One "step" is what the trainer runs per batch: for the semi-supervised GAN a discriminator update on a
labelled, an unlabelled and a generated batch plus a generator update (feature matching); for the baseline
a discriminator update on a labelled batch. images/s counts the unlabelled images consumed (the batch
size) per second, so an epoch of 55,000 unlabelled images takes 55,000 / (images/s) seconds.

    python benchmarks/train_speed.py                      # every architecture x mode on the default device
    python benchmarks/train_speed.py --device cuda --compile

Results are merged by (device, architecture, mode, compile) into benchmarks/results/train_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.config import TrainConfig
from training.readers import DataError, ImageDataset, load_dataset
from training.runtime import select_device
from training.split import split_semi_supervised
from training.trainer import Trainer

RESULTS = Path(__file__).resolve().parent / "results" / "train_speed"
EPOCH_IMAGES = 55_000  # Fashion-MNIST's 60,000 training images less the 5,000 validation images


def training_images() -> ImageDataset:
    try:
        return load_dataset("fashion-mnist", "train")
    except DataError:  # speed does not depend on the pixels: random images of the same shape
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, size=(60_000, 1, 28, 28), dtype=np.uint8)
        return ImageDataset(images, np.arange(60_000) % 10, [str(k) for k in range(10)], "random")


def time_steps(trainer: Trainer, warmup: int, steps: int) -> float:
    """Seconds per step, after ``warmup`` steps (cuDNN autotuning, compilation, allocator warm-up)."""

    def run(first: int, count: int) -> None:
        for step in range(first, first + count):
            trainer.step(step)

    run(0, warmup)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    run(warmup, steps)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


def measure(dataset: ImageDataset, architecture: str, baseline: bool, args: argparse.Namespace) -> dict[str, Any]:
    config = TrainConfig(
        dataset="fashion-mnist", out="/nonexistent", architecture=architecture, baseline=baseline,
        device=args.device, compile=args.compile, precision=args.precision, progress=False,
    ).resolved(dataset.image_shape)  # fmt: skip
    split = split_semi_supervised(dataset.labels, 10, 5000, seed=0)
    torch.manual_seed(0)
    trainer = Trainer(config, dataset, split)
    trainer._initialise()
    trainer.prepare_step_modules()
    steps = args.steps if architecture == "mlp" else args.conv_steps
    seconds_per_step = time_steps(trainer, warmup=args.warmup, steps=steps)
    images_per_second = config.batch_size / seconds_per_step
    device = trainer.device
    return {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "architecture": architecture,
        "mode": "baseline" if baseline else "ssl",
        "compile": args.compile,
        "precision": "bf16" if trainer.bf16 else "fp32",
        "batch_size": config.batch_size,
        "steps_timed": steps,
        "ms_per_step": round(1000 * seconds_per_step, 2),
        "images_per_second": round(images_per_second, 1),
        "seconds_per_epoch": round(EPOCH_IMAGES / images_per_second, 1),
        "torch": torch.__version__,
        "machine": platform.machine(),
    }


def row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """Rows are merged by what was measured; rows written before the precision option ran in fp32."""
    return (row["device"], row["architecture"], row["mode"], row["compile"], row.get("precision", "fp32"))


def to_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "# Training speed",
        "",
        "Written by `benchmarks/train_speed.py`. One step = D update on labelled + unlabelled + generated batches and",
        "a G update (ssl), or a D update on a labelled batch (baseline); batch 100; images/s counts unlabelled",
        "images consumed; an epoch is 55,000 unlabelled images (Fashion-MNIST less the validation split).",
        "",
        "| device | model | mode | compile | precision | ms/step | images/s | s/epoch | torch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['device']} | {row['architecture']} | {row['mode']} | {row['compile']} | "
            f"{row.get('precision', 'fp32')} | {row['ms_per_step']} | {row['images_per_second']} | "
            f"{row['seconds_per_epoch']} | {row['torch']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--architectures", nargs="+", default=["mlp", "conv"], choices=("mlp", "conv"))
    parser.add_argument("--modes", nargs="+", default=["ssl", "baseline"], choices=("ssl", "baseline"))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"), help="as sgan-train's")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100, help="timed steps for the MLP")
    parser.add_argument("--conv-steps", type=int, default=10, help="timed steps for the conv net (slow on CPUs)")
    parser.add_argument("--results", default=str(RESULTS), help="path stem for .json and .md")
    args = parser.parse_args(argv)
    select_device(args.device)  # fail early on a missing device

    dataset = training_images()
    json_path, md_path = Path(args.results).with_suffix(".json"), Path(args.results).with_suffix(".md")
    rows: list[dict[str, Any]] = json.loads(json_path.read_text()) if json_path.exists() else []
    for architecture in args.architectures:
        for mode in args.modes:
            row = measure(dataset, architecture, mode == "baseline", args)
            rows = [r for r in rows if row_key(r) != row_key(row)] + [row]
            print(json.dumps(row), flush=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(rows, indent=2) + "\n")
    md_path.write_text(to_markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
