"""Dataset readers, name resolution and the semi-supervised split: every reader round-trips files written
here in tmp_path (nothing is downloaded); one slow test reads the real Fashion-MNIST when installed."""

from __future__ import annotations

import gzip
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.imaging import image_to_array
from training.readers import KNOWN_DATASETS, DataError, DatasetNotFoundError, ImageDataset, known, load_dataset
from training.readers.idx import IDX_FILE_NAMES
from training.split import split_semi_supervised

REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def isolated_search_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Known names must resolve only to what a test wrote: no env var, no ./data, no system datasets."""
    monkeypatch.delenv(known.DATA_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(known, "SYSTEM_DATASETS_DIR", tmp_path / "system-datasets")


def tiny_arrays(count: int, height: int = 5, width: int = 7, classes: int = 3, seed: int = 0):
    """Random uint8 (N, H, W) images (non-square, to catch swapped axes) and labels covering every class."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, height, width), dtype=np.uint8)
    labels = np.arange(count, dtype=np.int64) % classes
    return images, labels


def write_idx(directory: Path, split: str, images: np.ndarray, labels: np.ndarray, gzipped: bool) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    images_name, labels_name = IDX_FILE_NAMES[split]
    count, height, width = images.shape
    image_bytes = (0x00000803).to_bytes(4, "big") + b"".join(size.to_bytes(4, "big") for size in (count, height, width))
    label_bytes = (0x00000801).to_bytes(4, "big") + count.to_bytes(4, "big")
    for name, payload in ((images_name, image_bytes + images.tobytes()), (labels_name, label_bytes)):
        if name == labels_name:
            payload += labels.astype(np.uint8).tobytes()
        if gzipped:
            (directory / f"{name}.gz").write_bytes(gzip.compress(payload))
        else:
            (directory / name).write_bytes(payload)


