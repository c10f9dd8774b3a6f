"""The datasets known by name (``fashion-mnist``, ``cifar10``, ...): their class names, the formats their files
come in, where to look for them on disk, and how to fetch them.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.readers.base import DataError, DatasetNotFoundError, RawSplit, Reader, Split
from training.readers.cifar import CIFAR10_CLASS_NAMES, CIFAR_FILE_NAMES, CIFAR_SUBDIR
from training.readers.idx import IDX_FILE_NAMES

logger = logging.getLogger(__name__)

# Where Debian's dataset packages install their data (`dataset-fashion-mnist` -> fashion-mnist/).
SYSTEM_DATASETS_DIR = Path("/usr/share/datasets")
DATA_DIR_ENV = "SGAN_DATA_DIR"
CONTAINER_ENV = "SGAN_IN_CONTAINER"  # set by the train image
DOWNLOAD_EXTRA_HINT = "pip install 'sgan-service[download]'"


@dataclass(frozen=True)
class KnownDataset:
    """What a known name means: the formats its files come in (tried in order), its class names in index
    order, and how to get it (the torchvision class behind ``--download``, the Debian package if any)."""

    formats: tuple[str, ...]  # reader names (training.readers.READERS), tried in order
    class_names: tuple[str, ...]
    torchvision_class: str
    torchvision_subdir: str  # where that class writes its files under its root
    debian_package: str | None = None

    def expected_files(self, split: Split) -> list[str]:
        """Human-readable file names this dataset's ``split`` may come as, for the not-found message."""
        names = {
            "idx": " + ".join(f"{file}[.gz]" for file in IDX_FILE_NAMES[split]),
            "npz": f"*-{split}-imgs.npz + *-{split}-labels.npz, or an .npz holding x_{split}/y_{split}",
            "cifar": " + ".join(CIFAR_FILE_NAMES[split]) + f" (or under {CIFAR_SUBDIR}/)",
            "folder": f"{split}/<class>/<images>",
        }
        return [names[dataset_format] for dataset_format in self.formats]


KNOWN_DATASETS: dict[str, KnownDataset] = {
    "mnist": KnownDataset(
        formats=("idx", "npz"),
        class_names=tuple(str(digit) for digit in range(10)),
        torchvision_class="MNIST",
        torchvision_subdir="MNIST/raw",
    ),
    "fashion-mnist": KnownDataset(
        formats=("idx", "npz"),
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),  # fmt: skip
        torchvision_class="FashionMNIST",
        torchvision_subdir="FashionMNIST/raw",
        debian_package="dataset-fashion-mnist",
    ),
    # Kuzushiji-MNIST, romanised hiragana in the dataset's own class order (kmnist_classmap.csv).
    "kmnist": KnownDataset(
        formats=("idx", "npz"),
        class_names=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        torchvision_class="KMNIST",
        torchvision_subdir="KMNIST/raw",
    ),
    "cifar10": KnownDataset(
        formats=("cifar",),
        class_names=CIFAR10_CLASS_NAMES,
        torchvision_class="CIFAR10",
        torchvision_subdir=CIFAR_SUBDIR,
    ),
}


def known_name(name: str) -> str | None:
    """The KNOWN_DATASETS key a name means, forgiving case and separators (FashionMNIST, fashion_mnist)."""

    def squash(text: str) -> str:
        return re.sub(r"[-_ ]", "", text.lower())

    return next((known for known in KNOWN_DATASETS if squash(known) == squash(name)), None)


def _candidate_directories(name: str, data_dir: str | Path | None) -> list[Path]:
    """Where a known dataset may be, in the order searched (see ``load_dataset``)."""
    bases = [Path(data_dir).expanduser()] if data_dir is not None else []
    if os.environ.get(DATA_DIR_ENV):
        bases.append(Path(os.environ[DATA_DIR_ENV]).expanduser())
    places = [place for base in bases for place in (base, base / name)]
    places += [Path.cwd() / "data" / name, SYSTEM_DATASETS_DIR / name]
    return list(dict.fromkeys(place.absolute() for place in places))


