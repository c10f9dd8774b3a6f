"""Partly labelled data in the forms users keep it (labelled/ + unlabelled/ folders, a folder and a CSV of
labels, .npz with -1 labels), every error a user can make with them, and the decode cache."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.readers import UNLABELLED, DataError, load_dataset
from training.readers import decode as decode_module
from training.readers.decode import decode_files
from training.split import split_semi_supervised

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 220)}
FORMATS = ("PNG", "JPEG", "WEBP")


def photo(colour: tuple[int, int, int], seed: int, size: tuple[int, int] = (40, 30)) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.normal(colour, 20, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def save(image: Image.Image, path: Path, image_format: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=image_format)
    return path


def write_partly_labelled(root: Path, labelled_per_class: int = 3, unlabelled: int = 12, test: bool = True) -> Path:
    """labelled/<class>/ in mixed formats, unlabelled/ nested two deep, and a test/ folder."""
    seed = 0
    for name, colour in COLOURS.items():
        for index in range(labelled_per_class):
            image_format = FORMATS[index % len(FORMATS)]
            save(photo(colour, seed), root / "labelled" / name / f"{index}.{image_format.lower()}", image_format)
            seed += 1
            if test:
                save(photo(colour, seed), root / "test" / name / f"{index}.png", "PNG")
                seed += 1
    for index in range(unlabelled):
        colour = list(COLOURS.values())[index % 3]
        image_format = FORMATS[index % len(FORMATS)]
        nested = root / "unlabelled" / f"batch{index % 2}" / "deep"
        save(photo(colour, seed), nested / f"u{index}.{image_format.lower()}", image_format)
        seed += 1
    return root


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv(decode_module.CACHE_DIR_ENV, str(cache))
    return cache


# ----------------------------------------------------------------------------------------------------------
# labelled/ + unlabelled/ folders
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", [("labelled", "unlabelled"), ("labeled", "unlabeled")])
def test_labelled_and_unlabelled_folders(tmp_path: Path, spelling: tuple[str, str]) -> None:
    root = write_partly_labelled(tmp_path / "photos")
    if spelling[0] == "labeled":
        (root / "labelled").rename(root / "labeled")
        (root / "unlabelled").rename(root / "unlabeled")
    train = load_dataset(root, "train", image_shape=(3, 16, 16))
    assert train.class_names == ["blue", "green", "red"]
    assert train.image_shape == (3, 16, 16)
    assert np.bincount(train.labels[train.labels >= 0]).tolist() == [3, 3, 3]
    assert train.num_unlabelled == 12  # nested two folders deep, PNG, JPEG and WebP alike
    # Pixels are the server's: a red photo is red after decoding.
    red = train.images[train.labels == train.class_names.index("red")]
    assert (red[:, 0].mean() > 150) and (red[:, 2].mean() < 100)
    test = load_dataset(root, "test", image_shape=(3, 16, 16))
    assert test.class_names == train.class_names and len(test) == 9 and test.num_unlabelled == 0


def test_an_unreadable_labelled_image_is_an_error_an_unreadable_unlabelled_one_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_partly_labelled(tmp_path / "photos", test=False)
    (root / "unlabelled" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with caplog.at_level(logging.WARNING):
        train = load_dataset(root, "train", image_shape=(3, 8, 8))
    assert train.num_unlabelled == 12
    assert "skipped 1 unreadable" in caplog.text and "broken.png" in caplog.text
    (root / "labelled" / "red" / "bad.jpg").write_bytes(b"JFIF? no")
    with pytest.raises(DataError, match=r"labelled image\(s\) cannot be read.*bad\.jpg"):
        load_dataset(root, "train", image_shape=(3, 8, 8))


def test_a_class_with_one_label_gets_a_warning_and_no_unlabelled_folder_is_fine(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "few"
    save(photo(COLOURS["red"], 0), root / "labelled" / "red" / "a.png", "PNG")
    save(photo(COLOURS["red"], 1), root / "labelled" / "red" / "b.png", "PNG")
    save(photo(COLOURS["blue"], 2), root / "labelled" / "blue" / "a.png", "PNG")
    with caplog.at_level(logging.WARNING):
        train = load_dataset(root, "train", image_shape=(3, 8, 8))
    assert "only one labelled image for class(es) blue" in caplog.text
    assert train.num_unlabelled == 0 and len(train) == 3
    with pytest.raises(DataError, match="no test split"):
        load_dataset(root, "test", image_shape=(3, 8, 8))


# ----------------------------------------------------------------------------------------------------------
# A folder and a CSV of labels
# ----------------------------------------------------------------------------------------------------------


def write_csv_dataset(root: Path) -> Path:
    for index in range(9):
        name = list(COLOURS)[index % 3]
        save(photo(COLOURS[name], index), root / "shots" / f"{index}.jpg", "JPEG")
    save(photo(COLOURS["red"], 50), root / "test" / "red" / "t.png", "PNG")
    labels = root / "labels.csv"
    labels.write_text("path,label\nshots/0.jpg,red\nshots/1.jpg,green\nshots/2.jpg,blue\nshots/3.jpg,red\n")
    return labels


def test_a_csv_labels_the_listed_images_and_leaves_the_rest_unlabelled(tmp_path: Path) -> None:
    labels = write_csv_dataset(tmp_path / "data")
    train = load_dataset(tmp_path / "data", "train", image_shape=(3, 8, 8), labels_csv=labels)
    assert train.class_names == ["blue", "green", "red"]
    assert sorted(train.labels.tolist()) == [UNLABELLED] * 5 + [0, 1, 2, 2]
    assert len(train) == 9  # test/ is not part of the unlabelled pool
    test = load_dataset(tmp_path / "data", "test", image_shape=(3, 8, 8), labels_csv=labels)
    assert test.labels.tolist() == [2]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("shots/0.jpg,red\nshots/missing.jpg,red\n", r"not found under .*missing\.jpg \(line 2\)"),
        ("shots/0.jpg,red\nshots/0.jpg,blue\n", r"listed more than once: shots/0\.jpg"),
        ("shots/0.jpg,red\nshots/1.jpg\n", r"line 2: expected 'path,label'"),
        ("path,label\n", "no labels in it"),
    ],
)
def test_csv_mistakes_are_named(tmp_path: Path, rows: str, message: str) -> None:
    labels = write_csv_dataset(tmp_path / "data")
    labels.write_text(rows)
    with pytest.raises(DataError, match=message):
        load_dataset(tmp_path / "data", "train", image_shape=(3, 8, 8), labels_csv=labels)


def test_a_test_class_the_csv_does_not_name_is_an_error(tmp_path: Path) -> None:
    labels = write_csv_dataset(tmp_path / "data")
    save(photo(COLOURS["red"], 60), tmp_path / "data" / "test" / "purple" / "p.png", "PNG")
    with pytest.raises(DataError, match="classes the training labels do not name: purple"):
        load_dataset(tmp_path / "data", "test", image_shape=(3, 8, 8), labels_csv=labels)


# ----------------------------------------------------------------------------------------------------------
# .npz with -1 labels or a separate unlabelled array
# ----------------------------------------------------------------------------------------------------------


def test_npz_minus_one_labels_and_a_separate_unlabelled_array(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10, 6, 6), dtype=np.uint8)
    labels = np.array([0, 1, -1, -1, 0, 1, -1, 2, 2, -1])
    np.savez(tmp_path / "data.npz", x_train=images, y_train=labels, x_test=images[:2], y_test=labels[[0, 1]])
    train = load_dataset(tmp_path / "data.npz", "train")
    assert train.num_unlabelled == 4 and train.class_names == ["0", "1", "2"]
    extra = rng.integers(0, 256, size=(5, 6, 6), dtype=np.uint8)
    np.savez(tmp_path / "data.npz", x_train=images[labels >= 0], y_train=labels[labels >= 0], x_unlabelled=extra,
             x_test=images[:2], y_test=labels[[0, 1]])  # fmt: skip
    train = load_dataset(tmp_path / "data.npz", "train")
    assert len(train) == 11 and train.num_unlabelled == 5
    np.testing.assert_array_equal(train.images[-5:, 0], extra)
    with pytest.raises(DataError, match="-1"):
        np.savez(tmp_path / "bad.npz", x_train=images, y_train=labels - 1)
        load_dataset(tmp_path / "bad.npz", "train")


# ----------------------------------------------------------------------------------------------------------
# The split on partly labelled data
# ----------------------------------------------------------------------------------------------------------


def test_every_label_is_used_by_default_and_k_per_class_can_be_held_out() -> None:
    labels = np.array([0] * 6 + [1] * 4 + [UNLABELLED] * 20)
    split = split_semi_supervised(labels, None, 0, seed=0)
    assert sorted(split.labelled.tolist()) == list(range(10)) and len(split.validation) == 0
    assert len(split.unlabelled) == 30
    held = split_semi_supervised(labels, None, 0, seed=0, val_labels_per_class=2)
    assert np.bincount(labels[held.validation]).tolist() == [2, 2]
    assert np.bincount(labels[held.labelled]).tolist() == [4, 2]
    assert not set(held.validation.tolist()) & set(held.unlabelled.tolist())
    with pytest.raises(DataError, match="class 1 has only 4"):
        split_semi_supervised(labels, None, 0, seed=0, val_labels_per_class=4)


# ----------------------------------------------------------------------------------------------------------
# The decode cache
# ----------------------------------------------------------------------------------------------------------


def test_the_cache_is_hit_and_invalidated_when_a_file_changes(tmp_path: Path, private_cache: Path) -> None:
    paths = [save(photo(COLOURS["red"], index), tmp_path / f"{index}.png", "PNG") for index in range(4)]
    first, readable = decode_files(paths, (3, 8, 8), progress=False)
    assert readable.all() and len(list(private_cache.iterdir())) == 1
    entry = next(private_cache.iterdir())
    calls: list[int] = []
    original = decode_module._decode_all

    def counting(*args: object, **kwargs: object) -> np.ndarray:
        calls.append(1)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    decode_module._decode_all = counting  # type: ignore[assignment]
    try:
        again, _ = decode_files(paths, (3, 8, 8), progress=False)
        assert calls == [] and np.array_equal(first, again)  # a hit: nothing decoded
        save(photo(COLOURS["blue"], 9), paths[2], "PNG")
        os.utime(paths[2], ns=(entry.stat().st_mtime_ns + 10**9,) * 2)
        changed, _ = decode_files(paths, (3, 8, 8), progress=False)
        assert calls == [1] and changed[2, 2].mean() > changed[2, 0].mean()  # the blue image, decoded afresh
        decode_files(paths, (3, 16, 16), progress=False)  # another shape is another entry
        assert calls == [1, 1]
    finally:
        decode_module._decode_all = original  # type: ignore[assignment]


def test_a_damaged_cache_entry_is_decoded_afresh(tmp_path: Path, private_cache: Path) -> None:
    paths = [save(photo(COLOURS["green"], index), tmp_path / f"{index}.png", "PNG") for index in range(3)]
    first, _ = decode_files(paths, (3, 8, 8), progress=False)
    entry = next(private_cache.iterdir())
    entry.write_bytes(entry.read_bytes()[:100])  # what a torn write would leave without the atomic rename
    again, readable = decode_files(paths, (3, 8, 8), progress=False)
    assert readable.all() and np.array_equal(first, again)


@pytest.mark.slow
def test_a_decode_killed_while_caching_leaves_no_cache_entry(tmp_path: Path, private_cache: Path) -> None:
    """Kill the process in the middle of writing its cache entry: no entry (and no torn file) remains."""
    paths = [save(photo(COLOURS["red"], index), tmp_path / f"{index}.png", "PNG") for index in range(50)]
    script = (
        "import os, sys, signal\n"
        "from pathlib import Path\n"
        "import model.directory as directory\n"
        "original = os.replace\n"
        "def killed_before_rename(src, dst):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "os.replace = killed_before_rename\n"
        "from training.readers.decode import decode_files\n"
        "paths = [Path(p) for p in sys.argv[1:]]\n"
        "decode_files(paths, (3, 8, 8), progress=False)\n"
    )
    env = {**os.environ, decode_module.CACHE_DIR_ENV: str(private_cache)}
    result = subprocess.run([sys.executable, "-c", script, *map(str, paths)], env=env, timeout=120)
    assert result.returncode == -9
    leftovers = list(private_cache.iterdir()) if private_cache.exists() else []
    assert not [path for path in leftovers if path.suffix == ".npy"]  # only the hidden temp file, if any
    images, readable = decode_files(paths, (3, 8, 8), progress=False)
    assert readable.all() and images.shape == (50, 3, 8, 8)


# ----------------------------------------------------------------------------------------------------------
# End to end, on a folder written from the real Fashion-MNIST
# ----------------------------------------------------------------------------------------------------------

REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def write_fashion_mnist_folder(root: Path, labelled_per_class: int, unlabelled: int, test_per_class: int) -> None:
    """What a user's partly labelled folder looks like: a few labelled PNGs per class, a pile of JPEGs, test/."""
    from training.readers import load_dataset as read

    train = read("fashion-mnist", "train", data_dir=REAL_FASHION_MNIST)
    test = read("fashion-mnist", "test", data_dir=REAL_FASHION_MNIST)
    names = [name.replace("/", "-") for name in train.class_names]
    order = np.random.default_rng(0).permutation(len(train))
    for class_index, name in enumerate(names):
        members = order[train.labels[order] == class_index][:labelled_per_class]
        for index in members:
            save(Image.fromarray(train.images[index, 0]), root / "labelled" / name / f"{index}.png", "PNG")
        test_members = np.flatnonzero(test.labels == class_index)[:test_per_class]
        for index in test_members:
            save(Image.fromarray(test.images[index, 0]), root / "test" / name / f"{index}.png", "PNG")
    for index in order[-unlabelled:]:
        save(Image.fromarray(train.images[index, 0]), root / "unlabelled" / f"{index % 7}" / f"{index}.jpg", "JPEG")


