"""ONNX export of a model directory (``sgan-export``): export time, file sizes, onnxruntime against torch on the
Fashion-MNIST test images (max |difference| of probabilities and realness), and the discriminator's forward pass
in-process, images/s at the server's batch sizes, through the engine's own two code paths (SGAN_BACKEND=torch
and SGAN_BACKEND=onnxruntime), with one thread each, as a 2-core server runs them.

    python benchmarks/onnx_export.py                       # the bundled model
    python benchmarks/onnx_export.py --model-dir runs/x/model

Speeds are the best of ``--repeats`` rounds, torch and onnxruntime alternating so both see the same load.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from app.backends import OnnxRuntimeClassifier
from app.engine import InferenceEngine
from model import BUNDLED_MODEL_DIR, load_model_dir
from model.export import discriminator_program, export_onnx, max_difference, onnx_bytes

RESULTS = Path(__file__).resolve().parent / "results" / "onnx"
FASHION_TEST_IMAGES = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
BATCH_SIZES = (1, 8, 32)  # a lone request, a light load, the server's max_batch_size


def fashion_test_images() -> np.ndarray:
    """All 10,000 Fashion-MNIST test images, uint8 (N, 1, 28, 28): IDX, gzip, 16-byte header."""
    with gzip.open(FASHION_TEST_IMAGES) as handle:
        return np.frombuffer(handle.read(), dtype=np.uint8, offset=16).reshape(-1, 1, 28, 28).copy()


def images_per_second(forward, pixels: np.ndarray, seconds: float) -> float:
    """Calls of ``forward(pixels)`` for about ``seconds``, as images/s."""
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        forward(pixels)
        calls += 1
    return calls * len(pixels) / elapsed


def speeds(model_dir: Path, images: np.ndarray, repeats: int, seconds: float) -> list[dict]:
    torch.set_num_threads(1)
    backends = {
        "torch": InferenceEngine(load_model_dir(model_dir)),
        "onnxruntime": InferenceEngine(
            (loaded := load_model_dir(model_dir)),
            classifier=OnnxRuntimeClassifier(onnx_bytes(discriminator_program(loaded)), threads=1),
        ),
    }
    rows = []
    for batch in BATCH_SIZES:
        pixels = images[:batch]
        best = dict.fromkeys(backends, 0.0)
        for engine in backends.values():
            images_per_second(engine._forward, pixels, 0.3)  # warm-up
        for _ in range(repeats):
            for name, engine in backends.items():
                best[name] = max(best[name], images_per_second(engine._forward, pixels, seconds))
        rows.append(
            {
                "batch_size": batch,
                "torch_images_per_second": round(best["torch"]),
                "onnxruntime_images_per_second": round(best["onnxruntime"]),
                "onnxruntime_speedup": round(best["onnxruntime"] / best["torch"], 2),
            }
        )
    return rows


def markdown(row: dict) -> str:
    exports = "".join(
        f"| {item['network']} | {item['seconds']:.1f} "
        f"| {item['size_bytes'] / 2**20:.2f} MiB ({item['size_bytes']:,} bytes) |\n"
        for item in row["exports"]
    )
    speed = "".join(
        f"| {item['batch_size']} | {item['torch_images_per_second']:,} | {item['onnxruntime_images_per_second']:,} "
        f"| {item['onnxruntime_speedup']:.2f}x |\n"
        for item in row["speed"]
    )
    check = row["check"]
    return (
        "# ONNX export and onnxruntime\n\nWritten by `benchmarks/onnx_export.py` for "
        f"`{row['model_dir']}` (model {row['model_id']}): `sgan-export` with torch's `torch.export`-based exporter "
        f"(`dynamo=True`; torch {row['torch']}, onnx {row['onnx']}, onnxscript {row['onnxscript']}, onnxruntime "
        f"{row['onnxruntime']}).\n\n"
        "| network | export time (s) | file size |\n|---|---|---|\n"
        f"{exports}\n"
        f"**Equality**, onnxruntime against torch on the {check['images']:,} Fashion-MNIST test images: max "
        f"|diff| of the probabilities **{check['probabilities']:.2e}**, "
        f"of the realness **{check['realness']:.2e}**.\n\n"
        "**Speed** of the discriminator's forward pass in-process, images/s, one thread each, through the "
        "engine's code paths (uint8 pixels in, probabilities and realness out):\n\n"
        "| batch | torch | onnxruntime | onnxruntime / torch |\n|---|---|---|---|\n"
        f"{speed}\n"
        f"`{row['command']}`; {row['machine']}, {row['cpu_cores']} cores, load average {row['load_average']} at the "
        "start (other jobs were running: absolute figures are low, the ratio is what to read).\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=BUNDLED_MODEL_DIR)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one timed round")
    args = parser.parse_args(argv)
    import onnx
    import onnxruntime
    import onnxscript

    load_average = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    images = fashion_test_images()
    loaded = load_model_dir(args.model_dir)
    with tempfile.TemporaryDirectory() as folder:
        paths = Path(folder) / "discriminator.onnx", Path(folder) / "generator.onnx"
        exports = export_onnx(loaded, *paths)
        worst = max_difference(loaded, paths[0], images)
    row = {
        "model_dir": os.path.relpath(args.model_dir),
        "model_id": loaded.card.model_id,
        "exports": [
            {"network": network, "seconds": round(item.seconds, 2), "size_bytes": item.size_bytes}
            for network, item in zip(("discriminator", "generator"), exports, strict=True)
        ],
        "check": {"images": len(images), **{key: float(f"{value:.3g}") for key, value in worst.items()}},
        "speed": speeds(args.model_dir, images, args.repeats, args.seconds),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "onnxruntime": onnxruntime.__version__,
        "cpu_cores": os.cpu_count(),
        "load_average": load_average,
        "machine": f"{platform.machine()}, {platform.system()}",
        "command": "python benchmarks/onnx_export.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    RESULTS.with_suffix(".json").write_text(json.dumps(row, indent=2) + "\n")
    RESULTS.with_suffix(".md").write_text(markdown(row))
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
