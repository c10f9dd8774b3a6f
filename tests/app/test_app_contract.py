"""The HTTP contract (docs/design.md, HTTP contract), endpoint by endpoint and error code by error code, through
``TestClient`` with the lifespan running."""

from __future__ import annotations

import base64
import io
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from app_images import encode, garment, garment_png
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.settings import Settings
from model import BUNDLED_MODEL_DIR

pytest_plugins = ["app_fixtures"]  # the fixtures of tests/app (see app_fixtures.py)

PNG = "image/png"


def post_file(client: TestClient, data: bytes, content_type: str = PNG, **params: object):
    return client.post("/classify", params=params, files={"file": ("image", data, content_type)})


def probabilities(answer: dict) -> np.ndarray:
    return np.array(list(answer["probabilities"].values()))


# ---------------------------------------------------------------------------------------------- /classify


def test_classify_answers_label_probabilities_realness_and_model_id(client: TestClient) -> None:
    response = post_file(client, garment_png())
    assert response.status_code == 200
    answer = response.json()
    card = client.get("/info").json()
    assert list(answer["probabilities"]) == card["class_names"]
    assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    best = max(answer["probabilities"], key=answer["probabilities"].get)
    assert answer["label"] == best == card["class_names"][answer["index"]]
    assert answer["confidence"] == answer["probabilities"][best]
    assert 0.0 < answer["realness"] < 1.0
    assert answer["model_id"] == card["model_id"]
    assert answer["inverted"] is False  # a dark-background image for a dark-background model
    assert [item["label"] for item in answer["top"]][0] == best and len(answer["top"]) == 5


def test_raw_image_body_gets_the_same_answer_as_multipart(client: TestClient) -> None:
    data = garment_png()
    raw = client.post("/classify", content=data, headers={"content-type": PNG})
    assert raw.status_code == 200
    assert raw.json() == post_file(client, data).json()


def test_top_k_orders_classes_and_is_capped_at_the_class_count(client: TestClient) -> None:
    top3 = post_file(client, garment_png(), top_k=3).json()["top"]
    assert len(top3) == 3
    assert [item["probability"] for item in top3] == sorted((item["probability"] for item in top3), reverse=True)
    assert len(post_file(client, garment_png(), top_k=1000).json()["top"]) == 10


@pytest.mark.parametrize("params", [{"top_k": 0}, {"top_k": "many"}, {"invert": "maybe"}])
def test_bad_classify_parameters_are_422(client: TestClient, params: dict) -> None:
    response = post_file(client, garment_png(), **params)
    assert response.status_code == 422
    assert "detail" in response.json()


def test_a_light_background_photo_is_inverted_to_the_training_polarity(client: TestClient) -> None:
    dark = post_file(client, garment_png()).json()
    light = post_file(client, garment_png(light_background=True)).json()
    assert light["inverted"] is True
    np.testing.assert_allclose(probabilities(light), probabilities(dark), atol=1e-3)
    # The caller can overrule the automatic choice either way.
    forced = post_file(client, garment_png(light_background=True), invert="false").json()
    assert forced["inverted"] is False
    assert not np.allclose(probabilities(forced), probabilities(dark), atol=1e-3)
    assert post_file(client, garment_png(), invert="true").json()["inverted"] is True


