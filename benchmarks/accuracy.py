"""Accuracy benchmark: the semi-supervised GAN against the labels-only baseline, same network, same labelled
images, same budget (docs/design.md, Evaluation protocol).

Each row is one `sgan-train` run (a subprocess, timed whole) followed by `sgan-eval` for the realness AUROC
against out-of-distribution images. Rows are merged into ``benchmarks/results/accuracy.json`` by key
(dataset, labels per class, seed, mode, recipe), so any row can be re-run alone with the command it records, and
``accuracy.md`` is rewritten from all rows with the mean and spread over seeds.

    python benchmarks/accuracy.py --dataset fashion-mnist --labels-per-class 10 --seeds 0 1 2
    # Another recipe (its own rows, beside the default's): any sgan-train flags, under a name.
    python benchmarks/accuracy.py --labels-per-class 10 100 --seeds 0 1 2 --recipe conv-reference \
        --train-args="--architecture conv --fake-noise-fraction 0.1"   # a CUDA machine: --device auto finds it

Protocol (docs/design.md, Evaluation protocol): by default a run uses no labels beyond its labelled set and the
final EMA model is the one measured; a recipe whose --train-args hold --val-size is research (best round on a
labelled validation split) and its rows say so. The test split is read once per run, by sgan-train at the end.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_RECIPE = "default"  # sgan-train's own defaults for the image size


FASHION_TEST_IMAGES = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def write_ood_set(
    directory: Path, image_shape: tuple[int, int, int], fashion_images: Path = FASHION_TEST_IMAGES
) -> tuple[str, Path]:
    """Foreign images of the model's shape, as an .npz dataset: for 28x28 grey, scikit-learn's bundled 8x8 digits
    scaled up (0..16 -> 0..255, bilinear); for any other shape, Fashion-MNIST's test images (grey, resized,
    the grey copied into each channel), which colour photos are not."""
    from PIL import Image

    channels, height, width = image_shape
    if image_shape == (1, 28, 28):
        from sklearn.datasets import load_digits

        digits = load_digits()
        grey, labels, name = (digits.images * 255 / 16).astype(np.uint8), digits.target, "digits"
    else:
        with gzip.open(fashion_images) as handle:
            grey = np.frombuffer(handle.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)
        labels, name = np.zeros(len(grey), dtype=np.int64), "fashion-mnist"
    resized = np.stack([np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR)) for image in grey])
    images = np.repeat(resized[:, None], channels, axis=1)  # (N, C, H, W)
    path = directory / f"{name}-{channels}x{height}x{width}.npz"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(path, x_test=images, y_test=labels.astype(np.int64))
    return name, path


def run_row(args: argparse.Namespace, labels_per_class: int, seed: int, baseline: bool) -> dict[str, Any]:
    mode = "baseline" if baseline else "ssl"
    recipe_suffix = "" if args.recipe == DEFAULT_RECIPE else f"-{args.recipe}"
    run_dir = Path(args.runs_dir) / f"{args.dataset}-{labels_per_class}-seed{seed}-{mode}{recipe_suffix}"
    command = ["sgan-train", "--dataset", args.dataset, "--labels-per-class", str(labels_per_class),
               "--seed", str(seed), "--out", str(run_dir), "--no-progress", *shlex.split(args.train_args)]  # fmt: skip
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    if args.steps is not None:
        command += ["--steps", str(args.steps)]
    if baseline:
        command.append("--baseline")
    if run_dir.exists():
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    started = time.perf_counter()
    # Run through this interpreter (`python -m training` is `sgan-train`) so no activated venv is needed.
    subprocess.run([sys.executable, "-m", "training", *command[1:]], check=True, stdout=subprocess.DEVNULL)
    wall_seconds = time.perf_counter() - started
    card = json.loads((run_dir / "model" / "model.json").read_text())
    image_shape = (card["discriminator"]["channels"], card["discriminator"]["height"], card["discriminator"]["width"])
    ood_name, ood_path = write_ood_set(Path(args.runs_dir) / "ood", image_shape, Path(args.fashion_images))

    eval_command = ["sgan-eval", str(run_dir / "model"), "--dataset", args.dataset, "--json",
                    "--ood-dataset", "noise", "--ood-dataset", str(ood_path)]  # fmt: skip
    if args.data_dir:
        eval_command += ["--data-dir", args.data_dir]
    eval_process = [sys.executable, "-m", "training.evaluate", *eval_command[1:]]
    report = json.loads(subprocess.run(eval_process, check=True, capture_output=True, text=True).stdout)
    return {
        "dataset": args.dataset,
        "labels_per_class": labels_per_class,
        "seed": seed,
        "mode": mode,
        "recipe": args.recipe,
        "protocol": protocol_of(card["training"]["selection"]["rule"]),
        "test_accuracy": card["metrics"]["test_accuracy"],
        "validation_accuracy": card["metrics"].get("validation_accuracy"),
        "chosen_round": card["training"]["selection"]["round"],
        "steps": card["training"]["budget_steps"],
        "passes": card["training"]["passes"],
        "ood_auroc_noise": report["ood_auroc"]["noise"],
        "ood_auroc_foreign": report["ood_auroc"][str(ood_path)],
        "ood_set": ood_name,
        "wall_seconds": round(wall_seconds, 1),
        "device": card["training"]["device"],
        "precision": card["training"].get("precision", "fp32"),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {platform.system()}",
        "command": " ".join(command),
    }


REALISTIC = "final model, no validation labels"
# Rows measured before the realistic protocol existed chose the best epoch on 5,000 labelled validation images.
RESEARCH_VAL_5000 = "research: best epoch on 5,000 validation labels"


def protocol_of(selection_rule: str) -> str:
    return {"final": REALISTIC, "validation split": "research: best round on a labelled validation split"}.get(
        selection_rule, f"best round on held-out labels ({selection_rule})"
    )


def row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    recipe = row.get("recipe", DEFAULT_RECIPE)
    return (row["dataset"], row["labels_per_class"], row["seed"], row["mode"], recipe, _protocol(row))


def _protocol(row: dict[str, Any]) -> str:
    return row.get("protocol", RESEARCH_VAL_5000)


def _length(row: dict[str, Any]) -> str:
    if "steps" in row:
        return f"round {row['chosen_round']}, {row['steps']} steps ({row['passes']} passes)"
    return f"epoch {row['best_epoch']}/{row['epochs']}"


def _foreign_auroc(row: dict[str, Any]) -> float:
    return float(row.get("ood_auroc_foreign", row.get("ood_auroc_digits")))


def summarise(rows: list[dict[str, Any]]) -> str:
    def spread(values: list[float]) -> str:
        mean = statistics.mean(values)
        if len(values) == 1:
            return f"{100 * mean:.2f}"
        return f"{100 * mean:.2f} ± {100 * statistics.stdev(values):.2f}"

    lines = [
        "# Accuracy: semi-supervised GAN vs the labels-only baseline",
        "",
        "Written by `benchmarks/accuracy.py`. Test accuracy in %, mean ± standard deviation over seeds; the",
        "test split is read once per run. The protocol column says how each model was chosen: the headline is",
        f"'{REALISTIC}' (what a user with only these labels gets); 'research' rows chose the best epoch",
        "with thousands of validation labels no such user has, and are kept only for comparison.",
        "AUROC: realness score, test set vs out-of-distribution images (higher = better): uniform noise, and a",
        "foreign set (28x28 grey models: scikit-learn's digits; others: Fashion-MNIST resized to the model's shape).",
        "",
        "| dataset | labels/class | protocol | recipe | mode | seeds | test accuracy % | gain (points) | AUROC noise | "
        "AUROC foreign (set) | wall s/run | device, precision |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        recipe = row.get("recipe", DEFAULT_RECIPE)
        groups.setdefault((row["dataset"], row["labels_per_class"], _protocol(row), recipe, row["mode"]), []).append(
            row
        )
    for (dataset, labels, protocol, recipe, mode), group in sorted(groups.items()):
        accuracies = [r["test_accuracy"] for r in group]
        baseline = groups.get((dataset, labels, protocol, recipe, "baseline"))
        gain = ""
        if mode == "ssl" and baseline:
            gain = f"{100 * (statistics.mean(accuracies) - statistics.mean(r['test_accuracy'] for r in baseline)):+.2f}"
        lines.append(
            f"| {dataset} | {labels} | {protocol} | {recipe} | {mode} | {len(group)} | {spread(accuracies)} | {gain} | "
            f"{statistics.mean(r['ood_auroc_noise'] for r in group):.3f} | "
            f"{statistics.mean(_foreign_auroc(r) for r in group):.3f} ({group[0].get('ood_set', 'digits')}) | "
            f"{statistics.mean(r['wall_seconds'] for r in group):.0f} | "
            f"{group[0]['device']} {'/'.join(sorted({r.get('precision', 'fp32') for r in group}))} |"
        )
    lines += [
        "",
        "## Runs",
        "",
        "| dataset | labels/class | seed | mode | protocol | test % | val % | model kept | wall s | command |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=row_key):
        validation = row.get("validation_accuracy")
        lines.append(
            f"| {row['dataset']} | {row['labels_per_class']} | {row['seed']} | {row['mode']} | {_protocol(row)} | "
            f"{100 * row['test_accuracy']:.2f} | {'' if validation is None else f'{100 * validation:.2f}'} | "
            f"{_length(row)} | {row['wall_seconds']:.0f} | `{row['command']}` |"
        )
    threads = ", ".join(str(t) for t in sorted({r["cpu_threads"] for r in rows}))
    lines += [
        "",
        f"torch {rows[0]['torch']}, {rows[0]['machine']}; torch CPU threads per run: {threads} (runs with one thread",
        "shared the 2-core machine with one to five other runs; wall times include that load, so they are not the",
        "time of a run alone on two threads).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir")
    parser.add_argument("--labels-per-class", type=int, nargs="+", default=[10])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, help="the training budget in steps (default: the recipe's)")
    parser.add_argument("--modes", nargs="+", choices=("ssl", "baseline"), default=["ssl", "baseline"])
    parser.add_argument("--recipe", default=DEFAULT_RECIPE, help="a name for the rows of this recipe")
    parser.add_argument("--train-args", default="", help="extra sgan-train flags of the recipe, one string")
    parser.add_argument("--runs-dir", default="runs/benchmarks")
    parser.add_argument(
        "--fashion-images",
        default=str(FASHION_TEST_IMAGES),
        help="Fashion-MNIST's t10k-images-idx3-ubyte.gz, the foreign set for models of other shapes than 28x28 grey",
    )
    parser.add_argument("--results", default=str(RESULTS_DIR / "accuracy"), help="path stem for .json and .md")
    parser.add_argument("--summarise-only", action="store_true", help="rewrite the .md from the .json, run nothing")
    args = parser.parse_args(argv)
    if args.train_args and args.recipe == DEFAULT_RECIPE:
        parser.error("--train-args changes the recipe: name it with --recipe")

    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = results.with_suffix(".json"), results.with_suffix(".md")
    if args.summarise_only:
        md_path.write_text(summarise(json.loads(json_path.read_text())))
        return 0
    for labels_per_class in args.labels_per_class:
        for seed in args.seeds:
            for mode in args.modes:
                row = run_row(args, labels_per_class, seed, mode == "baseline")
                # Read again just before writing: another benchmark process (another seed) may have added rows.
                rows = json.loads(json_path.read_text()) if json_path.exists() else []
                rows = [r for r in rows if row_key(r) != row_key(row)] + [row]
                json_path.write_text(json.dumps(rows, indent=2) + "\n")
                md_path.write_text(summarise(rows))
                print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
