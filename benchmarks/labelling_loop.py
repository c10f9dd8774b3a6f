"""A simulated labelling loop on Fashion-MNIST: are the 100 labels ``sgan-suggest`` asks for worth more than
100 random ones, or 100 chosen by plain entropy? (docs/design.md, What to label next)

Per seed: 10 labels per class drawn with the seed, every other training image unlabelled (label -1 in an .npz,
with the real test split as x_test/y_test); train (round 0). Then three ways to add 100 labels, their true
labels taken from Fashion-MNIST: ``sgan-suggest`` on the round-0 model (the product's rule), 100 unlabelled
images drawn at random, and the 100 with the highest class-probability entropy (no junk cut, no spread).
Re-train from scratch on each 200-label set with the same seed and budget. Realistic protocol: no
validation labels, the final model is kept, the test split is read once per run (sgan-train's default).
Reported: test accuracy per strategy (mean and standard deviation over the seeds), its gain over round 0,
and the rule's per-seed difference with random.

Retired rows (``RETIRED``) record cluster rules tried against the product's, none kept: k-means (k = 100) on
D's unit-length features of the pool's images with realness >= 0.5, then per cluster the least sure image
(``clusters-margin``) or the one nearest the centre (``clusters-typical``), both with scikit-learn's k-means
(three starts) from this script; then ``clusters-typical, own k-means``, the same rule as ``sgan-suggest`` of
commit 66101db (numpy k-means, one k-means++ start), which measured below the margin rule and was reverted.

    python benchmarks/labelling_loop.py --seeds 0 1 2                  # the real table: 12 trainings
    python benchmarks/labelling_loop.py --seeds 0 1 2 --jobs 2         # two trainings side by side
    python benchmarks/labelling_loop.py --seeds 0 1 2 --strategies random   # one strategy; round 0 reused
    python benchmarks/labelling_loop.py --seeds 0 --steps 30 --results /tmp/loop   # a smoke run
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from model import load_model_dir
from model.suggest import entropy_uncertainty
from training.readers import UNLABELLED, ImageDataset, load_dataset
from training.suggest import score_pool

RESULTS = Path(__file__).resolve().parent / "results" / "labelling_loop"
STRATEGIES = ("sgan-suggest", "random", "entropy")
# Rows kept in the results from rules tried beside the product's (module docstring); they are not re-run.
RETIRED = ("clusters-margin", "clusters-typical", "clusters-typical, own k-means")
ROUND_ZERO = "round 0 (10/class)"
INITIAL_LABELS_PER_CLASS = 10
ADDED_LABELS = 100


def write_round(path: Path, train: ImageDataset, test: ImageDataset, labelled: np.ndarray) -> Path:
    """An .npz of the whole training split with only ``labelled`` rows keeping their labels."""
    labels = np.full(len(train.labels), UNLABELLED, dtype=np.int64)
    labels[labelled] = train.labels[labelled]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, x_train=train.images[:, 0], y_train=labels, x_test=test.images[:, 0],
                        y_test=test.labels, class_names=np.array(train.class_names))  # fmt: skip
    return path


def initial_labels(train: ImageDataset, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([
        rng.permutation(np.flatnonzero(train.labels == k))[:INITIAL_LABELS_PER_CLASS]
        for k in range(train.num_classes)
    ]))  # fmt: skip


def train(dataset: Path, out: Path, seed: int, steps: int | None) -> dict[str, Any]:
    """One sgan-train run in its own process (one torch thread unless OMP_NUM_THREADS says otherwise, so that
    runs can go side by side)."""
    command = ["sgan-train", "--dataset", str(dataset), "--seed", str(seed), "--out", str(out), "--no-progress"]
    command += ["--steps", str(steps)] if steps else []
    subprocess.run(["rm", "-rf", str(out)], check=True)
    started = time.perf_counter()
    environment = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    subprocess.run([sys.executable, "-m", "training", *command[1:]], check=True, stdout=subprocess.DEVNULL,
                   env=environment)  # fmt: skip
    card = json.loads((out / "model" / "model.json").read_text())
    return {
        "test_accuracy": card["metrics"]["test_accuracy"],
        "num_labelled": card["training"]["num_labelled"],
        "steps": card["training"].get("budget_steps"),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "command": " ".join(command),
    }


def pick(strategy: str, model_dir: Path, dataset: Path, train_set: ImageDataset, labelled: np.ndarray,
         seed: int, work: Path) -> tuple[np.ndarray, str]:  # fmt: skip
    """The 100 rows to label next by ``strategy``, and the command that chose them."""
    pool = np.setdiff1d(np.arange(len(train_set.labels)), labelled)
    if strategy == "random":
        return np.sort(np.random.default_rng([seed, 1]).choice(pool, ADDED_LABELS, replace=False)), "random"
    if strategy == "entropy":
        scores = score_pool(load_model_dir(model_dir).discriminator, train_set.images[pool], progress=False)
        order = np.argsort(-entropy_uncertainty(scores.probabilities), kind="stable")
        return np.sort(pool[order[:ADDED_LABELS]]), "top-100 entropy"
    out = work / "suggestions.csv"
    command = ["sgan-suggest", str(model_dir), "--dataset", str(dataset), "--count", str(ADDED_LABELS),
               "--out", str(out), "--no-progress"]  # fmt: skip
    subprocess.run([sys.executable, "-m", "training.suggest", *command[1:]], check=True, stdout=subprocess.DEVNULL)
    with out.open(newline="") as stream:
        rows = np.array([int(row["index"]) for row in csv.DictReader(stream)], dtype=np.int64)
    return np.sort(rows), " ".join(command)


def round_zero(args: argparse.Namespace, seed: int, data: tuple[ImageDataset, ImageDataset],
               recorded: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """One seed's round 0 (10 labels per class): trained, or the recorded row when its model is still on disk
    (a rerun that adds strategies re-trains nothing it has)."""
    train_set, test_set = data
    work = args.runs_dir / f"seed{seed}"
    trained = (work / "round0" / "model" / "model.json").exists()
    for row in recorded:
        if trained and (row["seed"], row["strategy"], row["steps"]) == (seed, ROUND_ZERO, args.steps):
            return row
    labelled = initial_labels(train_set, seed)
    round0 = write_round(work / "round0.npz", train_set, test_set, labelled)
    return {"seed": seed, "strategy": ROUND_ZERO, **train(round0, work / "round0", seed, args.steps)}


def round_one_plans(args: argparse.Namespace, seed: int, data: tuple[ImageDataset, ImageDataset]) -> list[dict]:
    """The 200-label datasets of one seed, picked with its round-0 model (not trained yet)."""
    train_set, test_set = data
    work = args.runs_dir / f"seed{seed}"
    labelled = initial_labels(train_set, seed)
    plans = []
    for strategy in args.strategies:
        chosen, how = pick(strategy, work / "round0" / "model", work / "round0.npz", train_set, labelled, seed, work)
        dataset = write_round(work / f"round1-{strategy}.npz", train_set, test_set, np.union1d(labelled, chosen))
        classes = len(np.unique(train_set.labels[chosen]))
        plans.append({"seed": seed, "strategy": strategy, "picked_by": how, "classes_picked": classes,
                      "dataset": dataset, "out": work / f"round1-{strategy}"})  # fmt: skip
    return plans


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def verdict(rows: list[dict[str, Any]]) -> str:
    """Whether the rule beats random by more than the seeds' spread, in one sentence."""
    by_seed = {(row["seed"], row["strategy"]): row["test_accuracy"] for row in rows}
    seeds = sorted({seed for seed, strategy in by_seed if strategy == "sgan-suggest" and (seed, "random") in by_seed})
    if not seeds:
        return "No seed has both sgan-suggest and random results yet."
    differences = [100 * (by_seed[(seed, "sgan-suggest")] - by_seed[(seed, "random")]) for seed in seeds]
    rule = [100 * by_seed[(seed, "sgan-suggest")] for seed in seeds]
    chance = [100 * by_seed[(seed, "random")] for seed in seeds]
    margin, noise = statistics.mean(differences), max(spread(rule), spread(chance))
    beats = margin > noise and all(difference > 0 for difference in differences)
    return (
        f"sgan-suggest minus random: {margin:+.2f} points on average over {len(seeds)} seed(s) (per seed: "
        f"{', '.join(f'{d:+.2f}' for d in differences)}); the seeds' spread is {noise:.2f} points. The rule "
        + ("beats random by more than the spread." if beats else "does NOT beat random by more than the spread.")
    )


