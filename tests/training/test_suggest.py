"""What to label next: the ranking rule (model/suggest.py) on scores the test chooses, and ``sgan-suggest`` on a
hand-built model and partly labelled datasets the test writes (folder, folder + CSV, .npz)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BOTH, DARK, LEFT, RIGHT, build_halves_model_dir, halves
from PIL import Image

from model.suggest import ImageScores, entropy_uncertainty, margin_uncertainty, rank_for_labelling
from training.readers import decode as decode_module
from training.suggest import CSV_COLUMNS, main

# ----------------------------------------------------------------------------------------------------------
# The rule, on chosen scores
# ----------------------------------------------------------------------------------------------------------


def scores(probabilities: list[list[float]], realness: list[float], features: list[list[float]] | None = None):
    return ImageScores(
        probabilities=np.array(probabilities, dtype=np.float32),
        realness=np.array(realness, dtype=np.float32),
        features=None if features is None else np.array(features, dtype=np.float32),
    )


def test_an_unsure_image_ranks_above_a_sure_one_and_junk_is_skipped() -> None:
    pool = scores(
        probabilities=[[0.95, 0.03, 0.02], [0.5, 0.45, 0.05], [0.34, 0.33, 0.33], [0.7, 0.2, 0.1]],
        realness=[0.99, 0.98, 0.01, 0.97],  # image 2 is the least sure of all, but junk
    )
    ranking = rank_for_labelling(pool, count=4)
    assert ranking.picks.tolist() == [1, 3, 0]
    assert ranking.junk.tolist() == [False, False, True, False]
    assert ranking.scores[1] > ranking.scores[3] > ranking.scores[0]


def test_margin_and_entropy_scores() -> None:
    probabilities = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]], dtype=np.float32)
    assert margin_uncertainty(probabilities) == pytest.approx([0.0, 1.0, 1.0])
    # Entropy tells apart what margin does not: a spread over all classes, which junk images produce.
    assert entropy_uncertainty(probabilities) == pytest.approx([0.0, np.log(2) / np.log(3), 1.0], abs=1e-6)


def test_one_confusable_pair_does_not_take_every_slot() -> None:
    # Six images torn between classes 0 and 1 (the most unsure), two between 2 and 3.
    probabilities = [[0.5, 0.5 - 0.01 * i, 0.01 * i, 0.0] for i in range(6)] + [[0.0, 0.0, 0.7, 0.3]] * 2
    ranking = rank_for_labelling(scores(probabilities, [0.9] * 8), count=5, pair_share=0.4)
    assert ranking.picks.tolist() == [0, 1, 6, 7, 2]  # two per pair first, then the pair cap yields
    every_slot = rank_for_labelling(scores(probabilities, [0.9] * 8), count=5, pair_share=1.0)
    assert every_slot.picks.tolist() == [0, 1, 2, 3, 4]


def test_near_duplicates_are_passed_over() -> None:
    features = [[1.0, 0.0], [0.999, 0.001], [0.0, 1.0]]  # image 1 looks like image 0
    pool = scores([[0.5, 0.5], [0.5, 0.5], [0.8, 0.2]], [0.9] * 3, features)
    ranking = rank_for_labelling(pool, count=3)
    assert ranking.picks.tolist() == [0, 2]
    assert ranking.duplicate_of.tolist() == [-1, 0, -1]


def test_count_must_be_positive() -> None:
    with pytest.raises(ValueError, match="count"):
        rank_for_labelling(scores([[0.5, 0.5]], [0.9]), count=0)


# ----------------------------------------------------------------------------------------------------------
# A model whose answers the test knows, and datasets for it
# ----------------------------------------------------------------------------------------------------------


def save_png(pixels: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def write_folder(root: Path) -> Path:
    """labelled/left, labelled/right, and unlabelled images: unsure, unsure again (a copy), sure, junk."""
    save_png(halves(*LEFT), root / "labelled" / "left" / "l.png")
    save_png(halves(*RIGHT), root / "labelled" / "right" / "r.png")
    save_png(halves(0.9, 0.1), root / "unlabelled" / "a_sure.png")
    save_png(halves(*BOTH), root / "unlabelled" / "b_unsure.png")
    save_png(halves(*BOTH), root / "unlabelled" / "nested" / "c_unsure_copy.png")
    save_png(halves(*DARK), root / "unlabelled" / "d_junk.png")
    save_png(halves(0.5, 1.0), root / "unlabelled" / "e_fairly_sure.png")
    return root


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(decode_module.CACHE_DIR_ENV, str(tmp_path / "cache"))


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return build_halves_model_dir(tmp_path / "model")


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def suggest(model_dir: Path, dataset: Path, *options: str) -> int:
    return main([str(model_dir), "--dataset", str(dataset), "--no-progress", *options])


# ----------------------------------------------------------------------------------------------------------
# sgan-suggest
# ----------------------------------------------------------------------------------------------------------


def test_folder_ranking_csv_sheet_and_copies(model_dir: Path, tmp_path: Path, capsys) -> None:
    root = write_folder(tmp_path / "photos")
    out, sheet = tmp_path / "out" / "suggestions.csv", tmp_path / "out" / "sheet.png"
    code = suggest(model_dir, root, "--out", str(out), "--sheet", str(sheet), "--copy-to", str(root))
    assert code == 0, capsys.readouterr().err
    rows = read_rows(out)
    assert tuple(rows[0]) == CSV_COLUMNS
    # The unsure image first, its copy passed over, the junk skipped, the sure ones after.
    assert [row["path"] for row in rows] == ["unlabelled/b_unsure.png", "unlabelled/e_fairly_sure.png"] + [
        "unlabelled/a_sure.png"
    ]
    assert [row["predicted"] for row in rows] == ["left", "right", "left"]
    assert float(rows[0]["score"]) == pytest.approx(1.0) and float(rows[2]["score"]) < float(rows[1]["score"])
    assert all(float(row["realness"]) > 0.5 for row in rows) and all(row["index"] == "" for row in rows)
    summary = capsys.readouterr().out
    assert "1 junk skipped" in summary and "1 near-duplicates passed over" in summary
    with Image.open(sheet) as image:
        assert image.width >= 3 * 112 and image.height > 112  # tiles upscaled, with captions under them
    copied = sorted(path.name for path in (root / "unsorted").iterdir())
    assert copied == ["1-b_unsure.png", "2-e_fairly_sure.png", "3-a_sure.png"]
    assert (root / "unlabelled" / "b_unsure.png").is_file()  # originals untouched


def test_a_labelled_copy_is_not_suggested_again(model_dir: Path, tmp_path: Path) -> None:
    root = write_folder(tmp_path / "photos")
    assert suggest(model_dir, root, "--count", "1", "--out", str(tmp_path / "1.csv"), "--copy-to", str(root)) == 0
    # The user sorts the suggestion into a class folder; the original stays in unlabelled/.
    (root / "unsorted" / "1-b_unsure.png").rename(root / "labelled" / "left" / "1-b_unsure.png")
    assert suggest(model_dir, root, "--count", "1", "--out", str(tmp_path / "2.csv")) == 0
    # Both byte-identical copies of the labelled image are out of the pool now.
    assert [row["path"] for row in read_rows(tmp_path / "2.csv")] == ["unlabelled/e_fairly_sure.png"]


def test_folder_and_labels_csv(model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    save_png(halves(*LEFT), root / "l.png")
    save_png(halves(*RIGHT), root / "r.png")
    save_png(halves(*BOTH), root / "x" / "unsure.png")
    save_png(halves(0.9, 0.1), root / "sure.png")
    save_png(halves(*BOTH), root / "test" / "left" / "held_out.png")  # test/ is never in the pool
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\nl.png,left\nr.png,right\n")
    out = tmp_path / "suggestions.csv"
    assert suggest(model_dir, root, "--labels", str(labels), "--out", str(out)) == 0
    assert [row["path"] for row in read_rows(out)] == ["x/unsure.png", "sure.png"]


def test_npz_suggestions_give_the_array_index(model_dir: Path, tmp_path: Path) -> None:
    images = np.stack([halves(*LEFT), halves(*RIGHT), halves(0.9, 0.1), halves(*DARK), halves(*BOTH)])
    dataset = tmp_path / "data.npz"
    np.savez(dataset, x_train=images, y_train=np.array([0, 1, -1, -1, -1]), class_names=np.array(["left", "right"]))
    out = tmp_path / "suggestions.csv"
    assert suggest(model_dir, dataset, "--out", str(out)) == 0
    rows = read_rows(out)
    assert [(row["path"], row["index"]) for row in rows] == [("", "4"), ("", "2")]
    assert suggest(model_dir, dataset, "--out", str(out), "--copy-to", str(tmp_path / "copies")) == 2


def test_outputs_are_written_atomically(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    root = write_folder(tmp_path / "photos")
    out, sheet = tmp_path / "suggestions.csv", tmp_path / "sheet.png"
    out.write_text("the last round's suggestions\n")
    sheet.write_bytes(b"the last round's sheet")
    real_replace = os.replace

    def disk_full_for(victim: Path):
        def replace(source: str, destination: str) -> None:  # the new file's last step, swapping it in
            if Path(destination) == victim:
                raise OSError(28, "No space left on device")
            real_replace(source, destination)

        return replace

    monkeypatch.setattr(os, "replace", disk_full_for(out))
    assert suggest(model_dir, root, "--out", str(out), "--sheet", str(sheet)) == 2
    assert "No space left" in capsys.readouterr().err
    assert out.read_text() == "the last round's suggestions\n"  # the old file whole, no part of the new one
    monkeypatch.setattr(os, "replace", disk_full_for(sheet))
    assert suggest(model_dir, root, "--out", str(out), "--sheet", str(sheet)) == 2
    assert sheet.read_bytes() == b"the last round's sheet"
    assert read_rows(out)[0]["path"] == "unlabelled/b_unsure.png"  # the CSV got through
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []  # no temp files left


def test_a_model_of_other_classes_is_refused(tmp_path: Path, capsys) -> None:
    other = build_halves_model_dir(tmp_path / "other", class_names=("cat", "dog"))
    assert suggest(other, write_folder(tmp_path / "photos"), "--out", str(tmp_path / "s.csv")) == 2
    error = capsys.readouterr().err
    assert "the model's classes (cat, dog) are not the dataset's (left, right)" in error
    assert not (tmp_path / "s.csv").exists()


def test_no_unlabelled_images_is_a_clear_error(model_dir: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "photos"
    save_png(halves(*LEFT), root / "labelled" / "left" / "l.png")
    save_png(halves(*RIGHT), root / "labelled" / "right" / "r.png")
    assert suggest(model_dir, root, "--out", str(tmp_path / "s.csv")) == 2
    assert "has no unlabelled images to rank" in capsys.readouterr().err


def test_unsorted_files_from_the_last_round_are_not_overwritten(model_dir: Path, tmp_path: Path, capsys) -> None:
    root = write_folder(tmp_path / "photos")
    save_png(halves(*BOTH), root / "unsorted" / "1-b_unsure.png")
    assert suggest(model_dir, root, "--out", str(tmp_path / "s.csv"), "--copy-to", str(root)) == 2
    assert "still holds files" in capsys.readouterr().err
