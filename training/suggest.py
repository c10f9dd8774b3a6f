"""``sgan-suggest``: which unlabelled images of a partly labelled dataset to label next (docs/design.md, What
to label next).

It reads the dataset in the forms ``sgan-train`` reads (``labelled/<class>/`` + ``unlabelled/``, a folder and
a ``--labels`` CSV, or arrays such as an .npz with label -1 for unlabelled images), scores every unlabelled
image with the model's discriminator, ranks them with ``model.suggest.rank_for_labelling`` (the rule the
server's ``POST /suggest`` uses too) and writes a CSV, optionally a contact sheet to label from and copies of
the suggested files in ``DIR/unsorted/``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import logging
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from model import ModelCard, ModelDirectoryError, load_model_dir
from model.directory import atomic_write_bytes
from model.imaging import encode_png, tile_grid
from model.networks import Discriminator
from model.suggest import MIN_REALNESS, ImageScores, Ranking, rank_for_labelling, score_images
from training.readers import UNLABELLED, DataError, load_dataset
from training.readers.decode import decode_files
from training.readers.folder import describe_skipped, image_files, subfolders
from training.readers.partly import LABELLED_NAMES, TEST_FOLDER, UNLABELLED_NAMES, _child, _csv_rows
from training.runtime import select_device

logger = logging.getLogger(__name__)

SCORE_BATCH = 500  # images per forward pass
SHEET_TILE_PIXELS = 112  # tiles are upscaled (nearest neighbour) to at least this size: 28x28 becomes 4x
SHEET_COLUMNS = 10
CSV_COLUMNS = ("rank", "path", "index", "predicted", "confidence", "realness", "score")


# ----------------------------------------------------------------------------------------------------------
# The unlabelled pool, with where each image came from
# ----------------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class UnlabelledPool:
    """The unlabelled images of a dataset and their sources: files (relative to ``root``) or array rows."""

    images: np.ndarray  # uint8 (N, C, H, W)
    class_names: list[str]
    root: Path | None = None  # the dataset folder, for file datasets
    paths: list[Path] | None = None  # (N,) the source files; None for arrays
    rows: np.ndarray | None = None  # (N,) int64 rows in the dataset's training arrays; None for files

    def source(self, position: int) -> tuple[str, str]:
        """(path relative to the dataset folder, array row): one of them is empty."""
        if self.paths is not None and self.root is not None:
            return self.paths[position].relative_to(self.root).as_posix(), ""
        assert self.rows is not None
        return "", str(int(self.rows[position]))


def read_unlabelled_pool(
    dataset: str, image_shape: tuple[int, int, int], labels_csv: str | None = None, data_dir: str | None = None
) -> UnlabelledPool:
    """The unlabelled images of ``dataset`` (what ``sgan-train --dataset`` takes), decoded to ``image_shape``
    exactly as the readers decode them. Files keep their paths, so the suggestions can name them."""
    path = Path(dataset).expanduser()
    if labels_csv is not None:
        if not path.is_dir():
            raise DataError(f"--labels needs --dataset to name the folder that holds the images, not {dataset}")
        class_names, labelled, unlabelled = _csv_form(path, Path(labels_csv).expanduser())
    elif path.is_dir() and _child(path, LABELLED_NAMES) is not None:
        class_names, labelled, unlabelled = _folder_form(path)
    else:
        return _array_pool(dataset, image_shape, data_dir)
    unlabelled = _without_labelled_copies(unlabelled, labelled)
    images, readable = decode_files(unlabelled, image_shape)
    if not readable.all():
        skipped = [file for file, ok in zip(unlabelled, readable, strict=True) if not ok]
        logger.warning("skipped %d unreadable image file(s): %s", len(skipped), describe_skipped(skipped, path))
    kept = [file for file, ok in zip(unlabelled, readable, strict=True) if ok]
    return UnlabelledPool(images[readable], class_names, root=path, paths=kept)


def _folder_form(root: Path) -> tuple[list[str], list[Path], list[Path]]:
    """``labelled/<class>/`` + ``unlabelled/``, listed as ``PartlyLabelledFolderReader`` lists them."""
    labelled_root = _child(root, LABELLED_NAMES)
    assert labelled_root is not None
    class_names = [folder.name for folder in subfolders(labelled_root)]
    labelled = [file for name in class_names for file in image_files(labelled_root / name)]
    unlabelled_root = _child(root, UNLABELLED_NAMES)
    unlabelled = image_files(unlabelled_root) if unlabelled_root is not None else []
    return class_names, labelled, unlabelled


def _csv_form(root: Path, csv_path: Path) -> tuple[list[str], list[Path], list[Path]]:
    """A folder and a CSV of labels, listed as ``CsvLabelsReader`` lists them: every image not in the CSV
    (and not under ``test/``) is unlabelled."""
    if not csv_path.is_file():
        raise DataError(f"--labels {csv_path}: no such file")
    rows = _csv_rows(csv_path)
    class_names = sorted({label for _, _, label in rows})
    labelled = [root / file for _, file, _ in rows]
    listed = {file.resolve() for file in labelled}
    test_root = (root / TEST_FOLDER).resolve()
    unlabelled = [
        file for file in image_files(root) if file.resolve() not in listed and test_root not in file.resolve().parents
    ]
    return class_names, labelled, unlabelled


def _without_labelled_copies(unlabelled: list[Path], labelled: list[Path]) -> list[Path]:
    """Drop unlabelled files whose bytes equal a labelled file's: what ``--copy-to`` copied and the user then
    sorted into a class folder, while the original stayed in ``unlabelled/``. Only files of a labelled file's
    size are hashed."""
    sizes = {file.stat().st_size for file in labelled if file.is_file()}
    candidates = [file for file in unlabelled if file.stat().st_size in sizes]
    if not candidates:
        return unlabelled
    labelled_digests = {_sha256(file) for file in labelled if file.is_file() and file.stat().st_size in sizes}
    copies = {file for file in candidates if _sha256(file) in labelled_digests}
    if copies:
        logger.info("%d unlabelled image(s) are copies of labelled ones: not suggested", len(copies))
    return [file for file in unlabelled if file not in copies]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _array_pool(dataset: str, image_shape: tuple[int, int, int], data_dir: str | None) -> UnlabelledPool:
    """Datasets without files (.npz, IDX, CIFAR batches): the rows labelled -1."""
    train = load_dataset(dataset, "train", data_dir=data_dir, image_shape=image_shape)
    if train.image_shape != image_shape:
        raise DataError(f"the dataset's images are {train.image_shape}, the model takes {image_shape}")
    rows = np.flatnonzero(train.labels == UNLABELLED)
    return UnlabelledPool(train.images[rows], train.class_names, rows=rows.astype(np.int64))


def check_pool(pool: UnlabelledPool, card: ModelCard, dataset: str) -> None:
    """A clear message for the two ways the pool and the model cannot go together."""
    if pool.class_names != card.class_names:
        raise DataError(
            f"the model's classes ({', '.join(card.class_names)}) are not the dataset's "
            f"({', '.join(pool.class_names)}): rank with a model trained on {dataset}"
        )
    if not len(pool.images):
        raise DataError(
            f"{dataset} has no unlabelled images to rank: put them under {dataset}/unlabelled/ (a folder), "
            "leave them out of the --labels CSV, or give them the label -1 (arrays)"
        )


# ----------------------------------------------------------------------------------------------------------
# Scoring and the outputs
# ----------------------------------------------------------------------------------------------------------


def score_pool(discriminator: Discriminator, images: np.ndarray, progress: bool = True) -> ImageScores:
    """``model.suggest.score_images`` over the whole pool, in batches."""
    starts = range(0, len(images), SCORE_BATCH)
    parts = [
        score_images(discriminator, images[start : start + SCORE_BATCH])
        for start in tqdm(starts, desc="scoring", unit="batch", disable=not progress, leave=False)
    ]
    return ImageScores.concatenate(parts)


@dataclass(frozen=True)
class Suggestion:
    """One row of the CSV."""

    rank: int
    path: str
    index: str
    predicted: str
    confidence: float
    realness: float
    score: float


def suggestions(pool: UnlabelledPool, scores: ImageScores, ranking: Ranking) -> list[Suggestion]:
    rows = []
    for rank, position in enumerate(ranking.picks, start=1):
        probabilities = scores.probabilities[position]
        predicted = int(probabilities.argmax())
        path, index = pool.source(int(position))
        rows.append(
            Suggestion(
                rank=rank,
                path=path,
                index=index,
                predicted=pool.class_names[predicted],
                confidence=float(probabilities[predicted]),
                realness=float(scores.realness[position]),
                score=float(ranking.scores[position]),
            )
        )
    return rows


def write_csv(path: Path, rows: Sequence[Suggestion]) -> None:
    """The suggestions as CSV (``CSV_COLUMNS``), written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(
            [row.rank, row.path, row.index, row.predicted, f"{row.confidence:.4f}", f"{row.realness:.4f}"]
            + [f"{row.score:.4f}"]
        )
    atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))