def _find_known(
    spec: KnownDataset, places: Sequence[Path], split: Split, readers: Mapping[str, Reader]
) -> tuple[Path, Reader] | None:
    """The first place (or the folder torchvision downloads into, inside it) holding ``split``'s files."""
    for place in places:
        for directory in (place, place / spec.torchvision_subdir):
            if not directory.is_dir():
                continue
            for name in spec.formats:
                if readers[name].has_split(directory, split):
                    return directory, readers[name]
    return None


def _not_found_message(name: str, spec: KnownDataset, split: Split, places: Sequence[Path]) -> str:
    looked = "\n".join(f"  - {place}" for place in places)
    files = " or ".join(spec.expected_files(split))
    if os.environ.get(CONTAINER_ENV):  # apt-get, pip and downloads cannot work inside the train image
        mount = os.environ.get(DATA_DIR_ENV, "/data")
        return (
            f"dataset {name!r} ({split} split) not found. Looked for {files} in:\n{looked}\nTo get it: put the files "
            f"in a host folder DIR/{name}/ and mount DIR at {mount} (docker compose: TRAIN_DATA_DIR=DIR; "
            f"docker run: -v DIR:{mount}:ro)"
        )
    ways = []
    if spec.debian_package:
        ways.append(
            f"  - install it: apt-get update && apt-get install -y {spec.debian_package} "
            f"(puts it in {SYSTEM_DATASETS_DIR / name})"
        )
    ways += [
        f"  - pass --data-dir DIR (or set {DATA_DIR_ENV}) naming a folder holding the files, or DIR/{name}/",
        f"  - pass --download to fetch it with torchvision ({DOWNLOAD_EXTRA_HINT})",
    ]
    return f"dataset {name!r} ({split} split) not found. Looked for {files} in:\n{looked}\nTo get it:\n" + "\n".join(
        ways
    )


def _download(name: str, spec: KnownDataset, target: Path) -> None:
    """Fetch both splits with torchvision's dataset class; our own readers then read the files it wrote."""
    try:
        import torchvision.datasets
    except Exception as error:  # ImportError when absent; a build that mismatches torch fails in other ways
        raise DataError(
            f"--download needs torchvision, which is not importable here ({type(error).__name__}: {error}). "
            f"Install it with {DOWNLOAD_EXTRA_HINT}, or put the files in place and pass --data-dir"
        ) from error
    dataset_class = getattr(torchvision.datasets, spec.torchvision_class)
    logger.info("downloading %s into %s", name, target)
    try:
        for train in (True, False):
            dataset_class(root=str(target), train=train, download=True)
    except (OSError, RuntimeError) as error:  # URLError is an OSError
        raise DataError(f"downloading {name} into {target} failed: {error}") from error


def class_names_from_folder_name(path: Path, labels: np.ndarray) -> list[str] | None:
    """Class names for files that carry none, when their folder names a known dataset: a path such as
    /usr/share/datasets/fashion-mnist or torchvision's FashionMNIST/raw should read as that dataset."""
    directory = path if path.is_dir() else path.parent
    for folder in (directory, directory.parent):
        known = known_name(folder.name)
        if known is not None and labels.max(initial=-1) < len(KNOWN_DATASETS[known].class_names):
            return list(KNOWN_DATASETS[known].class_names)
    return None


def load_known(
    name: str, split: Split, data_dir: str | Path | None, download: bool, readers: Mapping[str, Reader]
) -> RawSplit:
    """``split`` of the known dataset ``name``, from the first place that holds it (see ``load_dataset``)."""
    spec = KNOWN_DATASETS[name]
    places = _candidate_directories(name, data_dir)
    found = _find_known(spec, places, split, readers)
    if found is None and download:
        target = (Path(data_dir).expanduser() if data_dir is not None else Path.cwd() / "data") / name
        _download(name, spec, target)
        found = _find_known(spec, [target], split, readers)
    if found is None:
        raise DatasetNotFoundError(_not_found_message(name, spec, split, places))
    directory, reader = found
    logger.info("reading %s %s split (%s) from %s", name, split, reader.name, directory)
    raw = reader.read(directory, split, None)
    return raw._replace(class_names=raw.class_names or list(spec.class_names))