@pytest.mark.parametrize(
    ("request_options", "status", "message"),
    [
        ({"content": b"", "headers": {"content-type": PNG}}, 400, "empty"),
        ({"content": b"hello, world", "headers": {"content-type": PNG}}, 400, "not a decodable image"),
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "multipart/form-data"),
        ({"content": b"{}", "headers": {"content-type": "application/json"}}, 415, "image/*"),
        ({"content": b"<svg xmlns='http://www.w3.org/2000/svg'/>", "headers": {"content-type": "image/svg+xml"}}, 415,
         "unsupported image type"),
        ({"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}}, 400, "Missing boundary"),
        ({"files": {"image": ("a.png", garment_png(), PNG)}}, 422, "'file' is missing"),
        ({"data": {"file": "not a file"}, "files": {"other": ("a", b"x", PNG)}}, 422, "must be a file upload"),
        ({"files": [("file", ("a.png", garment_png(), PNG)), ("file", ("b.png", garment_png(), PNG))]}, 422,
         "/classify/batch"),
        ({"files": {"file": ("a.tif", encode(garment(), "TIFF"), "application/octet-stream")}}, 415, "format TIFF"),
    ],
    ids=["empty", "text-as-png", "text-plain", "json", "svg", "no-boundary", "no-file-field", "file-is-text",
         "two-files", "tiff"],
)  # fmt: skip
def test_bad_uploads_get_a_clear_json_error(
    client: TestClient, request_options: dict, status: int, message: str
) -> None:
    response = client.post("/classify", **request_options)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert message in response.json()["detail"]


def test_body_over_the_byte_limit_is_413_declared_or_streamed(make_client) -> None:
    big = encode(Image.effect_noise((200, 200), 64).convert("L"), "PNG")  # noise does not compress
    assert len(big) > 4096
    with make_client(max_body_bytes=4096) as client:
        declared = client.post("/classify", content=big, headers={"content-type": PNG})
        assert declared.status_code == 413
        assert "4096 bytes" in declared.json()["detail"]

        sent: list[int] = []

        def chunks():  # no Content-Length: the limit must hold while the body streams in
            for start in range(0, len(big), 1024):
                sent.append(start)
                yield big[start : start + 1024]

        streamed = client.post("/classify", content=chunks(), headers={"content-type": PNG})
        assert streamed.status_code == 413
        assert "4096 bytes" in streamed.json()["detail"]

        multipart = post_file(client, big)
        assert multipart.status_code == 413
        # Small images still pass.
        assert post_file(client, garment_png()).status_code == 200


def test_pixel_count_over_the_limit_is_413(make_client) -> None:
    with make_client(max_pixels=100 * 100) as client:
        response = post_file(client, garment_png(size=101))
        assert response.status_code == 413
        assert "over the limit of 10000" in response.json()["detail"]
        assert post_file(client, garment_png(size=100)).status_code == 200


# ---------------------------------------------------------------------------------------------- /classify/batch


def test_batch_answers_in_order_and_refuses_only_the_bad_file(client: TestClient) -> None:
    first, second = garment_png(), garment_png(light_background=True)
    files = [
        ("files", ("first.png", first, PNG)),
        ("files", ("broken.png", b"not an image", PNG)),
        ("files", ("second.png", second, PNG)),
    ]
    response = client.post("/classify/batch", files=files, params={"top_k": 2})
    assert response.status_code == 200
    body = response.json()
    results = body["results"]
    assert [item["filename"] for item in results] == ["first.png", "broken.png", "second.png"]
    assert [item["status_code"] for item in results] == [200, 400, 200]
    assert results[1]["result"] is None and "not a decodable image" in results[1]["detail"]
    for item, data in ((results[0], first), (results[2], second)):
        alone = post_file(client, data, top_k=2).json()
        assert item["result"]["label"] == alone["label"]
        np.testing.assert_allclose(probabilities(item["result"]), probabilities(alone), atol=1e-5)
        assert len(item["result"]["top"]) == 2
    assert body["model_id"] == client.get("/info").json()["model_id"]


def test_batch_limits_and_errors(make_client) -> None:
    with make_client(max_batch_files=2) as client:
        three = [("files", (f"{i}.png", garment_png(), PNG)) for i in range(3)]
        too_many = client.post("/classify/batch", files=three)
        assert too_many.status_code == 413
        assert "Maximum number of files is 2" in too_many.json()["detail"]
        assert client.post("/classify/batch", files=three[:2]).status_code == 200

        missing = client.post("/classify/batch", files={"file": ("a.png", garment_png(), PNG)})
        assert missing.status_code == 422 and "'files' is missing" in missing.json()["detail"]
        raw = client.post("/classify/batch", content=garment_png(), headers={"content-type": PNG})
        assert raw.status_code == 415
        assert client.post("/classify/batch", files=three[:1], params={"top_k": -1}).status_code == 422


def test_a_full_inference_queue_is_503_with_retry_after(make_client) -> None:
    with make_client(max_queue=2) as client:
        three = [("files", (f"{i}.png", garment_png(), PNG)) for i in range(3)]
        response = client.post("/classify/batch", files=three)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1" and "queue is full" in response.json()["detail"]
        assert client.post("/classify/batch", files=three[:2]).status_code == 200


# ---------------------------------------------------------------------------------------------- /sample


def test_sample_png_grid_is_reproducible_from_its_seed(client: TestClient) -> None:
    first = client.get("/sample", params={"n": 9, "seed": 7})
    assert first.status_code == 200
    assert first.headers["content-type"] == PNG
    assert first.headers["x-seed"] == "7" and first.headers["x-samples-found"] == "9"
    grid = Image.open(io.BytesIO(first.content))
    assert grid.size == (3 * 30 + 2, 3 * 30 + 2)  # 3x3 tiles of 28 px with 2 px gutters
    assert client.get("/sample", params={"n": 9, "seed": 7}).content == first.content
    assert client.get("/sample", params={"n": 9, "seed": 8}).content != first.content
    # Without a seed the server picks one and says which, so the grid can be reproduced.
    unseeded = client.get("/sample", params={"n": 9})
    again = client.get("/sample", params={"n": 9, "seed": unseeded.headers["x-seed"]})
    assert again.content == unseeded.content


def test_sample_json_gives_each_image_with_the_discriminators_verdict(client: TestClient) -> None:
    response = client.get("/sample", params={"n": 5, "seed": 3, "format": "json"})
    assert response.status_code == 200
    body = response.json()
    assert (body["seed"], body["requested"], body["found"], body["label"]) == (3, 5, 5, None)
    assert len(body["samples"]) == 5
    assert client.get("/sample", params={"n": 5, "seed": 3, "format": "json"}).json() == body
    for sample in body["samples"][:2]:
        png = Image.open(io.BytesIO(base64.b64decode(sample["png_base64"])))
        assert (png.size, png.mode) == ((28, 28), "L")
        # Posting the sample back (as the model sees it, no inversion) gives the verdict the sample carries.
        buffer = io.BytesIO()
        png.save(buffer, "PNG")
        again = post_file(client, buffer.getvalue(), invert="false").json()
        assert again["label"] == sample["label"]
        assert again["realness"] == pytest.approx(sample["realness"], abs=1e-5)


def test_sample_label_filter_keeps_that_class_with_bounded_effort(make_client) -> None:
    with make_client(max_sample_draws=256) as client:
        unfiltered = client.get("/sample", params={"n": 64, "seed": 1, "format": "json"}).json()
        labels = [sample["label"] for sample in unfiltered["samples"]]
        common = max(set(labels), key=labels.count)
        rare = next((name for name in client.get("/info").json()["class_names"] if name not in labels), None)

        filtered = client.get("/sample", params={"n": 4, "seed": 1, "format": "json", "label": common}).json()
        assert filtered["label"] == common
        assert filtered["found"] == len(filtered["samples"]) <= 4
        assert {sample["label"] for sample in filtered["samples"]} == {common}
        common_index = str(client.get("/info").json()["class_names"].index(common))
        by_index = client.get("/sample", params={"n": 4, "seed": 1, "format": "json", "label": common_index})
        assert by_index.json()["samples"] == filtered["samples"]

        if rare is not None:  # a class the random generator never produces: the search gives up, and says so
            hopeless = client.get("/sample", params={"n": 4, "seed": 1, "format": "json", "label": rare}).json()
            assert hopeless["drawn"] == 256
            assert hopeless["found"] == len(hopeless["samples"]) < 4
            png = client.get("/sample", params={"n": 4, "seed": 1, "label": rare})
            assert png.status_code == 200 and png.headers["x-samples-drawn"] == "256"


@pytest.mark.parametrize(
    "params",
    [{"n": 0}, {"n": 65}, {"n": "x"}, {"format": "gif"}, {"seed": -1}, {"label": "Spaceship"}, {"label": "99"}],
)
def test_bad_sample_parameters_are_422(client: TestClient, params: dict) -> None:
    response = client.get("/sample", params=params)
    assert response.status_code == 422
    assert response.json()["detail"]


# ---------------------------------------------------------------------------------------------- operations


def test_health_ready_info(client: TestClient, app_model_dir: Path) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["status"] == "ready" and ready["model_dir"] == str(app_model_dir)
    card = client.get("/info").json()
    assert card["class_names"][0] == "T-shirt/top"
    assert card["image_shape"] == [1, 28, 28] and card["background"] == "dark"
    assert ready["model_id"] == card["model_id"]


def test_metrics_count_requests_by_route_and_status_and_batch_sizes(client: TestClient) -> None:
    post_file(client, garment_png())
    post_file(client, b"junk")
    client.get("/sample", params={"n": 2})
    text = client.get("/metrics").text
    assert 'sgan_http_requests_total{method="POST",route="/classify",status="200"} 1.0' in text
    assert 'sgan_http_requests_total{method="POST",route="/classify",status="400"} 1.0' in text
    assert 'sgan_http_request_duration_seconds_count{method="GET",route="/sample",status="200"} 1.0' in text
    assert "sgan_inference_batch_size_count" in text
    assert "sgan_inference_queue_depth 0.0" in text
    assert 'sgan_rejected_images_total{status="400"} 1.0' in text
    assert "sgan_model_ready 1.0" in text


def test_metrics_count_refusals_made_before_routing_under_their_route(make_client) -> None:
    with make_client(max_body_bytes=10) as client:
        assert client.post("/classify", content=b"x" * 100, headers={"content-type": PNG}).status_code == 413
        text = client.get("/metrics").text
    assert 'sgan_http_requests_total{method="POST",route="/classify",status="413"} 1.0' in text


def test_docs_and_openapi_list_every_route(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/classify", "/classify/batch", "/sample", "/health", "/ready", "/info", "/metrics"):
        assert path in paths
    assert "multipart/form-data" in paths["/classify"]["post"]["requestBody"]["content"]


def test_unknown_route_and_wrong_method_are_json(client: TestClient) -> None:
    assert client.get("/nowhere").json() == {"detail": "Not Found"}
    wrong = client.get("/classify")
    assert wrong.status_code == 405 and "detail" in wrong.json()


def test_web_page_and_its_assets_are_served_with_no_outside_dependency(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '<meta name="viewport"' in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
        assert asset in page.text
    static = Path(__file__).resolve().parents[2] / "app" / "static"
    for path in static.iterdir():  # works offline: nothing fetched from a CDN
        text = path.read_text()
        assert "https://" not in text and "http://" not in text.replace("http://www.w3.org", ""), path


def test_torch_runs_on_one_dedicated_thread_with_the_configured_thread_count(make_client) -> None:
    wanted = 2 if torch.get_num_threads() != 2 else 1
    with make_client(torch_threads=wanted) as client:
        engine = client.app.state.engine  # type: ignore[attr-defined]
        seen = engine._executor.submit(lambda: (threading.current_thread().name, torch.get_num_threads())).result()
        assert seen[0].startswith("sgan-torch") and seen[1] == wanted
        assert threading.current_thread().name != seen[0]


# ---------------------------------------------------------------------------------------------- API key


def test_api_key_guards_inference_routes_only(make_client) -> None:
    with make_client(api_key="s3cret") as client:
        for headers in ({}, {"X-API-Key": "wrong"}):
            refused = post_file_with_headers(client, headers)
            assert refused.status_code == 401 and "X-API-Key" in refused.json()["detail"]
            assert client.get("/sample", headers=headers).status_code == 401
            assert client.post("/classify/batch", headers=headers).status_code == 401
        assert post_file_with_headers(client, {"X-API-Key": "s3cret"}).status_code == 200
        assert client.get("/sample", params={"n": 1}, headers={"X-API-Key": "s3cret"}).status_code == 200
        for path in ("/health", "/ready", "/metrics", "/info", "/"):
            assert client.get(path).status_code == 200, path


def post_file_with_headers(client: TestClient, headers: dict):
    return client.post("/classify", files={"file": ("a.png", garment_png(), PNG)}, headers=headers)


# ---------------------------------------------------------------------------------------------- no model


@pytest.mark.parametrize("damage", ["missing", "corrupt-weights", "bad-card"])
def test_a_broken_model_directory_leaves_a_live_server_that_says_why(
    make_client, app_model_dir: Path, tmp_path: Path, damage: str
) -> None:
    model_dir = tmp_path / "model"
    if damage != "missing":
        shutil.copytree(app_model_dir, model_dir)
    if damage == "corrupt-weights":
        weights = model_dir / "discriminator.safetensors"
        weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    elif damage == "bad-card":
        (model_dir / "model.json").write_text("{not json")
    reason = {"missing": "not found", "corrupt-weights": "SHA-256", "bad-card": "cannot read"}[damage]

    with make_client(model_dir=model_dir) as client:
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        assert ready.status_code == 503 and reason in ready.json()["detail"]
        for response in (post_file(client, garment_png()), client.get("/sample"), client.get("/info")):
            assert response.status_code == 503 and reason in response.json()["detail"]
        assert "sgan_model_ready 0.0" in client.get("/metrics").text


@pytest.mark.skipif(
    not (BUNDLED_MODEL_DIR / "model.json").is_file(), reason=f"no bundled model at {BUNDLED_MODEL_DIR} yet"
)
def test_with_no_model_configured_the_bundled_model_is_served() -> None:
    settings = Settings(model_dir=None, torch_threads=1)
    with TestClient(create_app(settings)) as client:
        ready = client.get("/ready")
        assert ready.status_code == 200 and ready.json()["model_dir"] == str(BUNDLED_MODEL_DIR)
        assert post_file(client, garment_png()).status_code == 200


def test_an_internal_failure_is_a_json_500_and_the_worker_survives(app_model_dir: Path, monkeypatch) -> None:
    app = create_app(Settings(model_dir=app_model_dir, torch_threads=1))
    with TestClient(app, raise_server_exceptions=False) as client:
        engine = app.state.engine
        forward = engine._forward

        def broken_forward(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            raise RuntimeError("boom")

        monkeypatch.setattr(engine, "_forward", broken_forward)
        response = post_file(client, garment_png())
        assert response.status_code == 500 and response.json() == {"detail": "internal server error"}
        monkeypatch.setattr(engine, "_forward", forward)
        assert post_file(client, garment_png()).status_code == 200
