"""What a person looks at after a run: report.html (of a run, a stopped run and an evaluation), its atomic
write, and the TensorBoard event files of ``--tensorboard``."""

from __future__ import annotations

import base64
import io
import json
import logging
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_trainer import _env, rounds_logged, write_bars_dataset

from model import read_card
from training import cli, evaluate, report
from training.rundir import RunDirectory

pytest.importorskip("matplotlib", reason="the report needs matplotlib (pip install -e '.[dev]')")

# Small networks: the report, not the model, is under test.
SMALL = ("--discriminator", "hidden_sizes=64,32", "--generator", "hidden_sizes=32")
VOID_ELEMENTS = {"meta", "img", "br", "hr", "link", "input", "source", "col", "area", "base", "wbr"}


def small_run_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--dataset", str(data), "--labels-per-class", "5", "--batch-size", "50", "--out", str(out),
            "--no-progress", *SMALL, *extra]  # fmt: skip


class PageParser(HTMLParser):
    """Checks that every element is closed in order, and collects the images and every URL-bearing attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.problems: list[str] = []
        self.images: list[dict[str, str]] = []
        self.urls: list[str] = []
        self.tags: set[str] = set()
        self.doctype = ""

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        values = {name: value or "" for name, value in attrs}
        self.urls += [values[name] for name in ("src", "href", "srcset", "action", "data") if name in values]
        if tag == "img":
            self.images.append(values)
        if tag not in VOID_ELEMENTS:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.open[-1:] or 'nothing'}")
        else:
            self.open.pop()


def parse_page(path: Path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def assert_self_contained_html(path: Path) -> PageParser:
    page = parse_page(path)
    assert page.doctype.lower() == "doctype html"
    assert not page.problems and not page.open, (page.problems, page.open)
    assert {"html", "head", "title", "body"} <= page.tags
    assert not page.tags & {"script", "link", "iframe", "object", "embed"}  # nothing that fetches or runs
    assert page.urls and all(url.startswith("data:image/png;base64,") for url in page.urls)
    for image in page.images:  # each inlined image is a whole PNG
        png = base64.b64decode(image["src"].removeprefix("data:image/png;base64,"), validate=True)
        assert Image.open(io.BytesIO(png)).format == "PNG"
    return page


def image_classes(page: PageParser) -> list[str]:
    return [image["class"] for image in page.images]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny finished run, with held-out labels (an accuracy curve) and TensorBoard on."""
    root = tmp_path_factory.mktemp("report-run")
    data = write_bars_dataset(root / "bars")
    out = root / "run"
    args = small_run_args(data, out, "--val-size", "200", "--steps", "60", "--round-steps", "20", "--tensorboard")
    assert cli.main(args) == 0
    return out


def test_a_finished_run_writes_a_self_contained_report_with_one_image_per_plot(finished_run: Path) -> None:
    path = finished_run / "report.html"
    page = assert_self_contained_html(path)
    # Curves (losses, held-out accuracy, realness), confusion matrix, per-class accuracy, realness histograms;
    # then the sample grids of the first, middle and last rounds.
    assert image_classes(page) == ["plot"] * 6 + ["sample-grid"] * 3
    text = path.read_text()
    for heading in (
        "Curves over the rounds",
        "Confusion matrix",
        "Accuracy per class",
        "Realness",
        "Generator samples",
    ):
        assert f"<h2>{heading}</h2>" in text
    for fact in ("labels per class", "model chosen by", "validation split", "device", "test accuracy"):
        assert fact in text
    assert "round 1: step 20" in text and "round 3: step 60" in text
    # The card now records the confusion matrix the report and the server's Model panel draw.
    card = read_card(finished_run / "model")
    assert np.array(card.metrics["confusion_matrix"]).sum() == card.metrics["num_test_images"] == 300


