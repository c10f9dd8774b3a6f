"""The web page in real headless Chromium (Debian's chromium + chromedriver; no browser is downloaded):
upload an image and see its class, load samples, all at a phone's width."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from app_images import garment_png

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
