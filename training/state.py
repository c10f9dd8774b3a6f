"""The resumable training state: everything a killed run needs to continue exactly where it stopped.

It is a torch file of tensors, numbers and dicts only, loaded with ``weights_only=True`` so that loading
it never runs pickled code, and written atomically (temp file + rename) so a kill mid-write leaves the
previous state intact.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from model.directory import atomic_write_bytes


def save_training_state(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_training_state(path: Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"no training state at {path}: nothing to resume")
    return torch.load(path, map_location=map_location, weights_only=True)  # type: ignore[no-any-return]