def contact_sheet(images: np.ndarray, captions: Sequence[tuple[str, str]]) -> bytes:
    """PNG of uint8 (N, C, H, W) images, upscaled to about ``SHEET_TILE_PIXELS`` (nearest neighbour, so small
    images stay crisp), each with two caption lines under it, in rows of ``SHEET_COLUMNS``."""
    count, channels, height, width = images.shape
    scale = max(1, -(-SHEET_TILE_PIXELS // max(height, width)))
    tiles = images.repeat(scale, axis=2).repeat(scale, axis=3)  # (N, C, H*s, W*s)
    font = ImageFont.load_default()
    line_height = int(font.getbbox("Ag")[3]) + 2  # the bottom of the lowest glyph, drawn from y = 0
    caption_height = 2 * line_height + 4
    captioned = np.full((count, channels, height * scale + caption_height, width * scale), 255, dtype=np.uint8)
    captioned[:, :, : height * scale] = tiles
    for tile, lines in zip(captioned, captions, strict=True):
        strip = Image.new("L", (width * scale, caption_height), 255)
        draw = ImageDraw.Draw(strip)
        for number, line in enumerate(lines):
            draw.text((2, 2 + number * line_height), _fit(line, draw, font, width * scale - 4), fill=0, font=font)
        tile[:, height * scale :] = np.asarray(strip)[None]
    return encode_png(tile_grid(captioned, columns=min(SHEET_COLUMNS, max(count, 1)), padding=4))


def _fit(text: str, draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> str:
    """``text``, cut with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def copy_target(pool: UnlabelledPool, directory: Path) -> Path:
    """``directory/unsorted/``, where ``--copy-to`` puts the suggested files; checked before any work is done.
    Refuses datasets without files, and an ``unsorted/`` that still holds files (the last round's)."""
    if pool.paths is None:
        raise DataError("--copy-to needs image files: this dataset is arrays (the CSV gives each image's index)")
    target = directory / "unsorted"
    if target.is_dir() and any(target.iterdir()):
        raise DataError(f"{target} still holds files: sort them into class folders first, or choose another --copy-to")
    return target


def copy_suggested(pool: UnlabelledPool, ranking: Ranking, target: Path) -> None:
    """Copy the suggested files into ``target`` as ``<rank>-<name>`` (the rank keeps names unique and the
    order visible); the originals stay where they are."""
    assert pool.paths is not None
    target.mkdir(parents=True, exist_ok=True)
    digits = len(str(len(ranking.picks)))
    for rank, position in enumerate(ranking.picks, start=1):
        source = pool.paths[int(position)]
        shutil.copy2(source, target / f"{rank:0{digits}d}-{source.name}")


# ----------------------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sgan-suggest",
        description="Rank the unlabelled images of a partly labelled dataset by what a label would teach the "
        "model: the ones it cannot place between two classes first, junk (low realness) skipped, picks spread "
        "over confusable class pairs and near-duplicates.",
    )
    parser.add_argument("model_dir", help="model directory written by sgan-train on this dataset")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", required=True, help="what sgan-train took: a partly labelled folder, .npz, ...")
    data.add_argument("--labels", help="the CSV of path,label rows, for a folder of images (as sgan-train --labels)")
    data.add_argument("--data-dir", help="directory holding a named dataset's files")
    output = parser.add_argument_group("output")
    output.add_argument("--count", type=int, default=100, help="how many images to suggest (default 100)")
    output.add_argument("--out", default="suggestions.csv", help="the CSV to write (default suggestions.csv)")
    output.add_argument("--sheet", help="also write a contact sheet PNG of the suggestions, to label from")
    output.add_argument("--copy-to", help="copy the suggested files into COPY_TO/unsorted/ (originals untouched)")
    rule = parser.add_argument_group("rule")
    rule.add_argument(
        "--min-realness",
        type=float,
        default=MIN_REALNESS,
        help=f"images the discriminator finds less real than this are junk, never suggested (default {MIN_REALNESS})",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return parser


def run(args: argparse.Namespace) -> str:
    """Do what the command line asks; returns the summary line."""
    if args.count < 1:
        raise DataError(f"--count must be at least 1, got {args.count}")
    loaded = load_model_dir(args.model_dir, device=select_device(args.device))
    card = loaded.card
    pool = read_unlabelled_pool(args.dataset, card.image_shape, args.labels, args.data_dir)
    check_pool(pool, card, args.dataset)
    target = copy_target(pool, Path(args.copy_to)) if args.copy_to else None
    scores = score_pool(loaded.discriminator, pool.images, args.progress)
    ranking = rank_for_labelling(scores, args.count, min_realness=args.min_realness)
    rows = suggestions(pool, scores, ranking)
    write_csv(Path(args.out), rows)
    written = [args.out]
    if args.sheet:
        captions = [(f"{row.rank}. {row.predicted} {row.confidence:.2f}", row.path or f"#{row.index}") for row in rows]
        atomic_write_bytes(Path(args.sheet), contact_sheet(pool.images[ranking.picks], captions))
        written.append(args.sheet)
    if target is not None:
        copy_suggested(pool, ranking, target)
        written.append(f"{target}/")
    duplicates = int((ranking.duplicate_of >= 0).sum())
    return (
        f"ranked {len(pool.images)} unlabelled images ({int(ranking.junk.sum())} junk skipped, {duplicates} "
        f"near-duplicates passed over): {len(rows)} suggestions in {', '.join(written)}"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        summary = run(args)
    except (DataError, ModelDirectoryError, OSError, ValueError) as exc:
        print(f"sgan-suggest: error: {exc}", file=sys.stderr)
        return 2
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
