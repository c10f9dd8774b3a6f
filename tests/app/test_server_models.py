"""Live model replacement against real uvicorn processes on 127.0.0.1: a stream of concurrent classify requests
while the model directory is replaced twice (the trainer's atomic rename) and then by a corrupt directory, and a
server of two workers told to reload by SIGHUP and by POST /models/{name}/reload."""

from __future__ import annotations

import os
import re
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from app_images import encode
from PIL import Image

from app.imaging import prepare_image
from model import class_probabilities, load_model_dir, read_card
from model.imaging import pixels_to_tensor

pytest_plugins = ["app_fixtures"]  # the fixtures of tests/app (see app_fixtures.py)

CLIENTS = 6  # concurrent clients, each sending one request after another
IMAGES = 12
POLL_S = 0.2
# The longest a replacement may take to answer: two polls to see the directory hold still, the load and the
# warm-up. Generous, for a 2-core machine busy with other tests; the measured time is printed.
SWAP_BOUND_S = 15.0


def random_pngs() -> list[bytes]:
    rng = np.random.default_rng(0)
    return [encode(Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)), "PNG") for _ in range(IMAGES)]


def reference_probabilities(model_dir: Path, images: list[bytes]) -> np.ndarray:
    """(IMAGES, K): what the model in ``model_dir`` answers for each image, computed in this process."""
    loaded = load_model_dir(model_dir)
    pixels = np.stack([prepare_image(data, loaded.card, 10**8).pixels for data in images])
    with torch.inference_mode():
        return class_probabilities(loaded.discriminator(pixels_to_tensor(pixels))).numpy()


