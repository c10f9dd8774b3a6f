"""What runs the discriminator for the engine (``SGAN_BACKEND``): torch, or onnxruntime on the same network
exported to ONNX in memory when the model loads (model/export.py).

onnxruntime ran the bundled MLP's forward pass 1.6-1.9x faster than torch in-process (1 to 32 images) on
the 2-core benchmark machine (benchmarks/results/onnx.md), so it is offered. torch stays the default: onnxruntime
and the exporter are an optional extra (``pip install 'sgan-service[onnx]'``) that the server image leaves out,
they add about 200 MiB to each worker (benchmarks/results/model_memory.md), and the export adds seconds to every
load. The generator (/sample) always runs on torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.engine import Classifier
from model import LoadedModel, load_model_dir
from model.export import DISCRIMINATOR_INPUT, INSTALL_HINT, discriminator_program, onnx_bytes
from model.networks import fold_weight_norm


class OnnxRuntimeClassifier:
    """uint8 (B, C, H, W) -> probabilities (B, K), realness (B,) through an onnxruntime session."""

    def __init__(self, model: bytes, threads: int) -> None:
        import onnxruntime  # optional: the [onnx] extra

        options = onnxruntime.SessionOptions()
        # Called from the engine's one torch thread: onnxruntime's pool gets the threads torch would have had.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # The same scaling as model.imaging.pixels_to_tensor: float32 division by 255.
        inputs = pixels.astype(np.float32) / np.float32(255.0)
        probabilities, realness = self.session.run(["probabilities", "realness"], {DISCRIMINATOR_INPUT: inputs})
        return probabilities, realness


def load_for_serving(path: Path, backend: str, threads: int) -> tuple[LoadedModel, Classifier | None]:
    """Load and check a model directory, fold weight norm for inference, and build the backend's classifier
    (None: the engine's torch forward pass). Slow (hashing, and the ONNX export): run it off the event loop."""
    loaded = load_model_dir(path)
    fold_weight_norm(loaded.discriminator)
    fold_weight_norm(loaded.generator)
    if backend != "onnxruntime":
        return loaded, None
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(f"SGAN_BACKEND=onnxruntime needs {INSTALL_HINT}: {exc}") from exc
    return loaded, OnnxRuntimeClassifier(onnx_bytes(discriminator_program(loaded)), threads)


def weights_bytes(loaded: LoadedModel) -> int:
    """The memory the networks' tensors take (parameters and buffers of both), in bytes."""
    tensors = [
        tensor
        for network in (loaded.discriminator, loaded.generator)
        for tensor in (*network.parameters(), *network.buffers())
    ]
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)
