"""Several models and their live replacement, through ``TestClient`` with the lifespan running: GET /models, the
per-model routes, a replaced directory swapped in by the poll, a corrupt one refused while the old model keeps
answering, POST /models/{name}/reload, models copied into and removed from the folder, the onnxruntime backend.

The same under a real uvicorn process, with concurrent load and several workers: test_server_models.py."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from app_images import garment_png
from fastapi.testclient import TestClient

from model import read_card

pytest_plugins = ["app_fixtures"]  # the fixtures of tests/app (see app_fixtures.py)

PNG = "image/png"
KEY = {"X-API-Key": "s3cret"}


def classify(client: TestClient, path: str = "/classify", **kwargs: object) -> dict:
    response = client.post(path, files={"file": ("a.png", garment_png(), PNG)}, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    answer: dict = response.json()
    return answer


def wait_until(condition: Callable[[], bool], timeout_s: float = 20.0) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout_s``."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout_s, f"not within {timeout_s} s"
        time.sleep(0.05)
    return time.monotonic() - start


def metric(client: TestClient, name: str, **labels: str) -> float:
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        found = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if found and all(f'{key}="{value}"' in (found.group(1) or "") for key, value in labels.items()):
            total += float(found.group(2))
    return total


def corrupt(model_dir: Path) -> None:
    weights = model_dir / "discriminator.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)


@pytest.fixture
def models_dir(tmp_path: Path, build_model_dir) -> Path:
    """A folder of two good models (seeds 1 and 2) and one whose weights are corrupt."""
    folder = tmp_path / "models"
    build_model_dir(folder / "alpha", seed=1)
    build_model_dir(folder / "beta", seed=2)
    build_model_dir(folder / "broken", seed=3)
    corrupt(folder / "broken")
    return folder


def test_models_are_listed_and_each_answers_under_its_name(make_client, models_dir: Path, app_model_dir: Path) -> None:
    with make_client(models_dir=models_dir, reload_poll_s=0) as client:
        listing = client.get("/models").json()
        entries = {entry["name"]: entry for entry in listing["models"]}
        assert listing["default"] == app_model_dir.name and entries[app_model_dir.name]["default"]
        assert set(entries) == {app_model_dir.name, "alpha", "beta", "broken"}
        for name in ("alpha", "beta"):
            card = read_card(models_dir / name)
            entry = entries[name]
            assert entry["status"] == "ready" and entry["model_id"] == card.model_id
            assert entry["classes"] == card.class_names and entry["weights_bytes"] > 0
            assert classify(client, f"/models/{name}/classify")["model_id"] == card.model_id
            batch = client.post(f"/models/{name}/classify/batch", files=[("files", ("a.png", garment_png(), PNG))])
            assert batch.json()["model_id"] == card.model_id
            sample = client.get(f"/models/{name}/sample", params={"n": 2, "format": "json"}).json()
            assert sample["model_id"] == card.model_id and len(sample["samples"]) == 2
        # A directory that fails to load is listed with its error and stops nothing else.
        assert entries["broken"]["status"] == "error" and "SHA-256" in entries["broken"]["error"]
        refused = client.post("/models/broken/classify", files={"file": ("a.png", garment_png(), PNG)})
        assert refused.status_code == 503 and "SHA-256" in refused.json()["detail"]
        # The plain routes keep serving the default model.
        assert classify(client)["model_id"] == read_card(app_model_dir).model_id
        assert client.get("/models/nope/sample").status_code == 404
        assert client.post("/models/nope/classify").status_code == 404
        # A body refused before routing still counts under its route template, not the model's name.
        huge = {"Content-Type": PNG, "Content-Length": str(10**9)}
        assert client.post("/models/alpha/classify", headers=huge).status_code == 413
        assert metric(client, "sgan_http_requests_total", route="/models/{name}/classify", status="413") == 1


def test_named_routes_need_the_api_key_and_the_listing_does_not(make_client, models_dir: Path) -> None:
    with make_client(models_dir=models_dir, reload_poll_s=0, api_key="s3cret") as client:
        assert client.get("/models").status_code == 200
        files = {"file": ("a.png", garment_png(), PNG)}
        assert client.post("/models/alpha/classify", files=files).status_code == 401
        assert client.get("/models/alpha/sample").status_code == 401
        assert client.post("/models/alpha/classify", files=files, headers=KEY).status_code == 200


def test_a_replaced_directory_is_swapped_in_and_a_corrupt_one_refused(
    make_client, tmp_path: Path, build_model_dir
) -> None:
    model_dir = build_model_dir(tmp_path / "served", seed=1)
    first = read_card(model_dir).model_id
    with make_client(model_dir=model_dir, reload_poll_s=0.05) as client:
        assert classify(client)["model_id"] == first
        second = build_model_dir(model_dir, seed=2) and read_card(model_dir).model_id  # the trainer's atomic swap
        took = wait_until(lambda: classify(client)["model_id"] == second)
        assert client.get("/ready").json()["model_id"] == second
        assert metric(client, "sgan_model_reloads_total", outcome="swapped") == 1

        # A corrupt replacement: refused, the old model keeps answering, the refusal is counted and listed.
        staged = build_model_dir(tmp_path / "staged", seed=3)
        corrupt(staged)
        shutil.rmtree(model_dir)
        staged.rename(model_dir)
        wait_until(lambda: metric(client, "sgan_model_reloads_total", outcome="refused") == 1)
        assert classify(client)["model_id"] == second
        entry = client.get("/models").json()["models"][0]
        assert entry["model_id"] == second and entry["refusals"] == 1 and "SHA-256" in entry["error"]
        assert client.get("/ready").status_code == 200

        # Copied over in place (cp -rT): picked up once the copy holds still.
        shutil.copytree(build_model_dir(tmp_path / "third", seed=4), model_dir, dirs_exist_ok=True)
        third = read_card(model_dir).model_id
        wait_until(lambda: classify(client)["model_id"] == third)
        assert client.get("/models").json()["models"][0]["error"] is None
    print(f"swap visible after {took:.2f} s")


def test_reload_route_needs_a_key_swaps_now_and_refuses_a_corrupt_directory(
    make_client, tmp_path: Path, build_model_dir
) -> None:
    model_dir = build_model_dir(tmp_path / "served", seed=1)
    name = model_dir.name
    with make_client(model_dir=model_dir, reload_poll_s=0) as client:
        assert client.post(f"/models/{name}/reload").status_code == 403  # no SGAN_API_KEY: off
    with make_client(model_dir=model_dir, reload_poll_s=0, api_key="s3cret") as client:
        assert client.post(f"/models/{name}/reload").status_code == 401
        assert client.post("/models/nope/reload", headers=KEY).status_code == 404
        old = read_card(model_dir).model_id
        build_model_dir(model_dir, seed=2)
        new = read_card(model_dir).model_id
        assert classify(client, headers=KEY)["model_id"] == old  # no poll: nothing changes by itself
        answer = client.post(f"/models/{name}/reload", headers=KEY)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"name": name, "outcome": "swapped", "model_id": new, "previous_model_id": old}
        assert classify(client, headers=KEY)["model_id"] == new
        corrupt(model_dir)
        refused = client.post(f"/models/{name}/reload", headers=KEY)
        assert refused.status_code == 409 and "SHA-256" in refused.json()["detail"]
        assert classify(client, headers=KEY)["model_id"] == new


def test_a_model_copied_into_the_folder_is_served_and_one_removed_is_unloaded(
    make_client, models_dir: Path, build_model_dir, tmp_path: Path
) -> None:
    with make_client(models_dir=models_dir, reload_poll_s=0.05) as client:
        shutil.copytree(build_model_dir(tmp_path / "elsewhere", seed=5), models_dir / "gamma")
        wait_until(lambda: client.post("/models/gamma/classify", files={"file": ("a", garment_png(), PNG)}).is_success)
        assert classify(client, "/models/gamma/classify")["model_id"] == read_card(models_dir / "gamma").model_id
        shutil.rmtree(models_dir / "alpha")
        wait_until(lambda: client.get("/models/alpha/sample").status_code == 404)
        assert "alpha" not in {entry["name"] for entry in client.get("/models").json()["models"]}


@pytest.mark.slow
def test_the_onnxruntime_backend_answers_like_torch(make_client, app_model_dir: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    with make_client() as client:
        reference = classify(client)
    with make_client(backend="onnxruntime") as client:
        answer = classify(client)
    assert answer["model_id"] == reference["model_id"]
    difference = np.abs(np.array(list(answer["probabilities"].values())) - list(reference["probabilities"].values()))
    assert difference.max() < 1e-5 and abs(answer["realness"] - reference["realness"]) < 1e-5
