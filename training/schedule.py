"""The learning-rate schedule: constant, then a linear decay to 0 over the final share of training (the
reference improved-GAN code decays linearly over its second half)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LinearDecaySchedule:
    base_rate: float
    total_steps: int
    decay_fraction: float = 0.5

    @property
    def decay_start(self) -> float:
        return self.total_steps * (1.0 - self.decay_fraction)

    def rate(self, step: int) -> float:
        """The learning rate of global step ``step`` (0-based)."""
        if step < self.decay_start:
            return self.base_rate
        return self.base_rate * max(0.0, (self.total_steps - step) / max(1.0, self.total_steps - self.decay_start))

    def apply(self, step: int, *optimizers: torch.optim.Optimizer) -> float:
        rate = self.rate(step)
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group["lr"] = rate
        return rate
