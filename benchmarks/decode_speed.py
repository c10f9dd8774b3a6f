"""Decode throughput of a partly labelled folder of photos: the first run (parallel decoding) against the
second (the decode cache), whole ``load_dataset`` calls, timed in this process.

The benchmark writes its own photos: ``--count`` colour JPEGs of ``--size`` (smooth gradients plus noise, so
they compress like photos rather than like flat colour), 1% of them labelled in ``labelled/<class>/``, the rest in
``unlabelled/``, then reads the folder twice to 32x32 colour.

    python benchmarks/decode_speed.py --count 50000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from training.readers import load_dataset
from training.readers.decode import CACHE_DIR_ENV

RESULTS = Path(__file__).resolve().parent / "results" / "decode_speed"


def write_photos(root: Path, count: int, size: tuple[int, int], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    width, height = size
    ramp = np.linspace(0, 1, width)[None, :, None] * np.linspace(0, 1, height)[:, None, None]
    for index in range(count):
        colour = rng.integers(0, 256, size=3)
        pixels = ramp * colour + rng.normal(0, 12, size=(height, width, 3)) + 40
        folder = root / "labelled" / f"class{index % 10}" if index % 100 == 0 else root / "unlabelled" / f"{index % 50}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{index}.jpg", quality=85)


def timed_load(root: Path) -> float:
    started = time.perf_counter()
    dataset = load_dataset(root, "train", image_shape=(3, 32, 32))
    assert len(dataset) > 0
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 192), metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--work-dir", default="runs/benchmarks/decode-speed")
    args = parser.parse_args(argv)
    root = Path(args.work_dir) / f"photos-{args.count}-{args.size[0]}x{args.size[1]}"
    if not root.exists():
        write_photos(root, args.count, tuple(args.size))
    os.environ[CACHE_DIR_ENV] = str(Path(args.work_dir) / "cache")
    for entry in Path(os.environ[CACHE_DIR_ENV]).glob("*"):
        entry.unlink()
    first, cached = timed_load(root), timed_load(root)
    row = {
        "images": args.count,
        "photo_size": list(args.size),
        "decoded_to": [3, 32, 32],
        "first_run_seconds": round(first, 1),
        "first_run_images_per_second": round(args.count / first),
        "cached_run_seconds": round(cached, 2),
        "cached_run_images_per_second": round(args.count / cached),
        "cpu_cores": os.cpu_count(),
        "machine": f"{platform.machine()}, {platform.system()}",
        "command": "python benchmarks/decode_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    RESULTS.with_suffix(".json").write_text(json.dumps(row, indent=2) + "\n")
    RESULTS.with_suffix(".md").write_text(
        "# Decoding a folder of photos\n\nWritten by `benchmarks/decode_speed.py`: "
        f"{args.count} colour JPEGs of {args.size[0]}x{args.size[1]} (written by the benchmark), 1% of them "
        "labelled, read by `load_dataset` to 32x32 colour, twice.\n\n"
        "| run | seconds | images/s |\n|---|---|---|\n"
        f"| first (parallel decode, {os.cpu_count()} processes) | {first:.1f} | {args.count / first:.0f} |\n"
        f"| second (decode cache) | {cached:.2f} | {args.count / cached:.0f} |\n\n"
        f"`{row['command']}`; {row['machine']}, {os.cpu_count()} cores; wall times include other load of the moment.\n"
    )
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
