"""What the run measures after every round, and how it chooses the model it ships (docs/design.md, Evaluation
protocol).

- ``UnlabelledSignals``: what a user can watch with no labels at all: the realness of real unlabelled images
  against generated ones and against noise, and how many unlabelled images changed predicted class since the
  previous round (a model that stopped moving has stopped learning).
- ``HeldOutCheck``: accuracy on held-out labelled images, when there are any.
- ``ModelSelection``: the final EMA model by default; the best round on the held-out labels when the user held
  some out (``--val-labels-per-class``) or, in research mode, on a labelled validation split (``--val-size``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from model import Discriminator, realness_from_logits
from training.evaluate import auroc, noise_images, predict_logits

SIGNAL_IMAGES = 2000  # unlabelled images the signals are computed on: a fixed, seeded subset


class UnlabelledSignals:
    def __init__(self, unlabelled: np.ndarray, seed: int) -> None:
        count = min(SIGNAL_IMAGES, len(unlabelled))
        self.images = unlabelled[np.sort(np.random.default_rng([seed, 1]).permutation(len(unlabelled))[:count])]
        self.previous_predictions: torch.Tensor | None = None

    def __call__(self, model: Discriminator, generated: torch.Tensor | None, round_index: int) -> dict[str, float]:
        """``generated``: uint8 generator samples of this round (None: no generator, as in the baseline)."""
        signals: dict[str, float] = {}
        if not len(self.images):
            return signals
        logits = predict_logits(model, self.images)
        realness = realness_from_logits(logits).numpy()
        noise = noise_images(len(self.images), model.config.image_shape, seed=round_index)
        predictions = logits.argmax(dim=1)
        if self.previous_predictions is not None:
            signals["unlabelled_changed"] = float((predictions != self.previous_predictions).float().mean())
        self.previous_predictions = predictions
        signals["realness_unlabelled"] = float(realness.mean())
        if generated is not None:
            signals["realness_generated"] = float(realness_from_logits(predict_logits(model, generated)).mean())
        signals["unlabelled_noise_auroc"] = auroc(realness, realness_from_logits(predict_logits(model, noise)).numpy())
        return signals


class HeldOutCheck:
    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images = images  # uint8 (N, C, H, W)
        self.labels = labels  # int64 (N,)

    def __call__(self, model: Discriminator) -> dict[str, float]:
        logits = predict_logits(model, self.images)
        return {
            "val_accuracy": float((logits.argmax(dim=1).numpy() == self.labels).mean()),
            "val_realness": float(realness_from_logits(logits).mean()),
        }


class ModelSelection:
    """Which round's model the run keeps. ``rule``: ``final``, ``held-out labels`` or ``validation split``."""

    def __init__(self, held_out: HeldOutCheck | None, rule: str, held_out_per_class: int = 0) -> None:
        self.held_out = held_out
        self.rule = rule
        self.held_out_per_class = held_out_per_class
        self.best_accuracy = -1.0
        self.best_round = 0

    @property
    def keeps_final(self) -> bool:
        return self.held_out is None

    def evaluate(self, model: Discriminator) -> dict[str, float]:
        return self.held_out(model) if self.held_out is not None else {}

    def is_best(self, record: dict[str, Any]) -> bool:
        """Whether this round's model should replace the kept one (the final rule keeps every round's, the
        last one written being the final model)."""
        if self.keeps_final:
            self.best_round = record["round"]
            return True
        if record["val_accuracy"] <= self.best_accuracy:
            return False
        self.best_accuracy, self.best_round = record["val_accuracy"], record["round"]
        return True

    def card(self) -> dict[str, Any]:
        facts: dict[str, Any] = {"rule": self.rule, "round": self.best_round}
        if self.held_out is not None:
            facts.update(held_out_images=len(self.held_out.labels), accuracy=self.best_accuracy)
        if self.held_out_per_class:
            facts["held_out_labels_per_class"] = self.held_out_per_class
        return facts

    def state_dict(self) -> dict[str, Any]:
        return {"best_accuracy": self.best_accuracy, "best_round": self.best_round}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_accuracy, self.best_round = float(state["best_accuracy"]), int(state["best_round"])
