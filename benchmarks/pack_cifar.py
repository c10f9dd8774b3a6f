"""Pack part of a CIFAR-10 folder into one compressed .npz small enough to travel to a GPU machine.

The GPU check (scripts/gpu-check.sh) runs on a machine that reaches no network, and what travels there is
capped at 64 MiB, while CIFAR-10's 60,000 PNGs take about 150 MB. This keeps a random 14,000 of the training
images, labels and all (a run's --labels-per-class 400 then draws its 4,000 labels from them and the rest is its
unlabelled pool), and a random 5,000 of the test images:

    python benchmarks/pack_cifar.py data/cifar10 data/cifar10-gpu.npz            # about 50 MB
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from training.readers import load_dataset


def pack(source: str, train_count: int, test_count: int, seed: int) -> dict[str, np.ndarray]:
    train, test_set = load_dataset(source, "train"), load_dataset(source, "test")
    rng = np.random.default_rng(seed)
    train_pick = np.sort(rng.permutation(len(train.labels))[:train_count])
    test_pick = np.sort(rng.permutation(len(test_set.labels))[:test_count])
    return {
        "x_train": train.images[train_pick],
        "y_train": train.labels[train_pick],
        "x_test": test_set.images[test_pick],
        "y_test": test_set.labels[test_pick],
        "class_names": np.array(train.class_names),
    }


def write_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as handle:
        np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]
    os.replace(handle.name, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a CIFAR-10 folder: train/<class>/*.png and test/<class>/*.png")
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=14_000, help="training images kept (labels and all)")
    parser.add_argument("--test", type=int, default=5_000, help="test images kept")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    arrays = pack(args.source, args.train, args.test, args.seed)
    write_atomically(args.out, arrays)
    shapes = ", ".join(f"{name} {array.shape}" for name, array in arrays.items())
    print(f"{args.out}: {os.path.getsize(args.out) / 2**20:.1f} MiB; {shapes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