def write_png(path: Path, image: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


# ----------------------------------------------------------------------------------------------------------
# IDX
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gzipped", [True, False], ids=["gz", "plain"])
def test_idx_files_round_trip(tmp_path: Path, gzipped: bool) -> None:
    train_images, train_labels = tiny_arrays(12)
    test_images, test_labels = tiny_arrays(6, seed=1)
    write_idx(tmp_path / "digits", "train", train_images, train_labels, gzipped)
    write_idx(tmp_path / "digits", "test", test_images, test_labels, gzipped)

    train = load_dataset(str(tmp_path / "digits"), "train")
    test = load_dataset(tmp_path / "digits", "test")

    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int64
    assert train.image_shape == (1, 5, 7)
    np.testing.assert_array_equal(train.images[:, 0], train_images)
    np.testing.assert_array_equal(train.labels, train_labels)
    np.testing.assert_array_equal(test.images[:, 0], test_images)
    assert train.class_names == ["0", "1", "2"] and train.num_classes == 3
    assert train.source == str(tmp_path / "digits")


def test_truncated_idx_file_is_named_in_the_error(tmp_path: Path) -> None:
    images, labels = tiny_arrays(4)
    write_idx(tmp_path, "train", images, labels, gzipped=False)
    images_file = tmp_path / "train-images-idx3-ubyte"
    images_file.write_bytes(images_file.read_bytes()[:-10])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*truncated"):
        load_dataset(str(tmp_path), "train")


def test_corrupt_gzip_and_wrong_magic_are_data_errors(tmp_path: Path) -> None:
    images, labels = tiny_arrays(4)
    write_idx(tmp_path, "train", images, labels, gzipped=True)
    labels_file = tmp_path / "train-labels-idx1-ubyte.gz"
    labels_file.write_bytes(labels_file.read_bytes()[:15])  # gzip header, no end of stream
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz"):
        load_dataset(str(tmp_path), "train")
    # An image file where the label file should be: the magic number gives it away.
    labels_file.write_bytes((tmp_path / "train-images-idx3-ubyte.gz").read_bytes())
    with pytest.raises(DataError, match="not an IDX label file"):
        load_dataset(str(tmp_path), "train")


def test_missing_split_names_the_files(tmp_path: Path) -> None:
    write_idx(tmp_path, "train", *tiny_arrays(4), gzipped=True)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        load_dataset(str(tmp_path), "test")


# ----------------------------------------------------------------------------------------------------------
# .npz
# ----------------------------------------------------------------------------------------------------------


def write_npz_convention(directory: Path, convention: str, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """Write ``splits`` under one of the key conventions; returns the path to hand to load_dataset."""
    directory.mkdir(parents=True, exist_ok=True)
    if convention == "keras":
        arrays = {
            f"{axis}_{split}": array for split, pair in splits.items() for axis, array in zip("xy", pair, strict=True)
        }
        np.savez(directory / "mnist.npz", **arrays)
        return directory / "mnist.npz"
    if convention == "named-keys":
        arrays = {
            f"{split}_{kind}": array
            for split, pair in splits.items()
            for kind, array in zip(("images", "labels"), pair, strict=True)
        }
        np.savez_compressed(directory / "dataset.npz", **arrays)
        return directory
    if convention == "per-split-files":
        for split, (images, labels) in splits.items():
            np.savez(directory / f"{split}.npz", images=images, labels=labels)
        return directory / "train.npz"
    assert convention == "arr_0-pairs"
    for split, (images, labels) in splits.items():
        np.savez_compressed(directory / f"kmnist-{split}-imgs.npz", images)
        np.savez_compressed(directory / f"kmnist-{split}-labels.npz", labels)
    return directory


@pytest.mark.parametrize("convention", ["keras", "named-keys", "per-split-files", "arr_0-pairs"])
def test_npz_conventions_round_trip(tmp_path: Path, convention: str) -> None:
    splits = {"train": tiny_arrays(10), "test": tiny_arrays(4, seed=1)}
    path = write_npz_convention(tmp_path / "arrays", convention, splits)
    for split, (images, labels) in splits.items():
        dataset = load_dataset(str(path), split)  # type: ignore[arg-type]
        assert dataset.image_shape == (1, 5, 7)
        np.testing.assert_array_equal(dataset.images[:, 0], images)
        np.testing.assert_array_equal(dataset.labels, labels)


def test_npz_layouts_float_pixels_and_class_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    nchw = rng.integers(0, 256, size=(6, 3, 4, 5), dtype=np.uint8)
    labels = np.array([0, 1, 0, 1, 0, 1])
    nhwc_float = nchw.transpose(0, 2, 3, 1).astype(np.float32) / 255.0
    np.savez(
        tmp_path / "nhwc.npz",
        x_train=nhwc_float,
        y_train=labels[:, None],
        class_names=np.array(["cat", "dog"]),
    )
    np.savez(tmp_path / "nchw.npz", train_images=nchw, train_labels=labels)

    from_nhwc = load_dataset(str(tmp_path / "nhwc.npz"), "train")
    from_nchw = load_dataset(str(tmp_path / "nchw.npz"), "train")

    np.testing.assert_array_equal(from_nhwc.images, nchw)  # float [0, 1] scaled back to the same bytes
    np.testing.assert_array_equal(from_nchw.images, nchw)
    assert from_nhwc.class_names == ["cat", "dog"]
    assert from_nchw.class_names == ["0", "1"]


def test_npz_without_the_split_says_so(tmp_path: Path) -> None:
    np.savez(tmp_path / "train.npz", images=tiny_arrays(3)[0], labels=np.zeros(3, dtype=np.int64))
    with pytest.raises(DataError, match="no test split"):
        load_dataset(str(tmp_path / "train.npz"), "test")


def test_npz_labels_beyond_the_class_names_are_refused(tmp_path: Path) -> None:
    images, _ = tiny_arrays(3)
    np.savez(tmp_path / "d.npz", x_train=images, y_train=np.array([0, 1, 2]), class_names=np.array(["a", "b"]))
    with pytest.raises(DataError, match="2 class names"):
        load_dataset(str(tmp_path / "d.npz"), "train")


# ----------------------------------------------------------------------------------------------------------
# CIFAR-10 python batches
# ----------------------------------------------------------------------------------------------------------


def write_cifar_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """As the official files: a dict with bytes keys, data (N, 3072) uint8 planes, labels a list."""
    content = {b"batch_label": b"test", b"data": images.reshape(len(images), -1), b"labels": labels.tolist()}
    path.write_bytes(pickle.dumps(content, protocol=2))


@pytest.mark.parametrize("with_meta", [True, False])
def test_cifar_batches_round_trip(tmp_path: Path, with_meta: bool) -> None:
    rng = np.random.default_rng(0)
    batches_dir = tmp_path / "cifar" / "cifar-10-batches-py"
    batches_dir.mkdir(parents=True)
    train_parts = []
    for number in range(1, 6):
        images = rng.integers(0, 256, size=(2, 3, 32, 32), dtype=np.uint8)
        labels = np.array([number % 10, (number + 5) % 10])
        write_cifar_batch(batches_dir / f"data_batch_{number}", images, labels)
        train_parts.append((images, labels))
    test_images = rng.integers(0, 256, size=(3, 3, 32, 32), dtype=np.uint8)
    write_cifar_batch(batches_dir / "test_batch", test_images, np.array([9, 0, 1]))
    names = [f"class-{index}" for index in range(10)]
    if with_meta:
        meta = {b"label_names": [name.encode() for name in names], b"num_vis": 3072}
        (batches_dir / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))

    train = load_dataset(str(tmp_path / "cifar"), "train")
    test = load_dataset(str(batches_dir), "test")

    np.testing.assert_array_equal(train.images, np.concatenate([images for images, _ in train_parts]))
    np.testing.assert_array_equal(train.labels, np.concatenate([labels for _, labels in train_parts]))
    np.testing.assert_array_equal(test.images, test_images)
    assert train.image_shape == (3, 32, 32)
    assert train.class_names == (names if with_meta else list(KNOWN_DATASETS["cifar10"].class_names))


def test_cifar10_by_name_from_data_dir(tmp_path: Path) -> None:
    batches_dir = tmp_path / "store" / "cifar10" / "cifar-10-batches-py"
    batches_dir.mkdir(parents=True)
    write_cifar_batch(batches_dir / "test_batch", np.zeros((2, 3, 32, 32), dtype=np.uint8), np.array([3, 4]))
    dataset = load_dataset("cifar10", "test", data_dir=tmp_path / "store")
    assert dataset.class_names[3] == "cat" and len(dataset) == 2


# ----------------------------------------------------------------------------------------------------------
# A folder of images per class
# ----------------------------------------------------------------------------------------------------------


def build_image_folder(root: Path) -> dict[str, list[Image.Image]]:
    """train/ and test/ with images of different sizes and modes (RGB, gray, RGBA, palette)."""
    red = Image.new("RGB", (40, 30), (255, 0, 0))
    gray = Image.new("L", (10, 12), 90)
    transparent = Image.new("RGBA", (33, 33), (0, 0, 255, 0))
    palette = Image.new("RGB", (16, 16), (0, 200, 0)).convert("P", palette=Image.Palette.ADAPTIVE)
    written = {"apple": [red, gray], "banana": [transparent, palette]}
    for class_name, images in written.items():
        for index, image in enumerate(images):
            write_png(root / "train" / class_name / f"{index}.png", image)
    write_png(root / "test" / "banana" / "0.png", red)
    return written


def test_image_folder_round_trip_through_the_server_preprocessing(tmp_path: Path) -> None:
    written = build_image_folder(tmp_path / "fruit")

    train = load_dataset(str(tmp_path / "fruit"), "train")
    gray = load_dataset(str(tmp_path / "fruit"), "train", image_shape=(1, 28, 28))
    test = load_dataset(str(tmp_path / "fruit"), "test")

    assert train.class_names == ["apple", "banana"] and train.images.shape == (4, 3, 32, 32)
    assert gray.images.shape == (4, 1, 28, 28)
    np.testing.assert_array_equal(train.labels, [0, 0, 1, 1])
    expected = [image_to_array(image, 3, 32, 32) for images in written.values() for image in images]
    np.testing.assert_array_equal(train.images, np.stack(expected))
    assert (train.images[2] == 255).all()  # fully transparent reads as white, as a viewer shows it
    # test/ lacks "apple" yet keeps train's class indices.
    assert test.class_names == ["apple", "banana"] and test.labels.tolist() == [1]


def test_corrupt_image_is_skipped_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "shapes"
    write_png(root / "circle" / "good.png", Image.new("L", (8, 8), 10))
    write_png(root / "square" / "good.png", Image.new("L", (8, 8), 200))
    (root / "square" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (root / "square" / "notes.jpg").write_text("not an image")

    with caplog.at_level(logging.WARNING, logger="training.data"):
        dataset = load_dataset(str(root), "train", image_shape=(1, 8, 8))

    assert len(dataset) == 2 and dataset.labels.tolist() == [0, 1]
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "skipped 2" in warnings[0].getMessage() and "broken.png" in warnings[0].getMessage()


def test_image_folder_without_test_split_or_readable_images(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    write_png(root / "a" / "x.png", Image.new("RGB", (4, 4)))
    with pytest.raises(DataError, match="no test split"):
        load_dataset(str(root), "test")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "a" / "x.png").write_bytes(b"nope")
    with pytest.raises(DataError, match="no readable images"):
        load_dataset(str(tmp_path / "empty"), "train")


# ----------------------------------------------------------------------------------------------------------
# Name resolution
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("inside_name_folder", [False, True])
def test_known_name_resolves_in_data_dir(tmp_path: Path, inside_name_folder: bool) -> None:
    store = tmp_path / "store"
    directory = store / "fashion-mnist" if inside_name_folder else store
    images, labels = tiny_arrays(20, 28, 28, classes=10)
    write_idx(directory, "train", images, labels, gzipped=True)

    dataset = load_dataset("fashion-mnist", "train", data_dir=store)

    assert dataset.source == str(directory)
    assert dataset.class_names == list(KNOWN_DATASETS["fashion-mnist"].class_names)
    np.testing.assert_array_equal(dataset.labels, labels)


def test_known_name_resolves_via_environment_and_torchvision_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw_dir = tmp_path / "env-store" / "mnist" / "MNIST" / "raw"  # where torchvision's MNIST writes
    write_idx(raw_dir, "test", *tiny_arrays(5, 28, 28, classes=10), gzipped=False)
    monkeypatch.setenv(known.DATA_DIR_ENV, str(tmp_path / "env-store"))

    dataset = load_dataset("MNIST", "test")

    assert dataset.source == str(raw_dir) and dataset.class_names == [str(digit) for digit in range(10)]


def test_a_path_to_a_known_dataset_folder_keeps_its_class_names(tmp_path: Path) -> None:
    write_idx(tmp_path / "fashion-mnist", "test", *tiny_arrays(4, classes=10), gzipped=True)
    dataset = load_dataset(str(tmp_path / "fashion-mnist"), "test")
    assert dataset.class_names == list(KNOWN_DATASETS["fashion-mnist"].class_names)


def test_data_dir_comes_before_the_system_datasets(tmp_path: Path) -> None:
    write_idx(known.SYSTEM_DATASETS_DIR / "kmnist", "train", *tiny_arrays(3, classes=2), gzipped=True)
    write_idx(tmp_path / "mine", "train", *tiny_arrays(7, classes=2), gzipped=True)
    assert len(load_dataset("kmnist", "train", data_dir=tmp_path / "mine")) == 7
    assert load_dataset("kmnist", "train").source == str(known.SYSTEM_DATASETS_DIR / "kmnist")


def test_not_found_lists_the_places_looked_and_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(known.DATA_DIR_ENV, str(tmp_path / "env"))
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("fashion-mnist", "train", data_dir=tmp_path / "given")
    message = str(caught.value)
    for place in [
        tmp_path / "given",
        tmp_path / "given" / "fashion-mnist",
        tmp_path / "env",
        tmp_path / "env" / "fashion-mnist",
        tmp_path / "data" / "fashion-mnist",
        known.SYSTEM_DATASETS_DIR / "fashion-mnist",
    ]:
        assert f"- {place}\n" in message + "\n"
    assert "apt-get install -y dataset-fashion-mnist" in message
    assert "--data-dir" in message and "--download" in message
    assert isinstance(caught.value, DataError)


def test_download_without_torchvision_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "torchvision", None)  # import fails as if absent
    with pytest.raises(DataError, match=r"pip install 'sgan-service\[download\]'"):
        load_dataset("mnist", "train", download=True)


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(DataError, match="mnist, fashion-mnist, kmnist, cifar10"):
        load_dataset("imagenet-1k", "train")


def test_image_dataset_checks_labels_against_class_names() -> None:
    with pytest.raises(DataError, match="labels run from 0 to 3"):
        ImageDataset(np.zeros((2, 1, 2, 2), np.uint8), np.array([0, 3]), ["a", "b"], "memory")


# ----------------------------------------------------------------------------------------------------------
# The semi-supervised split
# ----------------------------------------------------------------------------------------------------------


def test_split_is_balanced_disjoint_and_nested() -> None:
    labels = np.arange(300) % 10
    split = split_semi_supervised(labels, labels_per_class=4, val_size=50, seed=1)

    assert np.bincount(labels[split.labelled], minlength=10).tolist() == [4] * 10
    assert len(split.validation) == 50 and len(set(split.validation.tolist())) == 50
    assert not set(split.labelled.tolist()) & set(split.validation.tolist())
    assert set(split.unlabelled.tolist()) == set(range(300)) - set(split.validation.tolist())
    assert set(split.labelled.tolist()) <= set(split.unlabelled.tolist())
    assert all(array.dtype == np.int64 for array in (split.labelled, split.unlabelled, split.validation))


def test_split_is_deterministic_per_seed() -> None:
    labels = np.arange(200) % 4
    first, again = (split_semi_supervised(labels, 5, 20, seed=7) for _ in range(2))
    other = split_semi_supervised(labels, 5, 20, seed=8)
    np.testing.assert_array_equal(first.labelled, again.labelled)
    np.testing.assert_array_equal(first.validation, again.validation)
    assert not np.array_equal(first.labelled, other.labelled)
    assert not np.array_equal(first.validation, other.validation)


def test_split_rejects_impossible_requests() -> None:
    labels = np.array([0] * 20 + [1] * 3)
    with pytest.raises(DataError, match="between 0 and 22"):
        split_semi_supervised(labels, 1, val_size=23, seed=0)
    with pytest.raises(DataError, match="class 1 has only 3"):
        split_semi_supervised(labels, 4, val_size=0, seed=0)
    with pytest.raises(DataError, match="at least 1"):
        split_semi_supervised(labels, 0, val_size=0, seed=0)
    with pytest.raises(DataError, match="out of range"):
        split_semi_supervised(labels, 1, val_size=-1, seed=0)
    with pytest.raises(DataError, match="class 2 has only 0"):
        split_semi_supervised(labels, 1, val_size=0, seed=0, num_classes=3)


# ----------------------------------------------------------------------------------------------------------
# The real data
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    if not REAL_FASHION_MNIST.is_dir():
        pytest.skip(f"{REAL_FASHION_MNIST} is absent: apt-get install -y dataset-fashion-mnist")
    monkeypatch.setattr(known, "SYSTEM_DATASETS_DIR", REAL_FASHION_MNIST.parent)

    train = load_dataset("fashion-mnist", "train")
    test = load_dataset("fashion-mnist", "test")

    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.num_classes == 10 and train.class_names[0] == "T-shirt/top"
    assert np.bincount(train.labels).tolist() == [6000] * 10


def test_inside_the_train_image_the_not_found_message_says_what_to_mount(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(known.CONTAINER_ENV, "1")
    monkeypatch.setenv(known.DATA_DIR_ENV, "/data")
    with pytest.raises(DatasetNotFoundError) as error:
        load_dataset("kmnist", "train")
    message = str(error.value)
    assert "mount DIR at /data" in message and "TRAIN_DATA_DIR=DIR" in message
    assert "--download" not in message and "pip" not in message and "apt-get" not in message
