"""Junk in the unlabelled pool: does the semi-supervised GAN still beat the labels-only baseline when 40% of
the unlabelled images belong to no class the user labelled? (docs/design.md, Evaluation protocol)

Fashion-MNIST: labels for classes 0-5 only (``--labels-per-class`` per class, seeded); the unlabelled pool is
every other training image of those classes plus all 24,000 training images of classes 6-9 (Shirt, Sneaker,
Bag, Ankle boot): 40% foreign. Test: the 6,000 test images of classes 0-5. Realistic protocol: final model,
no validation labels. Also reports how the SSL model's realness score sees the pool's foreign images.

    python benchmarks/junk_pool.py --seeds 0            # SSL and baseline on the junk pool
    python benchmarks/junk_pool.py --seeds 0 --clean    # also SSL on the clean pool (classes 0-5 only)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from model import load_model_dir
from training.evaluate import auroc, realness_scores
from training.readers import load_dataset

RESULTS = Path(__file__).resolve().parent / "results" / "junk_pool"
KNOWN_CLASSES = 6


def write_pool(directory: Path, labels_per_class: int, seed: int, with_junk: bool) -> tuple[Path, np.ndarray]:
    """The .npz dataset, and the foreign images of its pool (for the realness report)."""
    train, test = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    rng = np.random.default_rng(seed)
    known = np.flatnonzero(train.labels < KNOWN_CLASSES)
    labelled = np.concatenate(
        [rng.permutation(known[train.labels[known] == k])[:labels_per_class] for k in range(KNOWN_CLASSES)]
    )
    foreign = np.flatnonzero(train.labels >= KNOWN_CLASSES)
    pool = np.setdiff1d(known, labelled)
    if with_junk:
        pool = np.concatenate([pool, foreign])
    test_known = test.labels < KNOWN_CLASSES
    path = directory / f"fmnist6-{'junk' if with_junk else 'clean'}-{labels_per_class}-seed{seed}.npz"
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=train.images[labelled, 0], y_train=train.labels[labelled],
             x_unlabelled=train.images[pool, 0], x_test=test.images[test_known, 0], y_test=test.labels[test_known],
             class_names=np.array(train.class_names[:KNOWN_CLASSES]))  # fmt: skip
    return path, train.images[foreign]


def run(dataset: Path, out: Path, seed: int, baseline: bool, steps: int | None) -> dict[str, Any]:
    command = ["sgan-train", "--dataset", str(dataset), "--seed", str(seed), "--out", str(out), "--no-progress"]
    command += ["--steps", str(steps)] if steps else []
    command += ["--baseline"] if baseline else []
    subprocess.run(["rm", "-rf", str(out)], check=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "training", *command[1:]], check=True, stdout=subprocess.DEVNULL)
    card = json.loads((out / "model" / "model.json").read_text())
    return {
        "test_accuracy": card["metrics"]["test_accuracy"],
        "wall_seconds": round(time.perf_counter() - started, 1),
        "steps": card["training"]["budget_steps"],
        "num_unlabelled": card["training"]["num_unlabelled"],
        "command": " ".join(command),
    }


def realness_report(model_dir: Path, dataset: Path, foreign: np.ndarray) -> dict[str, float]:
    """How the model's realness score sees the pool: its own classes' images vs the foreign ones."""
    discriminator = load_model_dir(model_dir).discriminator
    pool = np.load(dataset)["x_unlabelled"][:, None]
    own = pool[: len(pool) - len(foreign)]
    own_scores, foreign_scores = realness_scores(discriminator, own), realness_scores(discriminator, foreign)
    return {
        "realness_own_classes_mean": float(own_scores.mean()),
        "realness_foreign_mean": float(foreign_scores.mean()),
        "realness_foreign_below_0.5": float((foreign_scores < 0.5).mean()),
        "realness_own_below_0.5": float((own_scores < 0.5).mean()),
        "auroc_own_vs_foreign": auroc(own_scores, foreign_scores),
    }


def summarise(rows: list[dict[str, Any]]) -> str:
    lines = [
        "# Junk in the unlabelled pool",
        "",
        "Written by `benchmarks/junk_pool.py`. Fashion-MNIST, labels for classes 0-5 only; the junk pool adds all",
        "24,000 training images of classes 6-9 (40% of the pool), the clean pool does not. Test: the 6,000 test",
        "images of classes 0-5. Realistic protocol: the final model, no validation labels; test read once.",
        "",
        "| pool | mode | labels/class | seed | test accuracy % | unlabelled | steps | wall s | command |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['pool']} | {row['mode']} | {row['labels_per_class']} | {row['seed']} | "
            f"{100 * row['test_accuracy']:.2f} | {row['num_unlabelled']} | {row['steps']} | "
            f"{row['wall_seconds']:.0f} | `{row['command']}` |"
        )
    realness = [row for row in rows if "auroc_own_vs_foreign" in row]
    if realness:
        lines += ["", "Realness of the junk pool's images under the SSL model (seed mean):", ""]
        for key in ("realness_own_classes_mean", "realness_foreign_mean", "realness_own_below_0.5",
                    "realness_foreign_below_0.5", "auroc_own_vs_foreign"):  # fmt: skip
            lines.append(f"- {key}: {statistics.mean(row[key] for row in realness):.3f}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels-per-class", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, help="the training budget (default: the recipe's)")
    parser.add_argument("--clean", action="store_true", help="also train SSL on the clean pool")
    parser.add_argument("--runs-dir", default="runs/benchmarks/junk-pool")
    args = parser.parse_args(argv)
    runs = Path(args.runs_dir)
    json_path = RESULTS.with_suffix(".json")
    rows: list[dict[str, Any]] = json.loads(json_path.read_text()) if json_path.exists() else []
    plans = [("junk", "ssl"), ("junk", "baseline")] + ([("clean", "ssl")] if args.clean else [])
    for seed in args.seeds:
        for pool, mode in plans:
            dataset, foreign = write_pool(runs / "data", args.labels_per_class, seed, with_junk=pool == "junk")
            out = runs / f"{pool}-{mode}-{args.labels_per_class}-seed{seed}"
            row = {"pool": pool, "mode": mode, "labels_per_class": args.labels_per_class, "seed": seed}
            row.update(run(dataset, out, seed, mode == "baseline", args.steps))
            if pool == "junk" and mode == "ssl":
                row.update(realness_report(out / "model", dataset, foreign))
            rows = [r for r in rows if (r["pool"], r["mode"], r["labels_per_class"], r["seed"]) !=
                    (pool, mode, args.labels_per_class, seed)] + [row]  # fmt: skip
            json_path.write_text(json.dumps(rows, indent=2) + "\n")
            RESULTS.with_suffix(".md").write_text(summarise(rows))
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
