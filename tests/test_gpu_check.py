"""scripts/gpu-check.sh --dry-run: every step of the GPU check, on the CPU and tiny data, so that the minutes of a
lent GPU machine are not spent finding a typo."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_gpu_check_runs_every_step_in_a_dry_run(tmp_path: Path) -> None:
    results_before = {path: path.stat().st_mtime for path in (ROOT / "benchmarks" / "results").iterdir()}
    delivered = tmp_path / "out"  # the device tool's $OUT: what comes back from the GPU machine
    delivered.mkdir()
    env = {**os.environ, "GPU_CHECK_WORK": str(tmp_path), "OUT": str(delivered), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        ["bash", "scripts/gpu-check.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    speed = json.loads((tmp_path / "results" / "train_speed.json").read_text())
    assert {(row["architecture"], row["compile"]) for row in speed} >= {("conv-cpu", False), ("conv-cpu", True)}
    layouts = {
        (row["memory_format"], row["memory_format_forced"]) for row in speed if row["architecture"] == "conv-cpu"
    }
    assert layouts == {("channels_last", False), ("contiguous", True)}
    rows = json.loads((tmp_path / "results" / "accuracy.json").read_text())
    assert sorted(row["mode"] for row in rows) == ["baseline", "ssl"]
    for row in rows:
        assert row["protocol"] == "final model, no validation labels" and row["steps"] >= 1
        assert "--architecture conv " in row["command"] and 0 <= row["ood_auroc_foreign"] <= 1
    # Results and the log come back through $OUT, flat (the device tool returns no deeper folders).
    names = {path.name for path in delivered.iterdir()}
    assert names == {"train_speed.json", "train_speed.md", "accuracy.json", "accuracy.md", "gpu-check.log"}
    assert "3. the reference recipe" in (delivered / "gpu-check.log").read_text()
    # The dry run writes nothing into the committed results.
    assert {path: path.stat().st_mtime for path in (ROOT / "benchmarks" / "results").iterdir()} == results_before
