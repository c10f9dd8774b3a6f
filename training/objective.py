"""What one optimisation step does: the phases of the semi-supervised GAN, and the labels-only baseline.

Each phase states its objective in its docstring (docs/design.md, Algorithm); the loss formulas are in
``training.losses``. The trainer only sequences steps; it does not know what a step optimises.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import nn

from model import Discriminator, Generator
from training.config import TrainConfig
from training.losses import feature_matching_loss, supervised_loss, unsupervised_loss

Autocast = Callable[[], AbstractContextManager[None]]


@dataclass(frozen=True)
class Batch:
    """One step's images as the networks take them: float pixels in [0, 1], (B, C, H, W)."""

    labelled: torch.Tensor  # (B, C, H, W)
    targets: torch.Tensor  # (B,) class indices
    unlabelled: torch.Tensor | None = None  # (B, C, H, W): the discriminator phase's x_u
    matching: torch.Tensor | None = None  # (B, C, H, W): the generator phase's independent x_u'


@dataclass(frozen=True)
class StepNetworks:
    """The bare networks, and what a step calls to run them forward: the same modules, or their DDP /
    torch.compile wrappers."""

    discriminator: Discriminator
    generator: Generator
    discriminator_forward: nn.Module
    generator_forward: nn.Module


def _optimise(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


class SemiSupervisedGANObjective:
    """The SSL-GAN step: the discriminator phase, then the generator phase (Salimans et al. 2016)."""

    def __init__(
        self,
        networks: StepNetworks,
        disc_optimizer: torch.optim.Optimizer,
        gen_optimizer: torch.optim.Optimizer,
        *,
        unsup_weight: float,
        fake_noise_fraction: float,
        feature_matching: str,
        autocast: Autocast,
    ) -> None:
        self.networks = networks
        self.disc_optimizer = disc_optimizer
        self.gen_optimizer = gen_optimizer
        self.unsup_weight = unsup_weight
        self.fake_noise_fraction = fake_noise_fraction
        self.feature_matching = feature_matching
        self.autocast = autocast

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        losses = self.discriminator_phase(batch)
        losses["loss_gen"] = self.generator_phase(batch)
        return losses

    def _fakes(self, count: int) -> torch.Tensor:
        """G(z) for ``count`` latents, the first ``fake_noise_fraction`` of them replaced by uniform noise:
        known fakes, so the realness score learns that noise is not real."""
        fake = self.networks.generator_forward(self.networks.generator.sample_latent(count)).detach()
        noise_count = int(count * self.fake_noise_fraction)
        if noise_count:
            fake = torch.cat([torch.rand_like(fake[:noise_count]), fake[noise_count:]])
        return fake

    def discriminator_phase(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Maximise log p(y | x_l) + log D(x_u) + log(1 - D(G(z))): L_D = L_sup + unsup_weight * L_unsup."""
        assert batch.unlabelled is not None
        count = len(batch.labelled)
        with self.autocast():
            fake = self._fakes(count)
            # One forward over the three batches: the discriminator has no batch statistics, so this is the
            # same as three passes, and faster.
            logits = self.networks.discriminator_forward(torch.cat([batch.labelled, batch.unlabelled, fake]))
            logits_labelled, logits_unlabelled, logits_fake = logits.split(count)
            loss_sup = supervised_loss(logits_labelled, batch.targets)
            loss_unsup = unsupervised_loss(logits_unlabelled, logits_fake)
            loss_disc = loss_sup + self.unsup_weight * loss_unsup
        _optimise(self.disc_optimizer, loss_disc)
        return {"loss_sup": loss_sup.detach(), "loss_unsup": loss_unsup.detach()}

    def generator_phase(self, batch: Batch) -> torch.Tensor:
        """Minimise || mean f(x_u') - mean f(G(z)) || (feature matching) against a second, independently
        drawn unlabelled batch. Gradients flow through D to G, but D is not updated: the bare D is used, so
        DDP syncs only G's gradients."""
        assert batch.matching is not None
        discriminator = self.networks.discriminator
        discriminator.requires_grad_(False)
        try:
            with self.autocast():
                with torch.no_grad():
                    features_real = discriminator.forward_features(batch.matching)
                latent = self.networks.generator.sample_latent(len(batch.labelled))
                features_fake = discriminator.forward_features(self.networks.generator_forward(latent))
                loss_gen = feature_matching_loss(features_real, features_fake, self.feature_matching)
            _optimise(self.gen_optimizer, loss_gen)
        finally:
            discriminator.requires_grad_(True)
        return loss_gen.detach()


class LabelsOnlyObjective:
    """The baseline every SSL figure stands beside: the same discriminator, labels and budget, without the
    unlabelled images and the generator."""

    def __init__(self, networks: StepNetworks, disc_optimizer: torch.optim.Optimizer, *, autocast: Autocast) -> None:
        self.networks = networks
        self.disc_optimizer = disc_optimizer
        self.autocast = autocast

    def step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Minimise L_sup = cross_entropy(l(x_l), y)."""
        with self.autocast():
            loss_sup = supervised_loss(self.networks.discriminator_forward(batch.labelled), batch.targets)
        _optimise(self.disc_optimizer, loss_sup)
        return {"loss_sup": loss_sup.detach()}


Objective = SemiSupervisedGANObjective | LabelsOnlyObjective


def build_objective(
    config: TrainConfig,
    networks: StepNetworks,
    disc_optimizer: torch.optim.Optimizer,
    gen_optimizer: torch.optim.Optimizer,
    autocast: Autocast,
) -> Objective:
    """The run's objective: the labels-only baseline with ``--baseline``, else the SSL-GAN."""
    if config.baseline:
        return LabelsOnlyObjective(networks, disc_optimizer, autocast=autocast)
    return SemiSupervisedGANObjective(
        networks,
        disc_optimizer,
        gen_optimizer,
        unsup_weight=config.unsup_weight,
        fake_noise_fraction=config.recipe_value("fake_noise_fraction"),
        feature_matching=config.recipe_value("feature_matching"),
        autocast=autocast,
    )
