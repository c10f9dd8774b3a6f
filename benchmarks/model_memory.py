"""Memory per served model: the resident memory a server process gains for each model it serves.

Each measurement is a fresh process that starts the server's ``ModelRegistry`` (loading, folding, the engine,
the warm-up) on the default model plus N copies of it in an SGAN_MODELS_DIR, then reads its resident set size
(VmRSS). The cost of one more model is the growth from N=0 to N=``--copies``, divided by ``--copies``; the
weights' own size is what GET /models reports as ``weights_bytes``.

    python benchmarks/model_memory.py                      # the bundled model, both backends
    python benchmarks/model_memory.py --model-dir runs/x/model --backends torch
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "model_memory"
MIB = 2**20


def resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def child(model_dir: Path, copies: int, backend: str) -> dict:
    """In a fresh process: serve ``model_dir`` and ``copies`` copies of it; resident bytes and weights bytes."""
    from app.metrics import Metrics
    from app.registry import ModelRegistry
    from app.settings import Settings

    with tempfile.TemporaryDirectory() as folder:
        for index in range(copies):
            shutil.copytree(model_dir, Path(folder) / f"copy-{index}")
        settings = Settings(
            model_dir=model_dir, models_dir=Path(folder), reload_poll_s=0, torch_threads=1, backend=backend
        )

        async def measure() -> dict:
            registry = ModelRegistry(settings, Metrics())
            await registry.start()
            try:
                slots = registry.slots()
                assert all(slot.current is not None for slot in slots), [slot.error for slot in slots]
                assert slots[0].current is not None
                return {"resident_bytes": resident_bytes(), "weights_bytes": slots[0].current.weights_bytes}
            finally:
                await registry.close()

        return asyncio.run(measure())


def measure(model_dir: Path, copies: int, backend: str) -> dict:
    command = [sys.executable, __file__, "--child", str(copies), "--backends", backend, "--model-dir", str(model_dir)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=environment).stdout
    result: dict = json.loads(output.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    from model import BUNDLED_MODEL_DIR, read_card

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=BUNDLED_MODEL_DIR)
    parser.add_argument("--copies", type=int, default=6)
    parser.add_argument("--backends", nargs="+", default=["torch", "onnxruntime"], choices=["torch", "onnxruntime"])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.model_dir, args.child, args.backends[0])))
        return 0
    rows = []
    for backend in args.backends:
        alone, many = measure(args.model_dir, 0, backend), measure(args.model_dir, args.copies, backend)
        per_model = (many["resident_bytes"] - alone["resident_bytes"]) / args.copies
        rows.append(
            {
                "backend": backend,
                "process_with_one_model_mib": round(alone["resident_bytes"] / MIB, 1),
                "per_additional_model_mib": round(per_model / MIB, 1),
                "weights_mib": round(alone["weights_bytes"] / MIB, 2),
            }
        )
    command = "python benchmarks/model_memory.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {
        "model_dir": os.path.relpath(args.model_dir),
        "model_id": read_card(args.model_dir).model_id,
        "copies": args.copies,
        "rows": rows,
        "machine": f"{platform.machine()}, {platform.system()}",
        "command": command,
    }
    RESULTS.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    table = "".join(
        f"| {row['backend']} | {row['process_with_one_model_mib']} | {row['per_additional_model_mib']} "
        f"| {row['weights_mib']} |\n"
        for row in rows
    )
    RESULTS.with_suffix(".md").write_text(
        "# Memory per served model\n\nWritten by `benchmarks/model_memory.py`: resident memory (VmRSS) of a fresh "
        f"process whose `ModelRegistry` serves `{report['model_dir']}` (model {report['model_id']}) alone, then with "
        f"{args.copies} copies of it in SGAN_MODELS_DIR; each model loaded, folded and warmed up as the server "
        "does. Per worker process: with SGAN_WORKERS=2 every model is held twice.\n\n"
        "| backend | process with one model (MiB) | each additional model (MiB) | its weights (MiB, float32) |\n"
        f"|---|---|---|---|\n{table}\n`{command}`; {report['machine']}.\n"
    )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
