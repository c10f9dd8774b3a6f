"""Training speed: images/s of a full training step and seconds per pass over the pool, by device and model.

One "step" is what the trainer runs per batch: for the semi-supervised GAN a discriminator update on a
labelled, an unlabelled and a generated batch plus a generator update (feature matching); for the baseline
a discriminator update on a labelled batch. images/s counts the unlabelled images consumed (the batch
size) per second. The MLP is timed on Fashion-MNIST (a pass: 55,000 unlabelled images), the conv nets on
CIFAR-10's shape, 32x32 colour (a pass: 50,000); speed does not depend on the pixels, so random ones stand in
where the data is missing.

    python benchmarks/train_speed.py                      # every architecture x mode on the default device
    python benchmarks/train_speed.py --device cuda --compile --architectures conv conv-cpu
    python benchmarks/train_speed.py --architectures conv-cpu --memory-format contiguous   # the other layout

Results are merged by (device, architecture, image, mode, compile, precision, memory format) into
benchmarks/results/train_speed.{json,md}.
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

from training.config import ARCHITECTURES, TrainConfig
from training.readers import DataError, ImageDataset, load_dataset
from training.runtime import select_device
from training.split import split_semi_supervised
from training.trainer import Trainer

RESULTS = Path(__file__).resolve().parent / "results" / "train_speed"
# Unlabelled images in one pass: Fashion-MNIST's 60,000 less a 5,000-image validation split; CIFAR-10's 50,000.
PASS_IMAGES = {(1, 28, 28): 55_000, (3, 32, 32): 50_000}


def random_images(shape: tuple[int, int, int], count: int) -> ImageDataset:
    images = np.random.default_rng(0).integers(0, 256, size=(count, *shape), dtype=np.uint8)
    return ImageDataset(images, np.arange(count) % 10, [str(k) for k in range(10)], "random")


def training_images(architecture: str, pool_size: int) -> ImageDataset:
    if architecture != "mlp":
        return random_images((3, 32, 32), pool_size + 5_000)
    try:
        return load_dataset("fashion-mnist", "train")
    except DataError:
        return random_images((1, 28, 28), pool_size + 5_000)


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


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"


MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def use_memory_format(trainer: Trainer, memory_format: torch.memory_format) -> None:
    """Time the layout the trainer would not pick here. The networks' parameters keep their identity (only
    their data is re-laid), so the optimisers built around them stay valid; the EMA copy of D keeps its layout,
    which costs its one update a step little."""
    trainer.discriminator.to(memory_format=memory_format)  # type: ignore[call-overload]
    trainer.generator.to(memory_format=memory_format)  # type: ignore[call-overload]
    trainer.memory_format = memory_format


def measure(dataset: ImageDataset, architecture: str, baseline: bool, args: argparse.Namespace) -> dict[str, Any]:
    config = TrainConfig(
        dataset="fashion-mnist", out="/nonexistent", architecture=architecture, baseline=baseline,
        device=args.device, compile=args.compile, precision=args.precision, progress=False,
    ).resolved(dataset.image_shape, on_cuda=select_device(args.device).type == "cuda")  # fmt: skip
    split = split_semi_supervised(dataset.labels, 10, 5000, seed=0)
    torch.manual_seed(0)
    trainer = Trainer(config, dataset, split)
    if args.memory_format != "auto":
        use_memory_format(trainer, MEMORY_FORMATS[args.memory_format])
    trainer._initialise()
    trainer.prepare_step_modules()
    steps = args.steps if architecture == "mlp" else args.conv_steps
    seconds_per_step = time_steps(trainer, warmup=args.warmup, steps=steps)
    images_per_second = config.batch_size / seconds_per_step
    device = trainer.device
    pass_images = PASS_IMAGES[dataset.image_shape]
    return {
        "device": device_name(device),
        "architecture": architecture,
        "mode": "baseline" if baseline else "ssl",
        "compile": args.compile,
        "precision": "bf16" if trainer.bf16 else "fp32",
        "memory_format": "channels_last" if trainer.memory_format == torch.channels_last else "contiguous",
        "memory_format_forced": args.memory_format != "auto",
        "image_shape": list(dataset.image_shape),
        "batch_size": config.batch_size,
        "steps_timed": steps,
        "ms_per_step": round(1000 * seconds_per_step, 2),
        "images_per_second": round(images_per_second, 1),
        "pass_images": pass_images,
        "seconds_per_epoch": round(pass_images / images_per_second, 1),
        "torch": torch.__version__,
        "machine": platform.machine(),
    }


def row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """Rows are merged by what was measured; rows written before the precision and layout were recorded ran in
    fp32 and in the contiguous layout."""
    shape = tuple(row.get("image_shape", (1, 28, 28)))
    precision, layout = row.get("precision", "fp32"), row.get("memory_format", "contiguous")
    return (row["device"], row["architecture"], shape, row["mode"], row["compile"], precision, layout)


def to_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "# Training speed",
        "",
        "Written by `benchmarks/train_speed.py`. One step = D update on labelled + unlabelled + generated batches and",
        "a G update (ssl), or a D update on a labelled batch (baseline); batch 100; images/s counts unlabelled",
        "images consumed; a pass is 55,000 unlabelled 28x28 grey images (Fashion-MNIST less a validation split) for",
        "the MLP, 50,000 32x32 colour ones (CIFAR-10's shape) for the conv nets (rows without a shape: 28x28 grey).",
        "",
        "| device | model | image | mode | compile | precision | memory format | ms/step | images/s | s/pass | torch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        shape = "x".join(str(side) for side in row.get("image_shape", (1, 28, 28)))
        lines.append(
            f"| {row['device']} | {row['architecture']} | {shape} | {row['mode']} | {row['compile']} | "
            f"{row.get('precision', 'fp32')} | {row.get('memory_format', 'contiguous')} | {row['ms_per_step']} | "
            f"{row['images_per_second']} | {row['seconds_per_epoch']} | {row['torch']} |"
        )
    return "\n".join(lines) + "\n"


def steps_for(seconds: float, rows: list[dict[str, Any]], args: argparse.Namespace) -> int:
    """The steps ``seconds`` hold at the speed measured here before (uncompiled, in the trainer's own layout) for
    this device, model, mode and precision: a time budget that a run can repeat as a step count."""
    device = device_name(select_device(args.device))
    matches = [
        row for row in rows
        if (row["device"], row["architecture"], row["mode"], row["compile"], row.get("precision", "fp32"))
        == (device, args.architectures[0], args.modes[0], False, args.precision)
        and not row.get("memory_format_forced", False)
    ]  # fmt: skip
    if not matches:
        raise SystemExit(f"no speed row for {device}, {args.architectures[0]}, {args.modes[0]}, {args.precision}")
    return max(1, int(seconds * 1000 / matches[-1]["ms_per_step"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES), choices=ARCHITECTURES)
    parser.add_argument("--modes", nargs="+", default=["ssl", "baseline"], choices=("ssl", "baseline"))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"), help="as sgan-train's")
    parser.add_argument(
        "--memory-format", default="auto", choices=("auto", *MEMORY_FORMATS),
        help="the tensors' layout (default: the trainer's choice for the device and model)",
    )  # fmt: skip
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100, help="timed steps for the MLP")
    parser.add_argument("--conv-steps", type=int, default=10, help="timed steps for the conv nets (slow on CPUs)")
    parser.add_argument("--pool-size", type=int, default=50_000, help="unlabelled images of the stand-in data")
    parser.add_argument("--results", default=str(RESULTS), help="path stem for .json and .md")
    parser.add_argument(
        "--steps-for", type=float, metavar="SECONDS",
        help="measure nothing: print the steps SECONDS hold for the first of --architectures and --modes, at the "
        "speed already in --results",
    )  # fmt: skip
    args = parser.parse_args(argv)
    select_device(args.device)  # fail early on a missing device

    json_path, md_path = Path(args.results).with_suffix(".json"), Path(args.results).with_suffix(".md")
    rows: list[dict[str, Any]] = json.loads(json_path.read_text()) if json_path.exists() else []
    if args.steps_for is not None:
        print(steps_for(args.steps_for, rows, args))
        return 0
    for architecture in args.architectures:
        dataset = training_images(architecture, args.pool_size)
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