def metric_total(base_url: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in httpx.get(f"{base_url}/metrics", timeout=10).text.splitlines():
        found = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if found and all(f'{key}="{value}"' in (found.group(1) or "") for key, value in labels.items()):
            total += float(found.group(2))
    return total


def replace_by_rename(source: Path, destination: Path) -> None:
    """Swap a directory in as the trainer does: the old one moved aside, the new one renamed into place."""
    aside = destination.with_name(f".{destination.name}.old")
    os.rename(destination, aside)
    os.rename(source, destination)
    shutil.rmtree(aside)


@dataclass
class Answer:
    started: float
    finished: float
    image: int
    status: int
    body: dict


class Load:
    """``CLIENTS`` threads sending /classify requests one after another until stopped, every answer kept."""

    def __init__(self, base_url: str, images: list[bytes]) -> None:
        self.base_url, self.images = base_url, images
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(index,)) for index in range(CLIENTS)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _client(self, index: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            count = index
            while not self._stop.is_set():
                image = count % len(self.images)
                count += CLIENTS
                started = time.monotonic()
                try:
                    response = client.post("/classify", files={"file": ("i.png", self.images[image], "image/png")})
                    status, body = response.status_code, response.json()
                except httpx.HTTPError as exc:  # a dropped connection is an error too
                    status, body = 0, {"detail": repr(exc)}
                self.answers.append(Answer(started, time.monotonic(), image, status, body))

    def wait_for(self, model_id: str, since: float) -> float:
        """Seconds from ``since`` until the first answer of ``model_id`` to a request started after it."""
        deadline = since + SWAP_BOUND_S
        while time.monotonic() < deadline:
            found = [a for a in list(self.answers) if a.started >= since and a.body.get("model_id") == model_id]
            if found:
                return min(a.finished for a in found) - since
            time.sleep(0.02)
        raise AssertionError(f"model {model_id} did not answer within {SWAP_BOUND_S} s")


@pytest.mark.slow
def test_a_model_replaced_twice_under_load_answers_every_request_from_one_model(
    start_server, build_model_dir, tmp_path: Path
) -> None:
    images = random_pngs()
    staged = [build_model_dir(tmp_path / f"staged-{seed}", seed=seed) for seed in (1, 2, 3)]
    ids = [read_card(path).model_id for path in staged]
    references = {model_id: reference_probabilities(path, images) for model_id, path in zip(ids, staged, strict=True)}
    served = build_model_dir(tmp_path / "served", seed=1)
    env = {"SGAN_MODEL_DIR": str(served), "SGAN_RELOAD_POLL_S": str(POLL_S)}
    with start_server(env) as server:
        with Load(server.base_url, images) as load:
            time.sleep(1.0)
            swaps = []
            for seed, model_id in zip((2, 3), ids[1:], strict=True):
                replaced_at = time.monotonic()
                build_model_dir(served, seed=seed)  # staged beside it, then swapped in by renames
                assert read_card(served).model_id == model_id
                swaps.append((replaced_at, load.wait_for(model_id, replaced_at)))
                time.sleep(1.0)
            # A corrupt replacement: refused, and the model before it keeps answering.
            corrupt = build_model_dir(tmp_path / "corrupt", seed=4)
            weights = corrupt / "discriminator.safetensors"
            weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
            replace_by_rename(corrupt, served)
            refused_at = time.monotonic()
            while metric_total(server.base_url, "sgan_model_reloads_total", outcome="refused") < 1:
                assert time.monotonic() - refused_at < SWAP_BOUND_S, "the corrupt directory was not refused"
                time.sleep(0.05)
            time.sleep(1.0)
        swapped = metric_total(server.base_url, "sgan_model_reloads_total", outcome="swapped")
        listing = httpx.get(f"{server.base_url}/models").json()["models"][0]
    answers = load.answers
    assert len(answers) > 50, f"only {len(answers)} requests in the whole test"
    errors = [(a.status, a.body) for a in answers if a.status != 200]
    assert not errors, f"{len(errors)} of {len(answers)} requests failed: {errors[:3]}"
    for answer in answers:
        model_id = answer.body["model_id"]
        assert model_id in references, f"answered by an unknown model {model_id}"
        # Never a mix: the probabilities are exactly what the model named in the answer gives for that image.
        probabilities = np.array(list(answer.body["probabilities"].values()))
        np.testing.assert_allclose(probabilities, references[model_id][answer.image], rtol=0, atol=1e-5)
    # Once a new model has answered, every request started later gets it, until the next replacement; the
    # corrupt directory replaced nothing, so the last good model answers to the end.
    windows = [(swaps[0][0] + swaps[0][1], swaps[1][0], ids[1]), (swaps[1][0] + swaps[1][1], float("inf"), ids[2])]
    for start, end, model_id in windows:
        stale = [a.body["model_id"] for a in answers if start < a.started < end and a.body["model_id"] != model_id]
        assert not stale, f"{len(stale)} requests started after {model_id} answered got an older model"
    assert swapped == 2
    assert listing["model_id"] == ids[2] and listing["refusals"] == 1 and "SHA-256" in listing["error"]
    print(
        f"{len(answers)} requests, 0 errors; new model answering {swaps[0][1]:.2f} s and {swaps[1][1]:.2f} s "
        f"after each replacement (poll {POLL_S} s)"
    )


def fresh_connection_ids(base_url: str, count: int = 16) -> set[str]:
    """The model_id of ``count`` requests, each on a new connection: the kernel spreads them over the workers."""
    ids = set()
    for _ in range(count):
        with httpx.Client(base_url=base_url, timeout=30) as client:
            ids.add(client.get("/ready").json()["model_id"])
    return ids


def wait_for_every_worker(base_url: str, model_id: str) -> float:
    start = time.monotonic()
    while fresh_connection_ids(base_url) != {model_id}:
        assert time.monotonic() - start < SWAP_BOUND_S, f"not every worker serves {model_id}"
        time.sleep(0.1)
    return time.monotonic() - start


@pytest.mark.slow
def test_every_worker_swaps_on_sighup_and_on_the_reload_route(start_server, build_model_dir, tmp_path: Path) -> None:
    served = build_model_dir(tmp_path / "served", seed=1)
    first = read_card(served).model_id
    # No polling: only SIGHUP and the route can make a worker look.
    env = {"SGAN_MODEL_DIR": str(served), "SGAN_WORKERS": "2", "SGAN_RELOAD_POLL_S": "0", "SGAN_API_KEY": "k"}
    with start_server(env) as server:
        wait_for_every_worker(server.base_url, first)
        build_model_dir(served, seed=2)
        second = read_card(served).model_id
        time.sleep(0.5)
        assert fresh_connection_ids(server.base_url) == {first}
        server.process.send_signal(signal.SIGHUP)  # the supervisor forwards it to each worker
        wait_for_every_worker(server.base_url, second)

        build_model_dir(served, seed=3)
        third = read_card(served).model_id
        answer = httpx.post(f"{server.base_url}/models/{served.name}/reload", headers={"X-API-Key": "k"}, timeout=60)
        assert answer.status_code == 200 and answer.json()["model_id"] == third
        # The worker that answered told the other one, through the supervisor.
        wait_for_every_worker(server.base_url, third)
        assert server.process.poll() is None