def summarise(rows: list[dict[str, Any]], command: str) -> str:
    lines = [
        "# Labelling loop: which 100 labels to add",
        "",
        f"Written by `{command}` (benchmarks/labelling_loop.py, whose docstring gives the protocol). Fashion-MNIST,",
        "10 labels per class, then 100 more chosen by each strategy and a re-train from scratch with the same seed",
        "and budget. No validation labels; the final model is kept; test accuracy on the 10,000 test images in %.",
        "",
        "| steps | strategy | seeds | test accuracy % | gain over round 0 (points) | classes among the 100 |",
        "|---|---|---|---|---|---|",
    ]
    for steps in sorted({row["steps"] for row in rows}):
        for strategy in (ROUND_ZERO, *STRATEGIES, *RETIRED):
            group = [row for row in rows if row["steps"] == steps and row["strategy"] == strategy]
            if not group:
                continue
            accuracy = [100 * row["test_accuracy"] for row in group]
            gain = [100 * row["gain"] for row in group if "gain" in row]
            classes = [row["classes_picked"] for row in group if "classes_picked" in row]
            lines.append(
                f"| {steps} | {strategy} | {len(group)} | {statistics.mean(accuracy):.2f} ± {spread(accuracy):.2f} | "
                + (f"{statistics.mean(gain):+.2f} ± {spread(gain):.2f}" if gain else "")
                + " | "
                + (f"{statistics.mean(classes):.1f}" if classes else "")
                + " |"
            )
        lines += ["", verdict([row for row in rows if row["steps"] == steps]), ""]
    lines += ["## Runs", "", "| seed | strategy | test % | picked by | wall s | command |", "|---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda row: (row["steps"], row["seed"], row["strategy"])):
        lines.append(
            f"| {row['seed']} | {row['strategy']} | {100 * row['test_accuracy']:.2f} | "
            f"{'`' + row['picked_by'] + '`' if 'picked_by' in row else ''} | {row['wall_seconds']:.0f} | "
            f"`{row['command']}` |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, help="the training budget of every run (default: the recipe's)")
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--jobs", type=int, default=1, help="trainings run side by side (one torch thread each)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/benchmarks/labelling-loop"))
    parser.add_argument("--results", type=Path, default=RESULTS, help="results file stem (.md and .json)")
    args = parser.parse_args(argv)
    command = " ".join(["python benchmarks/labelling_loop.py", *(sys.argv[1:] if argv is None else argv)])
    data = (load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test"))
    json_path = args.results.with_suffix(".json")
    rows: list[dict[str, Any]] = json.loads(json_path.read_text()) if json_path.exists() else []

    def record(new: dict[str, Any]) -> None:
        nonlocal rows
        key = (new["seed"], new["strategy"], new["steps"])
        rows = [row for row in rows if (row["seed"], row["strategy"], row["steps"]) != key] + [new]
        args.results.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(rows, indent=2) + "\n")
        args.results.with_suffix(".md").write_text(summarise(rows, command))
        print(json.dumps(new), flush=True)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        firsts = {row["seed"]: row for row in pool.map(lambda seed: round_zero(args, seed, data, rows), args.seeds)}
        for row in firsts.values():
            record(row)
        plans = [plan for seed in args.seeds for plan in round_one_plans(args, seed, data)]
        jobs = [pool.submit(train, plan.pop("dataset"), plan.pop("out"), plan["seed"], args.steps) for plan in plans]
        for plan, job in zip(plans, jobs, strict=True):
            result = job.result()
            record({**plan, **result, "gain": result["test_accuracy"] - firsts[plan["seed"]]["test_accuracy"]})
    print(verdict(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