@pytest.mark.slow
@pytest.mark.skipif(not REAL_FASHION_MNIST.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_a_partly_labelled_fashion_mnist_folder_trains_and_evaluates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from model import read_card
    from training import cli, evaluate

    data = tmp_path / "clothes"
    write_fashion_mnist_folder(data, labelled_per_class=10, unlabelled=3000, test_per_class=50)
    out = tmp_path / "run"
    # Only --dataset and --out, plus a short budget (the default one is a 15-minute run).
    assert cli.main(["--dataset", str(data), "--out", str(out), "--steps", "400", "--no-progress"]) == 0
    card = read_card(out / "model")
    assert card.image_shape == (1, 28, 28) and card.discriminator.architecture == "mlp"  # chosen from the images
    assert card.training["num_labelled"] == 100 and card.training["num_unlabelled"] == 3100
    assert set(card.training["labelled_per_class"].values()) == {10}
    assert card.training["selection"] == {"rule": "final", "round": 1}
    assert card.metrics["num_test_images"] == 500
    capsys.readouterr()
    assert evaluate.main([str(out / "model"), "--dataset", str(data), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_test_images"] == 500
    assert result["test_accuracy"] == pytest.approx(card.metrics["test_accuracy"])
    assert result["test_accuracy"] > 0.45  # chance is 0.10; 400 steps from 100 labels
