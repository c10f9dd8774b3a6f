"""The report of a training run or an evaluation: one self-contained HTML file to look at instead of numbers to
read (docs/design.md, Reports).

It holds the run's facts, curves over the rounds (losses, the labelled check, realness of real vs generated
images), the confusion matrix as a heat map, per-class accuracy beside the labels-only baseline's, realness
histograms (test images vs noise vs out-of-distribution sets) and the generator's samples of the first, middle
and last rounds. matplotlib (the ``report`` extra) draws every plot on its Agg canvas, no display needed; each
PNG is inlined as base64, so the file opens from disk with no network. Only this module imports matplotlib.
"""

from __future__ import annotations

import base64
import datetime
import html
import importlib.util
import io
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model import Discriminator, LoadedModel, ModelCard, load_model_dir, read_card
from model.directory import CARD_FILE, atomic_write_bytes
from training.evaluate import ClassificationReport, auroc, noise_images, realness_scores
from training.readers import DataError, ImageDataset
from training.rundir import RunDirectory

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"
INSTALL_HINT = "pip install 'sgan-service[report]'"
NOISE_IMAGES = 2000  # at most: enough for a smooth histogram, and no more than there are test images to set beside
COLOURS = {"test images": "#2f6fdf", "noise": "#98a2b3"}  # the rest take matplotlib's cycle


def report_available() -> bool:
    """Whether matplotlib (the ``report`` extra) is installed."""
    return importlib.util.find_spec("matplotlib") is not None


@dataclass
class Section:
    heading: str
    text: str = ""
    plots: list[bytes] = field(default_factory=list)  # PNGs drawn by matplotlib, one per plot
    pictures: list[tuple[str, bytes]] = field(default_factory=list)  # (caption, PNG): the sample grids


@dataclass
class Report:
    title: str
    facts: list[tuple[str, str]]
    sections: list[Section]

    def write(self, path: Path) -> None:
        """Atomically: a reader (or a run killed meanwhile) sees the previous report or this one, never a part."""
        atomic_write_bytes(path, render_html(self).encode())


# ----------------------------------------------------------------------------------------------------------
# The HTML
# ----------------------------------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #101828; background: #f8f9fb;
       margin: 0 auto; max-width: 1100px; padding: 1rem; line-height: 1.4; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 0; }
