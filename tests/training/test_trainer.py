"""The trainer as a user drives it: sgan-train / sgan-eval on small data the tests write, a run killed with
SIGKILL and resumed, Ctrl-C, bad input, and a short end-to-end run on the real Fashion-MNIST."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from model import load_model_dir, read_card
from training import cli, evaluate
from training.runtime import Distributed, cpu_has_native_bf16, use_bf16_autocast
from training.trainer import Trainer

REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def write_bars_dataset(directory: Path, train_count: int = 1200, test_count: int = 300, seed: int = 0) -> Path:
    """A learnable 28x28, 4-class set: class k is a bright horizontal bar in band k, plus noise."""
    rng = np.random.default_rng(seed)

    def make(count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(count) % 4
        images = rng.integers(0, 60, size=(count, 28, 28)).astype(np.uint8)
        for index, label in enumerate(labels):
            row = 3 + 6 * label + rng.integers(0, 3)
            images[index, row : row + 3, 4:24] = 230
        return images, labels.astype(np.int64)

    x_train, y_train = make(train_count)
    x_test, y_test = make(test_count)
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(
        directory / "bars.npz",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        class_names=np.array(["top", "upper", "lower", "bottom"]),
    )
    return directory


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--dataset",
        str(data),
        "--labels-per-class",
        "5",
        "--val-size",
        "200",
        "--batch-size",
        "50",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "training", *args], capture_output=True, text=True, timeout=300, env=_env()
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def rounds_logged(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["round"] for line in path.read_text().splitlines()]


def test_training_writes_a_complete_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_bars_dataset(tmp_path / "bars")
    out = tmp_path / "run"
    # 1000 unlabelled images in batches of 50: 20 steps a pass; 60 steps in rounds of 20.
    assert cli.main(train_args(data, out, "--steps", "60", "--round-steps", "20")) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["test_accuracy"] > 0.6  # chance is 0.25

    assert rounds_logged(out) == [1, 2, 3]
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(record["step"], record["passes"]) for record in logged] == [(20, 1.0), (40, 2.0), (60, 3.0)]
    # What a user without labels can watch: realness of real vs generated images, and predictions settling.
    assert all(record["realness_unlabelled"] > record["realness_generated"] for record in logged[1:])
    assert "unlabelled_changed" not in logged[0] and 0 <= logged[-1]["unlabelled_changed"] <= 1
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["round_001.png", "round_002.png", "round_003.png"]
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "mlp" and config["steps"] == 60

    loaded = load_model_dir(out / "model")
    card = loaded.card
    assert card.class_names == ["top", "upper", "lower", "bottom"]
    assert card.background == "dark"
    assert card.training["mode"] == "semi-supervised"
    assert card.training["labels_per_class"] == 5 and card.training["num_labelled"] == 20
    assert card.training["labelled_per_class"] == {"top": 5, "upper": 5, "lower": 5, "bottom": 5}
    assert card.training["command"][0] == "sgan-train"
    assert card.training["budget_steps"] == 60 and card.training["steps_per_pass"] == 20
    assert card.training["selection"]["rule"] == "validation split"  # --val-size: research mode
    assert 1 <= card.training["selection"]["round"] <= 3
    assert card.metrics["test_accuracy"] == metrics["test_accuracy"]
    assert set(card.metrics["per_class_test_accuracy"]) == set(card.class_names)
    assert card.metrics["validation_accuracy"] == max(json.loads(x)["val_accuracy"] for x in
                                                      (out / "metrics.jsonl").read_text().splitlines())  # fmt: skip


def test_baseline_uses_labels_only(tmp_path: Path) -> None:
    data = write_bars_dataset(tmp_path / "bars")
    out = tmp_path / "baseline"
    assert cli.main(train_args(data, out, "--epochs", "1", "--baseline")) == 0
    card = read_card(out / "model")
    assert card.training["mode"] == "baseline"
    assert card.training["num_unlabelled"] == 0
    assert not (out / "samples").exists()
    assert "loss_unsup" not in json.loads((out / "metrics.jsonl").read_text())


def test_bf16_steps_train_and_are_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_bars_dataset(tmp_path / "bars")
    out = tmp_path / "run"
    assert cli.main(train_args(data, out, "--epochs", "3", "--precision", "bf16")) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["test_accuracy"] > 0.6  # chance is 0.25
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(record["loss_unsup"] > 0 and record["loss_gen"] >= 0 for record in logged)
    card = read_card(out / "model")
    assert card.training["precision"] == "bf16"
    # The saved weights are fp32 whatever the step precision (autocast never touches the parameters).
    weights = load_file(out / "model" / "discriminator.safetensors")
    assert weights and all(t.dtype == torch.float32 for t in weights.values())


def test_network_options_shape_the_networks_and_reach_the_model_card(tmp_path: Path) -> None:
    data = write_bars_dataset(tmp_path / "bars")
    out = tmp_path / "run"
    options = ("--architecture", "conv", "--discriminator", "conv_channels=8,16", "--discriminator=convs_per_block=1",
               "--discriminator=hidden_dropout=0.3", "--generator", "base_channels=16")  # fmt: skip
    assert cli.main(train_args(data, out, "--epochs", "1", *options)) == 0
    # The server's loader rebuilds the narrowed networks from the card alone.
    loaded = load_model_dir(out / "model")
    assert loaded.card.discriminator.conv_channels == (8, 16) and loaded.card.discriminator.convs_per_block == 1
    assert loaded.card.discriminator.hidden_dropout == 0.3 and loaded.card.generator.base_channels == 16
    convs = [m for m in loaded.discriminator.body if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs[:2]] == [8, 16]
    # A resumed run keeps them: they are part of config.json.
    assert json.loads((out / "config.json").read_text())["discriminator_options"]["conv_channels"] == "8,16"


def test_a_saved_state_whose_networks_differ_is_refused_on_resume(tmp_path: Path) -> None:
    """A run begun by a version whose recipe built other networks (simulated by editing its config.json) gets a
    clear error, not a traceback, and its saved state is left as it was."""
    data = write_bars_dataset(tmp_path / "bars", train_count=300, test_count=10)
    out = tmp_path / "run"
    options = ("--architecture", "conv", "--discriminator", "conv_channels=8,16", "--generator", "base_channels=16")
    assert cli.main(train_args(data, out, "--epochs", "1", *options)) == 0
    config_path, state_path = out / "config.json", out / "state" / "training.pt"
    config = json.loads(config_path.read_text())
    config["generator_options"]["base_channels"] = "32"
    config_path.write_text(json.dumps(config))
    saved = state_path.read_bytes()
    result = run_cli("--out", str(out), "--resume", "--epochs", "2", check=False)
    assert result.returncode == 2 and "saved networks differ" in result.stderr and "Traceback" not in result.stderr
    assert state_path.read_bytes() == saved


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--discriminator=hidden_sizez=10", "unknown DiscriminatorConfig fields"),
        ("--discriminator=hidden_sizes=10,x", "hidden_sizes='10,x': expected tuple"),
        ("--generator=latent_size=0.5", "latent_size='0.5': expected int"),
        ("--generator=latent_distribution=cauchy", "unknown latent distribution"),
        ("--discriminator=num_classes=3", "follow the dataset"),
        ("--discriminator=conv_channels", "expected FIELD=VALUE"),
    ],
)
def test_bad_network_options_are_refused_before_training(tmp_path: Path, option: str, message: str) -> None:
    data = write_bars_dataset(tmp_path / "bars", train_count=300, test_count=10)
    result = run_cli(*train_args(data, tmp_path / "run", "--epochs", "1", option), check=False)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "state").exists()


def test_precision_choice() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert use_bf16_autocast(cpu, "bf16") and not use_bf16_autocast(cuda, "fp32")
    assert use_bf16_autocast(cuda, "auto")
    assert use_bf16_autocast(cpu, "auto") == cpu_has_native_bf16()
    with pytest.raises(ValueError, match="unknown precision"):
        use_bf16_autocast(cpu, "fp8")


def test_a_run_killed_with_sigkill_resumes_and_finishes(tmp_path: Path) -> None:
    data = write_bars_dataset(tmp_path / "bars", train_count=2400)
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "training", *train_args(data, out, "--steps", "4000", "--round-steps", "40")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
    )
    try:
        deadline = time.monotonic() + 120
        while len(rounds_logged(out)) < 2 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed; make it longer"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    killed_at = len(rounds_logged(out))
    assert 2 <= killed_at < 100
    # Resume and shorten the run so the test stays fast: the round counter continues, nothing repeats.
    run_cli(*train_args(data, out, "--resume", "--steps", str(40 * (killed_at + 2))))
    logged = rounds_logged(out)
    assert logged == list(range(1, killed_at + 3))
    assert read_card(out / "model").metrics["test_accuracy"] > 0.6


def test_ctrl_c_saves_the_state_and_exits_cleanly(tmp_path: Path) -> None:
    data = write_bars_dataset(tmp_path / "bars", train_count=2400)
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "training", *train_args(data, out, "--steps", "4000", "--round-steps", "40")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    deadline = time.monotonic() + 120
    while not rounds_logged(out) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "--resume" in stderr
    assert (out / "state" / "training.pt").exists()
    assert "Traceback" not in stderr


def test_bad_input_gives_a_clear_message_and_no_traceback(tmp_path: Path) -> None:
    data = write_bars_dataset(tmp_path / "bars")
    too_big = run_cli(*train_args(data, tmp_path / "a", "--val-size", "5000"), check=False)
    assert too_big.returncode == 2 and "Traceback" not in too_big.stderr
    assert "5000" in too_big.stderr

    no_budget = run_cli(*train_args(data, tmp_path / "v", "--steps", "0"), check=False)
    assert no_budget.returncode == 2 and "at least one step" in no_budget.stderr

    too_many_labels = run_cli(*train_args(data, tmp_path / "b", "--labels-per-class", "100000"), check=False)
    assert too_many_labels.returncode == 2 and "Traceback" not in too_many_labels.stderr

    missing = run_cli("--dataset", "kmnist", "--data-dir", str(tmp_path / "nothing"), "--out", str(tmp_path / "c"),
                      check=False)  # fmt: skip
    assert missing.returncode == 2 and "--download" in missing.stderr and str(tmp_path / "nothing") in missing.stderr

    nothing_to_resume = run_cli("--out", str(tmp_path / "never-ran"), "--resume", check=False)
    assert nothing_to_resume.returncode == 2 and "resume" in nothing_to_resume.stderr


def test_an_existing_run_is_not_overwritten_without_resume(tmp_path: Path) -> None:
    data = write_bars_dataset(tmp_path / "bars")
    out = tmp_path / "run"
    assert cli.main(train_args(data, out, "--epochs", "1")) == 0
    before = (out / "model" / "model.json").read_bytes()
    assert cli.main(train_args(data, out, "--epochs", "1")) == 2
    assert (out / "model" / "model.json").read_bytes() == before


def test_sgan_eval_reports_accuracy_confusion_and_ood_auroc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_bars_dataset(tmp_path / "bars")
    out = tmp_path / "run"
    assert cli.main(train_args(data, out, "--epochs", "2")) == 0
    capsys.readouterr()
    assert evaluate.main([str(out / "model"), "--dataset", str(data), "--json", "--ood-dataset", "noise"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["test_accuracy"] == read_card(out / "model").metrics["test_accuracy"]
    assert np.array(report["confusion_matrix"]).sum() == 300
    assert set(report["per_class_accuracy"]) == {"top", "upper", "lower", "bottom"}
    assert 0.0 <= report["ood_auroc"]["noise"] <= 1.0


def test_auroc_matches_its_definition() -> None:
    assert evaluate.auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert evaluate.auroc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0
    assert evaluate.auroc(np.array([1.0, 1.0]), np.array([1.0])) == 0.5  # ties count half
    # Pairs (in > out): (2>1), (2>0), (0.5>0) out of 2*2=4 -> 0.75
    assert evaluate.auroc(np.array([2.0, 0.5]), np.array([1.0, 0.0])) == 0.75


def test_batch_order_depends_on_seed_and_epoch_only() -> None:
    # A resumed run must replay the interrupted epoch's batch order exactly.
    def fake_trainer(seed: int) -> SimpleNamespace:
        return SimpleNamespace(
            config=SimpleNamespace(seed=seed), unlabelled_images=torch.zeros(250), labelled_images=torch.zeros(20),
            device=torch.device("cpu"), distributed=Distributed(),
        )  # fmt: skip

    first = Trainer.epoch_order(fake_trainer(7), 3)  # type: ignore[arg-type]
    again = Trainer.epoch_order(fake_trainer(7), 3)  # type: ignore[arg-type]
    other_epoch = Trainer.epoch_order(fake_trainer(7), 4)  # type: ignore[arg-type]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[1], other_epoch[1])
    labelled, unlabelled, matching = first
    assert len(labelled) == len(unlabelled) == 250
    assert sorted(unlabelled.tolist()) == list(range(250))
    assert np.bincount(labelled.numpy(), minlength=20).min() >= 12  # the labelled set is tiled evenly


@pytest.mark.slow
@pytest.mark.skipif(not REAL_FASHION_MNIST.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_short_run_on_real_fashion_mnist_beats_chance_by_far(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--dataset", "fashion-mnist", "--train-subset", "8000", "--val-size", "1000",
            "--labels-per-class", "10", "--epochs", "6", "--out", str(tmp_path / "run"), "--no-progress"]  # fmt: skip
    assert cli.main(args) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["num_test_images"] == 10000
    assert metrics["test_accuracy"] > 0.55  # chance is 0.10


def test_an_mnist_family_npz_trains_with_the_default_recipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # scikit-learn's bundled 8x8 digits, scaled to 28x28 and written as a user would hand them over:
    # the defaults (the 28x28 MLP recipe) take them with no code change.
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.stack(
        [np.asarray(Image.fromarray((d * 255 / 16).astype(np.uint8)).resize((28, 28))) for d in digits.images]
    )
    order = np.random.default_rng(0).permutation(len(images))
    train, test = order[:1500], order[1500:]
    data = tmp_path / "digits"
    data.mkdir()
    np.savez(data / "digits.npz", x_train=images[train], y_train=digits.target[train],
             x_test=images[test], y_test=digits.target[test])  # fmt: skip
    args = ["--dataset", str(data), "--labels-per-class", "10", "--val-size", "300", "--epochs", "15",
            "--out", str(tmp_path / "run"), "--no-progress"]  # fmt: skip
    assert cli.main(args) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    card = read_card(tmp_path / "run" / "model")
    assert card.discriminator.architecture == "mlp" and card.class_names == [str(k) for k in range(10)]
    assert metrics["test_accuracy"] > 0.4  # chance is 0.10; 180 steps only (see benchmarks for full runs)


def write_colour_photos(root: Path, size: tuple[int, int] = (40, 36)) -> Path:
    """Two classes of colour "photos" (reddish and bluish noise) of an odd size, in train/ and test/ folders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 40), ("test", 8)):
        for name, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = np.clip(rng.normal(colour, 25, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.jpg", quality=90)
    return root


def test_a_folder_of_colour_photos_trains_the_cpu_conv_recipe(tmp_path: Path) -> None:
    # Colour photos of any size: resized to 32x32, and on a CPU the conv net sized for it (conv-cpu).
    photos = write_colour_photos(tmp_path / "photos")
    out = tmp_path / "run"
    args = ["--dataset", str(photos), "--labels-per-class", "4", "--batch-size", "8", "--steps", "6",
            "--out", str(out), "--no-progress"]  # fmt: skip
    assert cli.main(args) == 0
    card = load_model_dir(out / "model").card
    assert card.discriminator.architecture == "conv" and card.image_shape == (3, 32, 32)
    assert card.training["architecture"] == "conv-cpu" and card.training["augment"] == "flip"
    assert card.discriminator.conv_channels == (32, 64) and card.discriminator.convs_per_block == 2
    assert card.class_names == ["blue", "red"] and card.normalization["color_mode"] == "RGB"
    assert card.metrics["num_test_images"] == 16
    # The conv nets train in channels_last on the CPU as on CUDA: it is faster on both.
    trained = torch.load(out / "state" / "training.pt", weights_only=True)["discriminator"]
    conv_weights = [tensor for tensor in trained.values() if tensor.dim() == 4 and tensor.shape[1:] != (1, 1, 1)]
    assert conv_weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights)


def test_image_size_picks_another_size_and_the_networks_follow_it(tmp_path: Path) -> None:
    photos = write_colour_photos(tmp_path / "photos", size=(100, 80))
    out = tmp_path / "run"
    args = ["--dataset", str(photos), "--image-size", "64", "--labels-per-class", "4", "--batch-size", "8",
            "--steps", "2", "--out", str(out), "--no-progress"]  # fmt: skip
    assert cli.main(args) == 0
    card = load_model_dir(out / "model").card
    assert card.image_shape == (3, 64, 64) and card.training["architecture"] == "conv-cpu"
    assert card.discriminator.conv_channels == (32, 64, 64) and card.generator.upsamplings == 4

    odd = run_cli("--dataset", str(photos), "--image-size", "30", "--out", str(tmp_path / "odd"), check=False)
    assert odd.returncode == 2 and "divisible by 4" in odd.stderr and "--image-size" in odd.stderr
    assert not (tmp_path / "odd" / "model").exists()
