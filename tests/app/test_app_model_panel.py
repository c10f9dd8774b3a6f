"""The web page's Model panel: the card's facts, per-class accuracy and the confusion matrix, which the server
draws from the card (GET /model/confusion.png); in real headless Chromium at a phone's width."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.confusion import confusion_png, matrix_of
from app.main import create_app
from app.settings import Settings
from model import read_card, write_card

pytest_plugins = ["app_fixtures"]  # the fixtures of tests/app (see app_fixtures.py)
ROOT_CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def confusion_for(num_classes: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    matrix = rng.integers(0, 40, size=(num_classes, num_classes))
    np.fill_diagonal(matrix, 800)
    return matrix


@pytest.fixture(scope="module")
def measured_model_dir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """A tiny model whose card holds what a finished run records: test accuracy per class and the matrix."""
    root_conftest = request.config.pluginmanager.get_plugin(str(ROOT_CONFTEST))  # as app_fixtures.py does
    path: Path = root_conftest.build_tiny_model_dir(tmp_path_factory.mktemp("measured") / "model")
    card = read_card(path)
    matrix = confusion_for(len(card.class_names))
    card.training.update(labelled_per_class={name: 10 for name in card.class_names}, device="cpu",
                         selection={"rule": "final", "round": 10}, duration_seconds=912.0)  # fmt: skip
    card.metrics.update(
        test_accuracy=float(np.trace(matrix) / matrix.sum()),
        num_test_images=int(matrix.sum()),
        per_class_test_accuracy={n: float(matrix[k, k] / matrix[k].sum()) for k, n in enumerate(card.class_names)},
        confusion_matrix=matrix.tolist(),
    )
    write_card(path, card)
    return path


def test_the_confusion_matrix_is_drawn_from_the_card_once_per_model(measured_model_dir: Path, monkeypatch) -> None:
    from app.routes import model_panel

    drawn: list[int] = []
    monkeypatch.setattr(model_panel, "confusion_png", lambda m, names: drawn.append(1) or confusion_png(m, names))
    with TestClient(create_app(Settings(model_dir=measured_model_dir, torch_threads=1))) as client:
        first = client.get("/model/confusion.png")
        again = client.get("/model/confusion.png")
        card = client.get("/info").json()
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert again.content == first.content and drawn == [1]
    assert first.headers["x-model-id"] == card["model_id"]
    image = Image.open(io.BytesIO(first.content))
    assert image.format == "PNG" and 400 < image.width < 900  # a 10x10 matrix with its class names
    assert card["metrics"]["confusion_matrix"] == confusion_for(10).tolist()  # what the page needs, from /info


def test_a_card_without_a_confusion_matrix_gets_a_json_404(client: TestClient) -> None:
    response = client.get("/model/confusion.png")
    assert response.status_code == 404 and "no confusion matrix" in response.json()["detail"]
    assert "/model/confusion.png" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    "metrics",
    [{}, {"confusion_matrix": [[1, 2], [3, 4]]}, {"confusion_matrix": "x"}, {"confusion_matrix": [[-1] * 3] * 3}],
)
def test_a_missing_or_malformed_matrix_is_treated_as_none(metrics: dict) -> None:
    assert matrix_of(metrics, 3) is None


def test_the_heat_map_shades_by_the_share_of_the_row(measured_model_dir: Path) -> None:
    from app.confusion import CELL, HIGH

    names = read_card(measured_model_dir).class_names
    perfect = np.diag(np.arange(1, len(names) + 1) * 100)  # every class always right, whatever its count
    pixels = np.asarray(Image.open(io.BytesIO(confusion_png(perfect, names))).convert("RGB"))
    full_share = (pixels == HIGH).all(axis=2).sum()
    # The K diagonal cells are filled with the full colour (but for their outline and count); nothing else is.
    assert 0.8 * len(names) * (CELL - 2) ** 2 < full_share <= len(names) * CELL**2


# ---------------------------------------------------------------------------------------------- Chromium

browser_module = pytest.importorskip("test_server_browser", reason="selenium is not installed")
browser = browser_module.browser  # the phone-width headless Chromium of test_server_browser.py
PHONE_WIDTH = browser_module.PHONE_WIDTH


@pytest.mark.skipif(not Path(browser_module.CHROMIUM).exists(), reason="needs Debian's chromium and chromium-driver")
def test_the_model_panel_shows_the_confusion_matrix_at_a_phones_width(
    browser, start_server, measured_model_dir: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # Headless Chromium keeps its window at least 500 px wide: emulate the phone's viewport itself.
    metrics = {"width": PHONE_WIDTH, "height": 844, "deviceScaleFactor": 1, "mobile": True}
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    with start_server({"SGAN_MODEL_DIR": str(measured_model_dir)}) as server:
        browser.get(server.base_url + "/")
        assert browser.execute_script("return window.innerWidth") == PHONE_WIDTH
        wait = WebDriverWait(browser, 30)
        image = browser.find_element(By.ID, "confusion-image")
        wait.until(lambda _: image.is_displayed() and browser.execute_script("return arguments[0].naturalWidth", image))
        browser.execute_script("arguments[0].scrollIntoView()", image)
        browser.save_screenshot(str(tmp_path / "model-panel.png"))
        facts = browser.find_element(By.ID, "model-facts").text
        rows = browser.find_elements(By.CSS_SELECTOR, "#class-accuracy li")
        shown_width = image.size["width"]
        overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    assert "T-shirt/top 10" in facts and "the final model (round 10)" in facts and "15.2 min" in facts
    assert len(rows) == 10 and rows[0].text.startswith("T-shirt/top")
    assert 200 < shown_width <= PHONE_WIDTH  # scaled to the panel, whole
    assert overflow <= 0  # nothing sticks out sideways