section { background: #fff; border: 1px solid #d0d5dd; border-radius: 10px; padding: 1rem; margin: 1rem 0; }
table.facts { border-collapse: collapse; }
.facts th { text-align: left; vertical-align: top; white-space: nowrap; }
.facts td, .facts th { padding: 0.15rem 1rem 0.15rem 0; } .muted { color: #667085; font-size: 0.9rem; }
img.plot { max-width: 100%; height: auto; display: block; margin: 0.5rem 0; }
.samples { display: flex; flex-wrap: wrap; gap: 1rem; }
.samples figure { margin: 0; } .samples img { width: 280px; max-width: 100%; image-rendering: pixelated; }
"""


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _section_html(section: Section) -> str:
    parts = [f"<section>\n<h2>{html.escape(section.heading)}</h2>"]
    if section.text:
        parts.append(f'<p class="muted">{html.escape(section.text)}</p>')
    alt = html.escape(section.heading, quote=True)
    parts += [f'<img class="plot" alt="{alt}" src="{_data_uri(png)}">' for png in section.plots]
    if section.pictures:
        parts.append('<div class="samples">')
        for caption, png in section.pictures:
            text = html.escape(caption)
            parts.append(
                f'<figure><img class="sample-grid" alt="generator samples, {text}" src="{_data_uri(png)}">'
                f"<figcaption>{text}</figcaption></figure>"
            )
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


def render_html(report: Report) -> str:
    """The whole page: no script, no link, every image a data: URI."""
    facts = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in report.facts)
    written = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en">',
            '<head>\n<meta charset="utf-8">\n<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(report.title)}</title>\n<style>{STYLE}</style>\n</head>",
            f"<body>\n<h1>{html.escape(report.title)}</h1>",
            f'<p class="muted">Written by sgan-service, {written}.</p>',
            f'<section>\n<h2>Facts</h2>\n<table class="facts">\n{facts}\n</table>\n</section>',
            *(_section_html(section) for section in report.sections),
            "</body>\n</html>\n",
        ]
    )


# ----------------------------------------------------------------------------------------------------------
# The plots
# ----------------------------------------------------------------------------------------------------------


def _figure(width: float, height: float, columns: int = 1) -> tuple[Figure, list[Axes]]:
    # A bare Figure on the Agg canvas, not pyplot: no global state, no display, nothing kept alive.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, list(figure.subplots(1, columns, squeeze=False)[0])


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _steps_axis(axes: Axes, history: list[dict[str, Any]]) -> None:
    """Steps below, passes over the unlabelled pool above (a round's line has both)."""
    axes.set_xlabel("optimisation step")
    last = history[-1]
    if last.get("passes"):
        steps_per_pass = last["step"] / last["passes"]
        top = axes.secondary_xaxis("top", functions=(lambda s: s / steps_per_pass, lambda p: p * steps_per_pass))
        top.set_xlabel("passes over the unlabelled pool")
    axes.grid(alpha=0.3)


def _curve(axes: Axes, history: list[dict[str, Any]], key: str, label: str, **style: Any) -> bool:
    points = [(record["step"], record[key]) for record in history if record.get(key) is not None]
    if points:
        axes.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label, **style)
    return bool(points)


def plot_losses(history: list[dict[str, Any]]) -> bytes | None:
    """The discriminator's two losses on one axes, the generator's on its own: feature matching is a squared
    distance between feature means, on another scale altogether."""
    figure, (disc_axes, gen_axes) = _figure(10, 3.6, columns=2)
    drawn = [
        _curve(disc_axes, history, "loss_sup", "supervised (labelled images)"),
        _curve(disc_axes, history, "loss_unsup", "unsupervised (real vs fake)"),
    ]
    if not any(drawn):
        return None
    disc_axes.set_yscale("log")  # the supervised loss falls by orders of magnitude
    disc_axes.set(ylabel="mean loss over the round", title="Discriminator losses")
    disc_axes.legend()
    _steps_axis(disc_axes, history)
    if _curve(gen_axes, history, "loss_gen", "feature matching", color="#d92d20"):
        gen_axes.set_yscale("log")
        gen_axes.set(title="Generator loss (feature matching)")
        _steps_axis(gen_axes, history)
    else:
        gen_axes.set_axis_off()  # labels-only: no generator
    return _png(figure)


def plot_accuracy(history: list[dict[str, Any]], kept_round: int | None, test_accuracy: float | None) -> bytes | None:
    """Accuracy on the held-out labels per round (the only labelled check during training), and the kept
    model's test accuracy, measured once at the end."""
    figure, (axes,) = _figure(7, 3.6)
    if not _curve(axes, history, "val_accuracy", "held-out labels"):
        return None
    kept = next((record for record in history if record["round"] == kept_round), None)
    if kept is not None and kept.get("val_accuracy") is not None:
        axes.plot(kept["step"], kept["val_accuracy"], "*", markersize=14, color="#d92d20", label="kept model")
    if test_accuracy is not None:
        axes.axhline(test_accuracy, linestyle="--", color="#667085", label=f"test accuracy {test_accuracy:.3f}")
    axes.set_ylim(0, 1)
    axes.set_ylabel("accuracy")
    axes.set_title("Accuracy on the labelled check")
    axes.legend(loc="lower right")
    _steps_axis(axes, history)
    return _png(figure)


def plot_realness_curves(history: list[dict[str, Any]]) -> bytes | None:
    figure, (axes,) = _figure(7, 3.6)
    drawn = [
        _curve(axes, history, "realness_unlabelled", "realness of real unlabelled images"),
        _curve(axes, history, "realness_generated", "realness of generated images"),
        _curve(axes, history, "unlabelled_changed", "unlabelled predictions changed", linestyle=":"),
    ]
    if not any(drawn):
        return None
    axes.set_ylim(0, 1.02)
    axes.set_ylabel("mean / share")
    axes.set_title("The game: the discriminator's view of real and generated images")
    axes.legend(loc="center right")
    _steps_axis(axes, history)
    return _png(figure)


def plot_confusion(confusion: np.ndarray, class_names: list[str]) -> bytes:
    """Rows: true class; columns: predicted. Colour: the share of the row, so every class reads alike."""
    size = max(4.5, 0.55 * len(class_names) + 2.5)
    figure, (axes,) = _figure(size + 1, size)
    totals = confusion.sum(axis=1, keepdims=True)
    shares = np.divide(confusion, totals, out=np.zeros(confusion.shape), where=totals > 0)
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, label="share of the true class", shrink=0.8)
    ticks = np.arange(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, class_names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    if len(class_names) <= 20:  # counts stay legible up to about 20 classes
        font_size = 10 if len(class_names) <= 10 else 7
        for (row, column), count in np.ndenumerate(confusion):
            colour = "white" if shares[row, column] > 0.55 else "#101828"
            axes.text(column, row, str(count), ha="center", va="center", fontsize=font_size, color=colour)
    axes.set_title("Confusion matrix (test split)")
    return _png(figure)


def plot_per_class(per_class: dict[str, float], baseline: dict[str, float] | None) -> bytes:
    names = list(per_class)
    figure, (axes,) = _figure(7, max(2.5, 0.4 * len(names) + 1.2))
    positions = np.arange(len(names))
    height = 0.4 if baseline else 0.7
    axes.barh(positions, [per_class[name] for name in names], height=height, color="#2f6fdf", label="this model")
    if baseline:
        values = [baseline.get(name, float("nan")) for name in names]
        axes.barh(positions + height, values, height=height, color="#98a2b3", label="labels-only baseline")
        axes.legend(loc="lower right")
    axes.set_yticks(positions + (height / 2 if baseline else 0), names)
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_xlabel("accuracy on the test split")
    axes.grid(axis="x", alpha=0.3)
    axes.set_title("Accuracy per class")
    return _png(figure)


def plot_realness_histograms(realness: dict[str, np.ndarray]) -> bytes:
    """Each set's share of images per realness bin; the legend gives each other set's AUROC against the test
    images (1: realness tells them apart perfectly, 0.5: not at all)."""
    figure, (axes,) = _figure(7, 3.6)
    bins = np.linspace(0, 1, 51).tolist()
    reference = realness.get("test images")
    for name, scores in realness.items():
        label = f"{name} ({len(scores)})"
        if reference is not None and name != "test images" and len(scores) and len(reference):
            label += f", AUROC {auroc(reference, scores):.3f}"
        weights = np.full(len(scores), 1 / max(1, len(scores)))
        axes.hist(scores, bins=bins, weights=weights, histtype="stepfilled", alpha=0.45, label=label,
                  color=COLOURS.get(name), edgecolor=COLOURS.get(name))  # fmt: skip
    axes.set_xlim(0, 1)
    axes.set_yscale("log")  # the scores pile up near 0 and 1: the tails, where sets overlap, are what matters
    axes.set_xlabel("realness p(real | x)")
    axes.set_ylabel("share of the set's images")
    axes.set_title("How far to trust the realness score")
    axes.legend(loc="upper center")
    axes.grid(alpha=0.3)
    return _png(figure)


# ----------------------------------------------------------------------------------------------------------
# What the plots are drawn from
# ----------------------------------------------------------------------------------------------------------


def realness_by_set(
    discriminator: Discriminator, test_images: np.ndarray, others: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Per-image realness of the test images, of noise and of each out-of-distribution set given."""
    shape = discriminator.config.image_shape
    noise = noise_images(min(NOISE_IMAGES, max(1, len(test_images))), shape)
    sets = {"test images": test_images, "noise": noise, **(others or {})}
    return {name: realness_scores(discriminator, images) for name, images in sets.items()}


def _minutes(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def _selection_text(selection: dict[str, Any]) -> str:
    rule, chosen = selection.get("rule", "final"), selection.get("round")
    if rule == "final":
        return f"final: the last round's model (round {chosen})"
    accuracy = selection.get("accuracy")
    return f"{rule}: the best round ({chosen}), accuracy {accuracy:.3f} on {selection.get('held_out_images')} images"


def card_facts(card: ModelCard) -> list[tuple[str, str]]:
    """The model card's training facts, as a person reads them."""
    training, metrics = card.training, card.metrics
    per_class = training.get("labelled_per_class") or {}
    facts = [("model", f"{card.model_id}: {len(card.class_names)} classes, {'x'.join(map(str, card.image_shape))}")]
    if training.get("dataset"):
        facts.append(("data", f"{training['dataset']} ({training.get('source', '?')})"))
    if "num_labelled" in training:
        kind = training.get("mode", "semi-supervised")
        facts.append(("images", f"{training['num_labelled']} labelled, {training.get('num_unlabelled', 0)} "
                                f"unlabelled; {kind}"))  # fmt: skip
    if per_class:
        facts.append(("labels per class", ", ".join(f"{name} {count}" for name, count in per_class.items())))
    if training.get("selection"):
        facts.append(("model chosen by", _selection_text(training["selection"])))
    if "steps_done" in training:
        facts.append(("training", f"{training['steps_done']} of {training.get('budget_steps')} steps "
                                  f"({training.get('passes')} passes) in "
                                  f"{_minutes(training.get('duration_seconds', 0))}"))  # fmt: skip
    if training.get("device"):
        facts.append(("device", f"{training['device']}, {training.get('precision', 'fp32')}"))
    for key, label in (("test_accuracy", "test accuracy"), ("baseline_test_accuracy", "labels-only baseline")):
        if isinstance(metrics.get(key), float):
            facts.append((label, f"{metrics[key]:.4f}"))
    if training.get("command"):
        facts.append(("command", " ".join(training["command"])))
    return facts


def _sample_pictures(run_dir: RunDirectory, history: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    """The first, middle and last rounds' sample grids (the ones written)."""
    rounds = [record["round"] for record in history if run_dir.sample_path(record["round"]).is_file()]
    chosen = sorted({rounds[0], rounds[len(rounds) // 2], rounds[-1]}) if rounds else []
    by_round = {record["round"]: record for record in history}
    return [
        (
            f"round {r}: step {by_round[r]['step']}, {by_round[r].get('passes', '?')} passes",
            run_dir.sample_path(r).read_bytes(),
        )
        for r in chosen
    ]


def _test_sections(
    card: ModelCard,
    realness: dict[str, np.ndarray] | None,
    confusion: np.ndarray | None,
    baseline: dict[str, float] | None = None,
) -> list[Section]:
    sections = []
    if confusion is not None:
        sections.append(Section("Confusion matrix", "Rows: the true class; columns: the predicted one.",
                                [plot_confusion(np.asarray(confusion), card.class_names)]))  # fmt: skip
    per_class = card.metrics.get("per_class_test_accuracy")
    if per_class:
        note = "Beside the labels-only baseline's." if baseline else "No labels-only baseline was given."
        sections.append(Section("Accuracy per class", note, [plot_per_class(per_class, baseline)]))
    if realness:
        text = ("Realness is the discriminator's p(real | x). Where the test images and another set overlap, "
                "the score cannot tell them apart.")  # fmt: skip
        sections.append(Section("Realness", text, [plot_realness_histograms(realness)]))
    return sections


def run_report(run_dir: RunDirectory, test_set: ImageDataset | None, stopped: bool = False) -> Report:
    """The report of a training run, from its directory; ``test_set``: the test split the run was measured
    on at the end (none for a stopped run: the test split is read once, when training ends)."""
    history = run_dir.read_metrics()
    card = read_card(run_dir.model_dir) if (run_dir.model_dir / CARD_FILE).is_file() else None
    title = f"Training run {run_dir.path.name}" + (" (stopped; resume to finish it)" if stopped else "")
    facts = card_facts(card) if card else [("model", "none kept yet")]
    facts.insert(0, ("run directory", str(run_dir.path.resolve())))
    if history:
        facts.append(("rounds logged", f"{len(history)}, {_minutes(sum(r.get('seconds', 0) for r in history))}"))
    kept_round = card.training.get("selection", {}).get("round") if card else None
    test_accuracy = card.metrics.get("test_accuracy") if card else None
    curves = [
        plot_losses(history),
        plot_accuracy(history, kept_round, test_accuracy),
        plot_realness_curves(history),
    ]
    no_check = "" if any(r.get("val_accuracy") is not None for r in history) else (
        " No labels were held out, so there is no accuracy curve (--val-labels-per-class K draws one)."
    )  # fmt: skip
    sections = [Section("Curves over the rounds", "One point per round." + no_check, [c for c in curves if c])]
    if card is not None and test_set is not None and not stopped:
        loaded = load_model_dir(run_dir.model_dir)
        realness = realness_by_set(loaded.discriminator, test_set.labelled_only().images)
        sections += _test_sections(card, realness, card.metrics.get("confusion_matrix"))
    elif stopped:
        sections.append(Section("Test split", "Not read: a run reads its test split once, when it ends."))
    else:
        sections.append(Section("Test split", "None found, so there are no test figures."))
    pictures = _sample_pictures(run_dir, history)
    sections.append(Section("Generator samples", "" if pictures else "None: a labels-only run has no generator.",
                            pictures=pictures))  # fmt: skip
    return Report(title, facts, sections)


def evaluation_report(
    model_dir: str | Path,
    loaded: LoadedModel,
    dataset: ImageDataset,
    result: ClassificationReport,
    out_of_distribution: dict[str, np.ndarray],
    baseline: dict[str, float] | None = None,
) -> Report:
    """The report of one ``sgan-eval``: the model's facts, its confusion matrix, per-class accuracy (beside a
    labels-only baseline's when given) and realness histograms against noise and the out-of-distribution sets."""
    card = loaded.card
    measured = replace(card, metrics={"per_class_test_accuracy": result.per_class_accuracy})
    facts = [("model directory", str(Path(model_dir).resolve())), *card_facts(card)]
    facts.append(("evaluated on", f"{dataset.source}: {len(dataset.labels)} test images"))
    facts.append(("accuracy on these images", f"{result.accuracy:.4f}"))
    realness = realness_by_set(loaded.discriminator, dataset.images, out_of_distribution)
    sections = _test_sections(measured, realness, result.confusion, baseline)
    return Report(f"Evaluation of {card.model_id} on {Path(dataset.source).name}", facts, sections)


def write_run_report(run_dir: RunDirectory, test_set: ImageDataset | None, stopped: bool = False) -> Path | None:
    """``report.html`` in the run directory, when matplotlib is installed. A report that fails says why in the
    log and leaves the run (already saved) as it is."""
    if not report_available():
        logger.info("no report.html: it needs matplotlib (%s)", INSTALL_HINT)
        return None
    path = run_dir.path / REPORT_FILE
    try:
        run_report(run_dir, test_set, stopped).write(path)
    except (OSError, ValueError, DataError) as exc:
        logger.warning("report.html not written: %s", exc)
        return None
    logger.info("report: %s", path)
    return path
