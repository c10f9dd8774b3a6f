"""POST /suggest: the images of a request ranked by what a label would teach the serving model (the rule of
model/suggest.py, as sgan-suggest applies it), with /classify/batch's limits and errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from app_images import encode, garment_png
from PIL import Image

pytest_plugins = ["app_fixtures"]  # the fixtures of tests/app (see app_fixtures.py)

PNG = "image/png"
ROOT_CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


@pytest.fixture(scope="module")
def halves_model_dir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """tests/conftest.py's hand-set 4x4 model: left half brighter -> "left", equal halves -> unsure, dark -> junk."""
    root_conftest = request.config.pluginmanager.get_plugin(str(ROOT_CONFTEST))
    assert root_conftest is not None
    path: Path = root_conftest.build_halves_model_dir(tmp_path_factory.mktemp("suggest") / "halves")
    return path


@pytest.fixture(scope="module")
def halves_png(request: pytest.FixtureRequest) -> Callable[[float, float], bytes]:
    root_conftest = request.config.pluginmanager.get_plugin(str(ROOT_CONFTEST))
    assert root_conftest is not None
    return lambda left, right: encode(Image.fromarray(root_conftest.halves(left, right)), "PNG")


def test_suggest_ranks_the_images_and_says_why_others_are_left_out(make_client, halves_model_dir, halves_png) -> None:
    files = [
        ("files", ("sure.png", halves_png(0.9, 0.1), PNG)),
        ("files", ("broken.png", b"not an image", PNG)),
        ("files", ("unsure.png", halves_png(1.0, 1.0), PNG)),
        ("files", ("dark.png", halves_png(0.0, 0.0), PNG)),
        ("files", ("unsure-again.png", halves_png(1.0, 1.0), PNG)),
        ("files", ("fairly-sure.png", halves_png(0.5, 1.0), PNG)),
    ]
    with make_client(model_dir=halves_model_dir) as client:
        # invert=false: these test images have no background for the polarity guess to read.
        response = client.post("/suggest", files=files, params={"invert": "false"})
        model_id = client.get("/info").json()["model_id"]
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_id"] == model_id
    suggestions = body["suggestions"]
    assert [item["filename"] for item in suggestions] == ["unsure.png", "fairly-sure.png", "sure.png"]
    assert [(item["rank"], item["index"]) for item in suggestions] == [(1, 2), (2, 5), (3, 0)]
    assert [item["label"] for item in suggestions] == ["left", "right", "left"]
    assert [item["class_index"] for item in suggestions] == [0, 1, 0]
    assert suggestions[0]["score"] == pytest.approx(1.0) and suggestions[0]["confidence"] == pytest.approx(0.5)
    assert all(item["realness"] > 0.5 for item in suggestions)
    scores = [item["score"] for item in suggestions]
    assert scores == sorted(scores, reverse=True)
    left_out = {item["filename"]: item for item in body["not_suggested"]}
    assert [item["index"] for item in body["not_suggested"]] == [1, 3, 4]
    assert left_out["broken.png"]["reason"] == "unreadable" and left_out["broken.png"]["status_code"] == 400
    assert "not a decodable image" in left_out["broken.png"]["detail"]
    assert left_out["dark.png"]["reason"] == "junk"
    assert left_out["unsure-again.png"]["reason"] == "near-duplicate"
    assert left_out["unsure-again.png"]["duplicate_of"] == 2


def test_count_bounds_the_suggestions(make_client, halves_model_dir, halves_png) -> None:
    files = [("files", (f"{i}.png", halves_png(0.5 + 0.1 * i, 1.0), PNG)) for i in range(4)]
    with make_client(model_dir=halves_model_dir) as client:
        one = client.post("/suggest", files=files, params={"invert": "false", "count": 1})
        assert one.status_code == 200
        assert [item["filename"] for item in one.json()["suggestions"]] == ["3.png"]  # the closest call
        assert client.post("/suggest", files=files, params={"count": 0}).status_code == 422


def test_suggest_has_the_limits_and_errors_of_classify_batch(make_client) -> None:
    three = [("files", (f"{i}.png", garment_png(), PNG)) for i in range(3)]
    with make_client(max_batch_files=2) as client:
        too_many = client.post("/suggest", files=three)
        assert too_many.status_code == 413 and "Maximum number of files is 2" in too_many.json()["detail"]
        assert client.post("/suggest", files=three[:2]).status_code == 200
        missing = client.post("/suggest", files={"file": ("a.png", garment_png(), PNG)})
        assert missing.status_code == 422 and "'files' is missing" in missing.json()["detail"]
        raw = client.post("/suggest", content=garment_png(), headers={"content-type": PNG})
        assert raw.status_code == 415
        assert client.post("/suggest", files=three[:1], params={"invert": "sometimes"}).status_code == 422
    body_size = sum(len(data) for _, (_, data, _) in three)
    with make_client(max_body_bytes=body_size // 2, max_batch_body_bytes=10 * body_size) as client:
        assert client.post("/suggest", files=three).status_code == 200  # the batch body limit, not /classify's
    with make_client(max_body_bytes=body_size // 4, max_batch_body_bytes=body_size // 2) as client:
        assert client.post("/suggest", files=three).status_code == 413


def test_suggest_needs_the_api_key_when_one_is_set(make_client) -> None:
    files = [("files", ("a.png", garment_png(), PNG))]
    with make_client(api_key="s3cret") as client:
        assert client.post("/suggest", files=files).status_code == 401
        answer = client.post("/suggest", files=files, headers={"X-API-Key": "s3cret"})
        assert answer.status_code == 200
        assert np.isfinite(answer.json()["suggestions"][0]["score"])
