"""Data-dependent initialisation of weight-normalised layers (Salimans & Kingma 2016, section 3).

The reference improved-GAN code initialises every weight-normalised layer from one batch of data so that
its pre-activations start with zero mean and unit variance; without it a deep ReLU MLP starts with
activations that shrink layer by layer and the unsupervised loss trains much more slowly.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize


def _is_weight_normalised(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, nn.Conv2d)) and parametrize.is_parametrized(module, "weight")


@torch.no_grad()
def initialise_weight_norm_from_data(
    network: nn.Module, images: torch.Tensor, output_layer: nn.Module | None = None, output_scale: float = 0.1
) -> None:
    """One forward pass; each weight-normalised layer rescales its gain g and bias b so that its output on
    ``images`` has per-unit mean 0 and std 1 (``output_scale`` for ``output_layer``: the reference uses 0.1
    on the classifier head so the first logits are small)."""

    def rescale(module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        reduce_dims = [d for d in range(output.dim()) if d != 1]  # per output unit / channel
        mean = output.mean(dim=reduce_dims)
        std = output.std(dim=reduce_dims) + 1e-6
        scale = (output_scale if module is output_layer else 1.0) / std
        # weight = g * v / ||v||: scaling g scales the output of that unit linearly.
        gain: torch.Tensor = module.parametrizations.weight.original0  # type: ignore[union-attr, assignment]
        gain.mul_(scale.view((-1,) + (1,) * (gain.dim() - 1)))  # g is (out, 1, ...) for weight_norm(dim=0)
        if module.bias is not None:
            module.bias.sub_(mean).mul_(scale)  # type: ignore[operator]
        shape = [1, -1] + [1] * (output.dim() - 2)
        return (output - mean.view(shape)) * scale.view(shape)

    hooks = [m.register_forward_hook(rescale) for m in network.modules() if _is_weight_normalised(m)]
    try:
        network(images)
    finally:
        for hook in hooks:
            hook.remove()
