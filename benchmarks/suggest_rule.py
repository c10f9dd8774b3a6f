"""The figures behind the suggestion rule's constants (model/suggest.py): what each part of the rule does to
100 picks from a Fashion-MNIST pool with junk and near-duplicates mixed in, scored by one trained model.

The pool: the training split, plus 500 junk images (200 uniform noise, 50 black, 50 white, 50 grey, 150
inverted training images: 0.8% of the pool) and 500 near-duplicates (copies, with pixel noise of +-3, of
images among the 2,000 the model is least sure of). Reported per strategy: junk picked, near-duplicate pairs
picked (an image and its copy), classes covered (true labels), the largest share of one class and of one
confusion pair, and how many picks the model gets wrong. Plus the realness of real and junk images, and the
feature similarity of copies against the nearest distinct image. No training: minutes on one CPU core. What
the picks are worth after re-training is measured by benchmarks/labelling_loop.py.

    python benchmarks/suggest_rule.py                       # the bundled model
    python benchmarks/suggest_rule.py --model runs/x/model  # another Fashion-MNIST model
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from model import BUNDLED_MODEL_DIR, load_model_dir
from model.suggest import (
    MIN_REALNESS,
    ImageScores,
    confusion_pairs,
    entropy_uncertainty,
    margin_uncertainty,
    rank_for_labelling,
    score_images,
)
from training.readers import load_dataset

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
COUNT = 100


def junk_images(train: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    shape = train.shape[1:]
    return {
        "noise": rng.integers(0, 256, (200, *shape), dtype=np.uint8),
        "black": np.zeros((50, *shape), np.uint8),
        "white": np.full((50, *shape), 255, np.uint8),
        "grey": np.full((50, *shape), 128, np.uint8),
        "inverted": 255 - train[rng.choice(len(train), 150, replace=False)],
    }


def copies(images: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Near-duplicates of ``images`` as a camera or an export would make them."""
    wide = images.astype(np.int16)
    return {
        "pixel noise +-3": np.clip(wide + rng.integers(-3, 4, wide.shape), 0, 255).astype(np.uint8),
        "brightness x0.9": np.clip(np.round(wide * 0.9), 0, 255).astype(np.uint8),
        "shifted 1 pixel": np.roll(images, 1, axis=3),
        "mirrored": images[..., ::-1].copy(),
    }


def score_all(discriminator: Any, images: np.ndarray) -> ImageScores:
    return ImageScores.concatenate(
        [score_images(discriminator, images[s : s + 2000]) for s in range(0, len(images), 2000)]
    )


def unit(features: np.ndarray) -> np.ndarray:
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def similarity_report(discriminator: Any, train: np.ndarray, unsure: np.ndarray, rng: np.random.Generator) -> dict:
    """Cosine similarity of D's features: copies vs their originals, and each unsure image vs its nearest
    other unsure image (quantiles 5%, 50%, 95%)."""
    originals = train[rng.choice(unsure, 300, replace=False)]
    base = unit(score_all(discriminator, originals).features)  # type: ignore[arg-type]
    report = {}
    for name, variant in copies(originals, rng).items():
        similarity = (base * unit(score_all(discriminator, variant).features)).sum(1)  # type: ignore[arg-type]
        report[name] = np.quantile(similarity, [0.05, 0.5, 0.95]).round(3).tolist()
    pool = unit(score_all(discriminator, train[unsure]).features)  # type: ignore[arg-type]
    nearest = pool @ pool.T
    np.fill_diagonal(nearest, -1.0)
    report["nearest distinct unsure image"] = np.quantile(nearest.max(1), [0.05, 0.5, 0.95]).round(3).tolist()
    return report


def pick_stats(picks: np.ndarray, labels: np.ndarray, source: np.ndarray, scores: ImageScores) -> dict[str, Any]:
    """``labels``: true class, -1 for junk; ``source``: the training image a pool image is (a copy of)."""
    real = labels[picks] >= 0
    classes = np.bincount(labels[picks][real], minlength=10)
    sources = source[picks][real]
    predicted = scores.probabilities[picks].argmax(1)
    _, pair_counts = np.unique(confusion_pairs(scores.probabilities[picks]), axis=0, return_counts=True)
    return {
        "junk": int((~real).sum()),
        "duplicate pairs": int(len(sources) - len(np.unique(sources))),
        "classes": int((classes > 0).sum()),
        "largest class": int(classes.max()),
        "largest pair": int(pair_counts.max()),
        "model wrong": int((predicted[real] != labels[picks][real]).sum()),
    }


