"""torchrun + DistributedDataParallel on the CPU (gloo): two processes train one model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_trainer import rounds_logged, train_args, write_bars_dataset

from model import load_model_dir


def torchrun(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "training", *args, "--device", "cpu"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_two_cpu_processes_train_resume_and_agree_on_the_weights(tmp_path: Path) -> None:
    data = write_bars_dataset(tmp_path / "bars", train_count=1600)
    out = tmp_path / "run"
    first = torchrun(*train_args(data, out, "--steps", "28", "--round-steps", "14"))
    # Rank 0 alone writes: one line per round, one model directory, no per-rank files.
    assert rounds_logged(out) == [1, 2]
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "metrics.jsonl",
        "model",
        "report.html",
        "samples",
        "state",
    ]
    checksums = re.findall(r"rank (\d) of 2: discriminator checksum (\S+)", first.stderr)
    assert sorted(rank for rank, _ in checksums) == ["0", "1"]
    assert checksums[0][1] == checksums[1][1], checksums  # DDP kept the ranks' weights identical

    # Each rank runs half the steps of a pass: 1400 unlabelled images / (batch 50 * 2 ranks) = 14 steps.
    torchrun(*train_args(data, out, "--resume", "--epochs", "3"))
    assert rounds_logged(out) == [1, 2, 3]
    card = load_model_dir(out / "model").card
    assert card.metrics["test_accuracy"] > 0.6  # chance is 0.25
