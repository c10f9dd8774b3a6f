"""The run directory: everything one training run writes, owned here as ``model/directory.py`` owns a model
directory (docs/design.md, Training run directory)::

    config.json            the resolved configuration of the run (``TrainConfig``)
    metrics.jsonl          one JSON line per round: step, passes, losses, realness, held-out accuracy, seconds
    samples/round_NNN.png  a grid of generator samples from a fixed noise batch, per round
    model/                 the kept model directory (safetensors + model.json): the final one, or the best
                           on held-out labels
    state/training.pt      the resumable training state (weights, optimisers, EMA, RNG, position)

Every file is written atomically (temp file + rename), so a run killed at any moment leaves the previous
version of each file intact. The state is a torch file of tensors, numbers and dicts only, loaded with
``weights_only=True``: loading it never runs pickled code.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch

from model import Discriminator, Generator, ModelCard, save_model_dir
from model.directory import atomic_write_bytes
from training.config import TrainConfig
from training.readers import DataError


class RunDirectory:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def state_path(self) -> Path:
        return self.path / "state" / "training.pt"

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    def sample_path(self, round_index: int) -> Path:
        return self.path / "samples" / f"round_{round_index:03d}.png"

    def holds_run(self) -> bool:
        """Whether a run has saved its state here (a new run must not overwrite it)."""
        return self.state_path.exists()

    # --- config.json
    def write_config(self, config: TrainConfig) -> None:
        atomic_write_bytes(self.config_path, config.to_json().encode())

    def read_config(self) -> TrainConfig:
        if not self.config_path.is_file():
            raise DataError(f"{self.config_path} not found: nothing to resume in {self.path}")
        return TrainConfig.from_json(self.config_path.read_text(), str(self.config_path))

    # --- metrics.jsonl
    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics_path, "a") as log:
            log.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines()]

    def truncate_metrics(self, last_round: int) -> None:
        """Drop log lines for rounds after ``last_round`` (a resumed run repeats them)."""
        if not self.metrics_path.exists():
            return
        kept = [line for line in self.metrics_path.read_text().splitlines() if json.loads(line)["round"] <= last_round]
        atomic_write_bytes(self.metrics_path, "".join(line + "\n" for line in kept).encode())

    # --- samples/, model/
    def write_samples(self, round_index: int, png: bytes) -> None:
        atomic_write_bytes(self.sample_path(round_index), png)

    def write_model(self, discriminator: Discriminator, generator: Generator, card: ModelCard) -> None:
        save_model_dir(self.model_dir, discriminator, generator, card)

    # --- state/training.pt
    def save_state(self, state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.state_path, buffer.getvalue())

    def load_state(self, map_location: torch.device | str = "cpu") -> dict[str, Any]:
        if not self.state_path.is_file():
            raise FileNotFoundError(f"no training state at {self.state_path}: nothing to resume")
        return torch.load(self.state_path, map_location=map_location, weights_only=True)  # type: ignore[no-any-return]
