"""The exponential moving average of the discriminator's weights: the model that is evaluated and shipped
(docs/design.md, Algorithm)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


class WeightEMA:
    """Bias-corrected EMA, as Adam corrects its moments: after t updates it is the decay-weighted mean of the
    t weights seen, with no weight left on the random initial ones (a plain EMA started from a copy keeps
    decay^t of them: 58% after a 550-step epoch at decay 0.999). The update count is a Python int, so an
    update costs no host-device sync."""

    def __init__(self, network: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.averaged = AveragedModel(network, multi_avg_fn=self._average, use_buffers=True)

    @property
    def module(self) -> nn.Module:
        return self.averaged.module

    def update(self, network: nn.Module, updates: int) -> None:
        """Fold ``network``'s current weights in as the ``updates``-th update (1 = the first)."""
        self.updates = updates
        self.averaged.update_parameters(network)

    def _average(
        self,
        averaged: tuple[torch.Tensor, ...] | list[torch.Tensor],
        current: tuple[torch.Tensor, ...] | list[torch.Tensor],
        _num_averaged: torch.Tensor | int,
    ) -> None:
        decay, t = self.decay, self.updates
        step_decay = decay * (1 - decay ** (t - 1)) / (1 - decay**t)
        for average, value in zip(averaged, current, strict=True):
            average.lerp_(value, 1 - step_decay)

    def state_dict(self) -> dict[str, Any]:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state)
