"""The web page in real headless Chromium (Debian's chromium + chromedriver; no browser is downloaded):
upload an image and see its class, load samples, all at a phone's width."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from app_images import garment_png
from conftest import CIFAR_CLASSES, build_tiny_colour_model_dir
from PIL import Image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PHONE_WIDTH, PHONE_HEIGHT = 390, 844  # a current phone's CSS viewport

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytest_plugins = ["app_fixtures"]  # the fixtures of tests/app (see app_fixtures.py)

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",  # running as root in a container
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        f"--window-size={PHONE_WIDTH},{PHONE_HEIGHT}",
    ):
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager never tries to download one.
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_classifies_an_uploaded_image_and_shows_samples(browser, live_server, tmp_path: Path) -> None:
    wait = WebDriverWait(browser, 20)
    browser.get(live_server.base_url + "/")
    assert "SGAN" in browser.title

    # The samples panel fills itself on load: a grid of images and the seed that reproduces it.
    wait.until(lambda driver: len(driver.find_elements(By.CSS_SELECTOR, "#samples img")) == 16)
    seed = browser.find_element(By.ID, "sample-seed").text
    assert seed.isdigit()
    assert "model" in browser.find_element(By.ID, "model-info").text

    # Pick a file: the page shows the class the API gives for it, bars for the top classes and the realness.
    image_path = tmp_path / "garment.png"
    image_path.write_bytes(garment_png())
    expected = httpx.post(
        live_server.base_url + "/classify", files={"file": ("garment.png", image_path.read_bytes(), "image/png")}
    ).json()
    browser.find_element(By.ID, "file-input").send_keys(str(image_path))
    wait.until(lambda driver: driver.find_element(By.ID, "prediction").text != "")
    assert browser.find_element(By.ID, "prediction").text == expected["label"]
    bars = browser.find_elements(By.CSS_SELECTOR, "#scores li")
    assert len(bars) == 5
    assert bars[0].text.startswith(expected["label"])
    assert browser.find_element(By.ID, "realness").text == f"{expected['realness']:.3f}"

    # A chosen seed gives the server's samples for that seed.
    seed_input = browser.find_element(By.ID, "sample-seed-input")
    seed_input.send_keys("1234")
    browser.find_element(By.ID, "sample-button").click()
    wait.until(lambda driver: driver.find_element(By.ID, "sample-seed").text == "1234")
    shown = [img.get_attribute("src") for img in browser.find_elements(By.CSS_SELECTOR, "#samples img")]
    served = httpx.get(live_server.base_url + "/sample", params={"n": 16, "seed": 1234, "format": "json"}).json()
    assert shown == [f"data:image/png;base64,{sample['png_base64']}" for sample in served["samples"]]

    # Usable at a phone's width: nothing sticks out sideways.
    overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0


def test_the_page_serves_a_colour_photo_model(browser, start_server, tmp_path: Path) -> None:
    # A CIFAR-shaped model: the page classifies an ordinary JPEG photo of any size and shows colour samples.
    model_dir = build_tiny_colour_model_dir(tmp_path / "colour-model")
    rng = np.random.default_rng(0)
    sky_over_grass = np.concatenate(
        [np.full((300, 800, 3), (150, 190, 240)), np.full((300, 800, 3), (60, 140, 50))]
    ) + rng.normal(0, 12, size=(600, 800, 3))
    photo = tmp_path / "holiday photo.jpg"
    Image.fromarray(np.clip(sky_over_grass, 0, 255).astype(np.uint8)).save(photo, quality=85)

    with start_server({"SGAN_MODEL_DIR": str(model_dir)}) as server:
        expected = httpx.post(
            server.base_url + "/classify", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")}
        ).json()
        assert expected["label"] in CIFAR_CLASSES and expected["inverted"] is False
        wait = WebDriverWait(browser, 20)
        browser.get(server.base_url + "/")
        wait.until(lambda driver: len(driver.find_elements(By.CSS_SELECTOR, "#samples img")) == 16)
        browser.find_element(By.ID, "file-input").send_keys(str(photo))
        wait.until(lambda driver: driver.find_element(By.ID, "prediction").text != "")
        assert browser.find_element(By.ID, "prediction").text == expected["label"]
        assert browser.find_element(By.ID, "realness").text == f"{expected['realness']:.3f}"
        assert browser.find_element(By.ID, "inverted-note").get_attribute("hidden") is not None
        sample = httpx.get(server.base_url + "/sample", params={"n": 1, "seed": 7}).content
        assert Image.open(io.BytesIO(sample)).mode == "RGB"
