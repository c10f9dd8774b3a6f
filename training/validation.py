"""What the run checks after every epoch on the images it holds out: accuracy and realness on the held-out
labelled images, and how well realness tells them from noise (an out-of-distribution check that needs no
outside data)."""

from __future__ import annotations

import numpy as np

from model import Discriminator, realness_from_logits
from training.evaluate import auroc, noise_images, predict_logits


class HeldOutCheck:
    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images = images  # uint8 (N, C, H, W)
        self.labels = labels  # int64 (N,)

    def __call__(self, model: Discriminator, epoch: int) -> dict[str, float]:
        logits = predict_logits(model, self.images)
        accuracy = float((logits.argmax(dim=1).numpy() == self.labels).mean())
        realness = realness_from_logits(logits).numpy()
        noise = noise_images(len(self.images), model.config.image_shape, seed=epoch)
        noise_realness = realness_from_logits(predict_logits(model, noise)).numpy()
        return {
            "val_accuracy": accuracy,
            "val_realness": float(realness.mean()),
            "val_noise_auroc": auroc(realness, noise_realness),
        }
