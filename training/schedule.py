"""Schedules over the steps of a run: the learning rate (constant, then a linear decay to 0 over the final share
of training, as the reference improved-GAN code decays over its second half) and the ramp-up of the consistency
term's weight."""

from __future__ import annotations

import math
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


@dataclass(frozen=True)
class RampUp:
    """A weight that rises from ~0 to ``weight`` over the first ``fraction`` of training along
    exp(-5 (1 - t)^2), then stays: the Pi-model's ramp-up (Laine & Aila 2017), which keeps the consistency term
    from pulling D's early, still random predictions of the unlabelled images together."""

    weight: float
    total_steps: int
    fraction: float = 0.25

    def value(self, step: int) -> float:
        """The weight at global step ``step`` (0-based)."""
        ramp_steps = self.total_steps * self.fraction
        if self.weight == 0 or step >= ramp_steps:
            return self.weight
        return self.weight * math.exp(-5.0 * (1.0 - step / ramp_steps) ** 2)