def test_tensorboard_event_files_hold_every_logged_scalar_and_the_sample_grids(finished_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(finished_run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    logged = [json.loads(line) for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    expected = {"loss_sup", "loss_unsup", "loss_gen", "realness_unlabelled", "realness_generated", "val_accuracy",
                "unlabelled_changed", "unlabelled_noise_auroc", "learning_rate", "passes", "seconds"}  # fmt: skip
    assert expected <= set(events.Tags()["scalars"])
    assert [(e.step, round(e.value, 5)) for e in events.Scalars("loss_sup")] == [
        (record["step"], round(record["loss_sup"], 5)) for record in logged
    ]
    assert events.Tags()["images"] == ["samples"]
    grids = events.Images("samples")
    assert [grid.step for grid in grids] == [20, 40, 60]
    assert (
        Image.open(io.BytesIO(grids[-1].encoded_image_string)).size
        == Image.open(finished_run / "samples" / "round_003.png").size
    )


def test_tensorboard_without_the_package_is_refused_before_training(tmp_path: Path, monkeypatch) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else
                        real_find_spec(name, *a))  # fmt: skip
    data = write_bars_dataset(tmp_path / "bars", train_count=200, test_count=10)
    assert cli.main(small_run_args(data, tmp_path / "run", "--steps", "4", "--tensorboard")) == 2
    assert not (tmp_path / "run" / "state").exists()


def test_an_evaluation_writes_its_report_beside_a_labels_only_baseline(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = finished_run.parent / "bars"
    baseline = tmp_path / "baseline"
    assert cli.main(small_run_args(data, baseline, "--baseline", "--steps", "20")) == 0
    path = tmp_path / "eval" / "report.html"
    args = [str(finished_run / "model"), "--dataset", str(data), "--ood-dataset", "noise", "--report", str(path),
            "--baseline-model", str(baseline / "model"), "--json"]  # fmt: skip
    capsys.readouterr()
    assert evaluate.main(args) == 0
    assert json.loads(capsys.readouterr().out)["num_test_images"] == 300
    page = assert_self_contained_html(path)
    assert image_classes(page) == ["plot"] * 3  # confusion matrix, per-class accuracy, realness histograms
    text = path.read_text()
    assert "Beside the labels-only baseline" in text and "300 test images" in text


def test_without_matplotlib_training_says_how_to_get_the_report_and_eval_refuses(
    finished_run: Path, tmp_path: Path, monkeypatch, caplog: pytest.LogCaptureFixture, capsys
) -> None:
    monkeypatch.setattr(report, "report_available", lambda: False)
    run_copy = tmp_path / "run"
    shutil.copytree(finished_run, run_copy)
    (run_copy / "report.html").unlink()
    with caplog.at_level(logging.INFO, logger="training.report"):
        assert report.write_run_report(RunDirectory(run_copy), None) is None
    assert "sgan-service[report]" in caplog.text
    assert not (run_copy / "report.html").exists()
    args = [
        str(finished_run / "model"),
        "--dataset",
        str(finished_run.parent / "bars"),
        "--report",
        str(tmp_path / "r.html"),
    ]
    assert evaluate.main(args) == 2
    assert "sgan-service[report]" in capsys.readouterr().err


def test_ctrl_c_writes_the_report_of_the_stopped_run(tmp_path: Path) -> None:
    data = write_bars_dataset(tmp_path / "bars", train_count=2400)
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "training", *small_run_args(data, out, "--steps", "100000", "--round-steps", "20")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while len(rounds_logged(out)) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    path = out / "report.html"
    page = assert_self_contained_html(path)
    text = path.read_text()
    assert "(stopped; resume to finish it)" in text and "Not read: a run reads its test split once" in text
    assert "plot" in image_classes(page) and "Confusion matrix" not in text  # no test split yet


@pytest.fixture
def slow_fsync_writer(finished_run: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """A process rewriting a run's report whose fsync hangs: killed there, it has written the whole new report
    to its temporary file and not yet renamed it."""
    run_copy = tmp_path / "run"
    shutil.copytree(finished_run, run_copy)
    script = textwrap.dedent(f"""
        import os, sys, time
        from training.report import write_run_report
        from training.rundir import RunDirectory
        def hang(fd):
            print("fsync", flush=True)
            time.sleep(600)
        os.fsync = hang
        write_run_report(RunDirectory({str(run_copy)!r}), None, stopped=True)
    """)  # fmt: skip
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=_env(),
                               cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    try:
        yield process, run_copy
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_a_run_killed_with_sigkill_while_writing_its_report_leaves_no_half_report(slow_fsync_writer) -> None:
    process, run_dir = slow_fsync_writer
    before = (run_dir / "report.html").read_bytes()
    assert process.stdout is not None and process.stdout.readline().strip() == "fsync"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    # The previous report is intact; the new one never got the name report.html.
    assert (run_dir / "report.html").read_bytes() == before
    assert_self_contained_html(run_dir / "report.html")
    leftovers = [p.name for p in run_dir.iterdir() if p.name.startswith(".report.html.")]
    assert len(leftovers) == 1 and "(stopped" in (run_dir / leftovers[0]).read_text()


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
)
def test_the_report_opens_from_disk_in_chromium_with_every_image_drawn(finished_run: Path, tmp_path: Path) -> None:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # As tests/app/test_server_browser.py drives it; no network is needed, and none is used.
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2000"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.get((finished_run / "report.html").as_uri())
        images = driver.execute_script(
            "return Array.from(document.images, i => [i.className, i.complete && i.naturalWidth > 0])"
        )
        fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert driver.save_screenshot(str(tmp_path / "report.png"))
    finally:
        driver.quit()
    assert len(images) == 9 and all(drawn for _, drawn in images), images
    assert fetched == []  # data: URIs only: the page fetched nothing
