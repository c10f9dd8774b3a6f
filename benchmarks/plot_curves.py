"""Draw the training curves of several runs on one PNG, for the recipe log (benchmarks/results/).

Each run directory's ``metrics.jsonl`` (one record per round, written by ``sgan-train``) gives four panels
against passes over the unlabelled pool: validation accuracy (runs with ``--val-size`` only), the labelled loss,
the unsupervised loss and the realness of the generator's images (a labels-only baseline has only the labelled
loss; a panel no run has is left out). Each run's own ``report.html`` already draws these for one run; this
sets several side by side, the way the recipe log compares them.

    python benchmarks/plot_curves.py --out benchmarks/results/cifar10_curves_budget.png \
        "8,000 steps=runs/research/cifar-fm-l1-8000" "16,000 steps=runs/research/cifar-l1-16000"
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

from model.directory import atomic_write_bytes

PANELS = (
    ("val_accuracy", "validation accuracy"),
    ("loss_sup", "labelled loss"),
    ("loss_unsup", "unsupervised loss"),
    ("realness_generated", "realness of G's images"),
)


def read_rounds(run_dir: Path) -> list[dict[str, Any]]:
    """The run's per-round records, in order."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise SystemExit(f"{run_dir}: no metrics.jsonl (is it an sgan-train run directory?)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def parse_run(text: str) -> tuple[str, Path]:
    """``LABEL=DIR``, or a bare DIR labelled with its own name."""
    label, _, directory = text.rpartition("=")
    path = Path(directory)
    return (label or path.name), path


def draw(runs: list[tuple[str, list[dict[str, Any]]]], title: str) -> bytes:
    # A bare Figure on the Agg canvas (no pyplot, no display), as training/report.py draws; imported here because
    # matplotlib is the optional ``report`` extra.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Runs without --val-size have no validation accuracy: their figure leaves that panel out.
    panels = [(key, name) for key, name in PANELS if any(r.get(key) is not None for _, rounds in runs for r in rounds)]
    rows = (len(panels) + 1) // 2
    figure = Figure(figsize=(11, 3.75 * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, 2, squeeze=False).flatten()
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    for ax, (key, name) in zip(axes, panels, strict=False):  # more axes than panels when their count is odd
        # A fixed colour per run: a run missing from a panel (a baseline has no unsupervised loss) must not
        # shift the colours of the runs after it.
        for index, (label, rounds) in enumerate(runs):
            points = [(r["passes"], r[key]) for r in rounds if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points, strict=True), marker=".", label=label, color=f"C{index % 10}")
        ax.set_title(name)
        ax.set_xlabel("passes over the unlabelled images")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    figure.suptitle(title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR (or RUN_DIR)")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--title", default="Training curves")
    args = parser.parse_args()
    runs = [(label, read_rounds(path)) for label, path in map(parse_run, args.runs)]
    atomic_write_bytes(Path(args.out), draw(runs, args.title))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
