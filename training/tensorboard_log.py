"""TensorBoard event files of a run (``--tensorboard``): each round's metrics.jsonl scalars, under the same
names, and its sample grid, through ``torch.utils.tensorboard`` into ``RUN_DIR/tensorboard/``.

Off unless asked for: whether a run writes event files should not depend on what happens to be installed (the
dev extra installs tensorboard), and report.html already draws the curves without a server.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from training.readers import DataError

INSTALL_HINT = "pip install 'sgan-service[tensorboard]'"
SAMPLES_TAG = "samples"
NOT_SCALARS = ("round", "step")  # the x axis, not a curve


class TensorBoardLog:
    """Writes one round at a time. The writer opens at the first round written, purging any events from that
    step on: a resumed run repeats the rounds after its saved state, as metrics.jsonl does."""

    def __init__(self, log_dir: Path) -> None:
        if importlib.util.find_spec("tensorboard") is None:
            raise DataError(f"--tensorboard needs the tensorboard package: {INSTALL_HINT}")
        self.log_dir = log_dir
        self._writer: Any = None

    def write_round(self, record: dict[str, Any], sample_grid: np.ndarray | None) -> None:
        """``record``: the round's metrics.jsonl line; ``sample_grid``: the round's uint8 (C, H, W) grid of
        samples (samples/round_NNN.png), None for a labels-only run."""
        step = int(record["step"])
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir), purge_step=step)
        for name, value in record.items():
            if name not in NOT_SCALARS and isinstance(value, (int, float)):
                self._writer.add_scalar(name, value, step)
        if sample_grid is not None:
            self._writer.add_image(SAMPLES_TAG, sample_grid, step, dataformats="CHW")
        self._writer.flush()  # a round is minutes apart: make it visible now, not at the next flush timer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