def strategies(scores: ImageScores, rng: np.random.Generator) -> dict[str, np.ndarray]:
    margin_only = {"min_realness": 0.0, "duplicate_similarity": 2.0, "pair_share": 1.0}
    entropy = np.where(scores.realness < MIN_REALNESS, -1.0, entropy_uncertainty(scores.probabilities))
    return {
        "random": rng.choice(len(scores), COUNT, replace=False),
        "entropy": np.argsort(-entropy_uncertainty(scores.probabilities), kind="stable")[:COUNT],
        "entropy, junk cut": np.argsort(-entropy, kind="stable")[:COUNT],
        "margin": rank_for_labelling(scores, COUNT, **margin_only).picks,
        "margin, junk cut": rank_for_labelling(scores, COUNT, duplicate_similarity=2.0, pair_share=1.0).picks,
        "margin, junk cut, pair cap": rank_for_labelling(scores, COUNT, duplicate_similarity=2.0).picks,
        "margin, junk cut, duplicates": rank_for_labelling(scores, COUNT, pair_share=1.0).picks,
        "the rule (all three)": rank_for_labelling(scores, COUNT).picks,
    }


def measure(model_dir: Path, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    discriminator = load_model_dir(model_dir).discriminator
    train, test = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    train_scores = score_all(discriminator, train.images)
    unsure = np.argsort(-margin_uncertainty(train_scores.probabilities), kind="stable")[:2000]
    junk = junk_images(train.images, rng)
    copied = rng.choice(unsure, 500, replace=False)
    duplicates = copies(train.images[copied], rng)["pixel noise +-3"]
    pool = np.concatenate([train.images, duplicates, *junk.values()])
    labels = np.concatenate([train.labels, train.labels[copied], np.full(500, -1)])
    source = np.concatenate([np.arange(len(train.labels)), copied, np.full(500, -1)])
    scores = ImageScores.concatenate([train_scores, score_all(discriminator, pool[len(train.images) :])])
    realness = {"train": train_scores.realness, "test": score_all(discriminator, test.images).realness}
    realness |= {name: score_all(discriminator, images).realness for name, images in junk.items()}
    return {
        "model": str(model_dir.resolve().relative_to(ROOT)) if ROOT in model_dir.resolve().parents else str(model_dir),
        "realness quantiles (0, 1%, 5%, 50%)": {
            name: np.quantile(values, [0, 0.01, 0.05, 0.5]).round(4).tolist() for name, values in realness.items()
        },
        "share of real training images below 0.5": round(float((train_scores.realness < 0.5).mean()), 4),
        "feature similarity (5%, 50%, 95%)": similarity_report(discriminator, train.images, unsure, rng),
        "picks": {name: pick_stats(picks, labels, source, scores) for name, picks in strategies(scores, rng).items()},
    }


def markdown(result: dict[str, Any], command: str) -> str:
    lines = ["# The suggestion rule: what each part does to 100 picks", "", f"Written by `{command}`.", ""]
    lines += [f"Model: `{result['model']}`. Pool: Fashion-MNIST's training split, 500 junk images, 500 near-copies"]
    lines += [
        "(benchmarks/suggest_rule.py docstring).",
        "",
        "| strategy | " + " | ".join(next(iter(result["picks"].values()))),
    ]
    lines[-1] += " |"
    lines += ["|---" * (1 + len(next(iter(result["picks"].values())))) + "|"]
    for name, stats in result["picks"].items():
        lines.append(f"| {name} | " + " | ".join(str(value) for value in stats.values()) + " |")
    lines += [
        "",
        "Junk: picks among the 500 junk images. Duplicate pairs: an image and its near-copy both picked. Classes,",
    ]
    lines += ["largest class: over the picks' true labels. Largest pair: the most picks sharing one confusion pair"]
    lines += ["(the two most probable classes). Model wrong: picks whose predicted class is not the true one."]
    lines += ["", "Realness D(x), quantiles 0 / 1% / 5% / 50%:", ""]
    for name, values in result["realness quantiles (0, 1%, 5%, 50%)"].items():
        lines.append(f"- {name}: {', '.join(f'{value:.4f}' for value in values)}")
    lines += ["", f"Share of real training images below 0.5: {result['share of real training images below 0.5']:.2%}."]
    lines += ["", "Cosine similarity of D's features, quantiles 5% / 50% / 95%: 300 copies of each kind against their"]
    lines += ["originals, and each of the 2,000 images the model is least sure of against its nearest other one:", ""]
    for name, values in result["feature similarity (5%, 50%, 95%)"].items():
        lines.append(f"- {name}: {', '.join(f'{value:.3f}' for value in values)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=BUNDLED_MODEL_DIR, help="a Fashion-MNIST model directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "suggest_rule")
    args = parser.parse_args(argv)
    result = measure(args.model, args.seed)
    command = " ".join(["python benchmarks/suggest_rule.py", *(sys.argv[1:] if argv is None else argv)])
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result, command))
    print(markdown(result, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
