"""On a CUDA machine (marked gpu; scripts/gpu-check.sh runs them there): the conv recipes train in bf16 with
channels_last, and the model directory they write gives the same answers on the CPU the server may run on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model import load_model_dir
from model.imaging import pixels_to_tensor
from training import cli

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (scripts/gpu-check.sh)"),
]


def write_colour_npz(directory: Path, count: int = 600) -> Path:
    """Two learnable colour classes of 32x32: reddish and bluish noise."""
    rng = np.random.default_rng(0)
    labels = np.arange(count) % 2
    centres = np.where(labels[:, None] == 0, [200, 40, 40], [40, 40, 200])  # (N, 3)
    images = np.clip(rng.normal(centres[:, :, None, None], 40, size=(count, 3, 32, 32)), 0, 255).astype(np.uint8)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "colour.npz"
    np.savez(path, x_train=images[:500], y_train=labels[:500], x_test=images[500:], y_test=labels[500:])
    return path


@pytest.mark.parametrize("architecture", ["conv", "conv-cpu"])
def test_conv_recipes_train_on_cuda_and_load_on_the_cpu(
    tmp_path: Path, architecture: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_colour_npz(tmp_path / "data")
    out = tmp_path / "run"
    args = ["--dataset", str(data), "--labels-per-class", "10", "--architecture", architecture,
            "--device", "cuda", "--precision", "bf16", "--steps", "200", "--batch-size", "50",
            "--out", str(out), "--no-progress"]  # fmt: skip
    assert cli.main(args) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["test_accuracy"] > 0.9  # two colours: chance is 0.5
    on_gpu, on_cpu = load_model_dir(out / "model", "cuda"), load_model_dir(out / "model", "cpu")
    assert on_gpu.card.training["device"].startswith("cuda") and on_gpu.card.training["precision"] == "bf16"
    images = pixels_to_tensor(torch.tensor(np.load(data)["x_test"][:32]))
    with torch.no_grad():
        gpu_logits = on_gpu.discriminator(images.cuda()).cpu()
        cpu_logits = on_cpu.discriminator(images)
    torch.testing.assert_close(gpu_logits, cpu_logits, rtol=1e-3, atol=1e-3)
