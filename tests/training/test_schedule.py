"""The step budget: the learning-rate schedule, steps per pass for pools of any size, and a run stopped in
the middle of its budget that resumes to exactly the weights of an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_trainer import write_bars_dataset

from training.config import TrainConfig
from training.readers import DataError
from training.run import train
from training.schedule import LinearDecaySchedule
from training.trainer import MIN_ROUND_STEPS, Budget, Trainer, network_configs


def test_the_learning_rate_is_constant_then_decays_linearly_to_zero() -> None:
    schedule = LinearDecaySchedule(base_rate=1e-3, total_steps=1000, decay_fraction=0.4)
    assert schedule.decay_start == 600
    assert schedule.rate(0) == schedule.rate(599) == 1e-3
    assert schedule.rate(800) == pytest.approx(0.5e-3)
    assert schedule.rate(999) == pytest.approx(1e-3 / 400)
    assert schedule.rate(1000) == 0.0


def test_the_decay_share_is_the_recipes_unless_given() -> None:
    def decay(image_shape: tuple[int, int, int], on_cuda: bool, **options: object) -> float:
        config = TrainConfig(dataset="x", out="y", **options).resolved(image_shape, on_cuda)  # type: ignore[arg-type]
        return float(config.recipe_value("lr_decay_fraction"))

    assert decay((1, 28, 28), on_cuda=False) == 0.5  # mlp: the reference's last half
    assert decay((3, 32, 32), on_cuda=True) == 0.5  # conv
    assert decay((3, 32, 32), on_cuda=False) == 0.2  # conv-cpu: the last fifth
    assert decay((3, 32, 32), on_cuda=False, lr_decay_fraction=0.7) == 0.7


def budget_for(pool: int, **options: object) -> Budget:
    config = TrainConfig(dataset="x", out="y", **options).resolved((1, 28, 28), on_cuda=False)  # type: ignore[arg-type]
    return Budget.of(config, steps_per_pass=max(1, pool // config.batch_size))


def test_small_pools_cycle_more_often_and_large_ones_are_not_cut_short() -> None:
    small, usual = budget_for(5_000), budget_for(55_000)
    assert small.total_steps == usual.total_steps == 27_500  # the recipe's budget, whatever the pool
    assert (small.steps_per_pass, usual.steps_per_pass) == (50, 550)
    assert (small.passes(small.total_steps), usual.passes(usual.total_steps)) == (550.0, 50.0)
    # A round is a pass, but at least MIN_ROUND_STEPS: a small pool does not log every few seconds.
    assert (small.round_steps, usual.round_steps) == (MIN_ROUND_STEPS, 550)
    assert budget_for(5_000, epochs=3).total_steps == 150  # --epochs counts passes
    assert budget_for(5_000, steps=1234).rounds == 3
    with pytest.raises(DataError, match="at least one step"):
        budget_for(5_000, steps=0)


def _config(data: Path, out: Path) -> TrainConfig:
    return TrainConfig(
        dataset=str(data), out=str(out), labels_per_class=5, batch_size=50, steps=50, round_steps=20,
        progress=False, precision="fp32",
    )  # fmt: skip


def test_a_run_stopped_mid_budget_resumes_to_the_same_weights(tmp_path: Path) -> None:
    data = write_bars_dataset(tmp_path / "bars", train_count=800, test_count=40)
    train(_config(data, tmp_path / "whole"))

    def stop_at_step_27(trainer: Trainer) -> None:
        step = trainer.step

        def counting_step(global_step: int) -> dict[str, torch.Tensor]:
            if global_step == 27:
                trainer.stop_requested = True  # what Ctrl-C does
            return step(global_step)

        trainer.step = counting_step  # type: ignore[method-assign]

    stopped = train(_config(data, tmp_path / "split"), on_trainer=stop_at_step_27)
    assert stopped == {"stopped": True, "step": 28}  # mid-round (rounds end at 20, 40, 50) and mid-decay
    train(_config(data, tmp_path / "split"), resume=True)
    whole = load_file(tmp_path / "whole" / "model" / "discriminator.safetensors")
    resumed = load_file(tmp_path / "split" / "model" / "discriminator.safetensors")
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[name], resumed[name]) for name in whole)


def test_the_reference_recipe_sets_its_options_and_flags_beside_it_win() -> None:
    from training.cli import build_parser
    from training.config import apply_preset, config_from_args

    def parsed(*argv: str) -> TrainConfig:
        parser = build_parser()
        apply_preset(parser, list(argv))
        return config_from_args(parser.parse_args(list(argv)), ["sgan-train", *argv])

    reference = parsed("--dataset", "mnist", "--out", "o", "--recipe", "improved-gan-mnist")
    assert reference.learning_rate == 3e-3 and reference.steps == 180_000 and reference.fake_noise_fraction == 0.0
    assert reference.lr_decay_fraction == 0.0 and reference.ema_decay == 0.9999  # constant lr, slow average
    assert reference.discriminator_options == {"hidden_sizes": "1000,500,250,250,250"}
    shorter = parsed("--recipe", "improved-gan-mnist", "--steps", "600", "--dataset", "mnist", "--out", "o")
    assert shorter.steps == 600 and shorter.learning_rate == 3e-3
    assert parsed("--dataset", "mnist", "--out", "o").learning_rate is None  # no recipe: the image size's default


@pytest.mark.parametrize(
    ("shape", "on_cuda", "architecture", "steps", "augment", "feature_matching"),
    [
        ((1, 28, 28), False, "mlp", 27_500, "none", "l2"),
        ((1, 28, 28), True, "mlp", 27_500, "none", "l2"),
        ((3, 32, 32), False, "conv-cpu", 6_800, "flip", "l1"),
        ((3, 32, 32), True, "conv", 15_000, "none", "l1"),  # the reference's CIFAR-10 code
        ((1, 64, 64), False, "conv-cpu", 6_800, "flip", "l1"),
    ],
)
def test_the_recipe_follows_the_image_shape_and_the_device(
    shape: tuple[int, int, int], on_cuda: bool, architecture: str, steps: int, augment: str, feature_matching: str
) -> None:
    config = TrainConfig(dataset="x", out="y").resolved(shape, on_cuda=on_cuda)
    assert (config.architecture, config.steps, config.augment) == (architecture, steps, augment)
    assert config.feature_matching == feature_matching
    # Flags given beside the recipe win over it.
    chosen = TrainConfig(dataset="x", out="y", architecture="conv", augment="flip", steps=10).resolved(shape, False)
    assert (chosen.architecture, chosen.steps, chosen.augment, chosen.learning_rate) == ("conv", 10, "flip", 3e-4)


def test_the_reference_generator_on_cuda_and_the_measured_small_one_on_a_cpu() -> None:
    """`conv` keeps the reference's CIFAR-10 generator (U(0,1) latents, 512 channels at 4x4); `conv-cpu` keeps
    the 128-channel one with normal latents that its CIFAR-10 figures were measured with."""
    shape = (3, 32, 32)
    _, reference = network_configs(TrainConfig(dataset="x", out="y").resolved(shape, on_cuda=True), 10, shape)
    _, cpu_sized = network_configs(TrainConfig(dataset="x", out="y").resolved(shape, on_cuda=False), 10, shape)
    assert (reference.base_channels, reference.latent_distribution) == (512, "uniform")
    assert (cpu_sized.base_channels, cpu_sized.latent_distribution) == (128, "normal")
