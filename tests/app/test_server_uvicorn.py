"""Against a real uvicorn process on 127.0.0.1: concurrency with micro-batching, body limits on the wire,
graceful shutdown on SIGTERM, and the ``sgan-serve`` command line."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from app_images import encode, garment_png
from PIL import Image

pytest_plugins = ["app_fixtures"]  # the fixtures of tests/app (see app_fixtures.py)

CONCURRENT_REQUESTS = 300
DISTINCT_IMAGES = 30


def distinct_pngs(count: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    return [encode(Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)), "PNG") for _ in range(count)]


def metric(base_url: str, name: str) -> float:
    text = httpx.get(f"{base_url}/metrics").text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


def probabilities(answer: dict) -> np.ndarray:
    return np.array(list(answer["probabilities"].values()))


def test_hundreds_of_concurrent_requests_all_answer_as_if_alone(live_server) -> None:
    images = distinct_pngs(DISTINCT_IMAGES)
    url = f"{live_server.base_url}/classify"
    with httpx.Client(timeout=30) as client:
        alone = [client.post(url, files={"file": ("i.png", data, "image/png")}).json() for data in images]
    passes_before = metric(live_server.base_url, "sgan_inference_batch_size_count")

    async def fire() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            return await asyncio.gather(
                *(
                    client.post(url, files={"file": ("i.png", images[i % DISTINCT_IMAGES], "image/png")})
                    for i in range(CONCURRENT_REQUESTS)
                )
            )

    start = time.perf_counter()
    responses = asyncio.run(fire())
    elapsed = time.perf_counter() - start
    assert [r.status_code for r in responses] == [200] * CONCURRENT_REQUESTS
    for i, response in enumerate(responses):
        answer, reference = response.json(), alone[i % DISTINCT_IMAGES]
        assert answer["label"] == reference["label"]
        np.testing.assert_allclose(probabilities(answer), probabilities(reference), rtol=0, atol=1e-5)
        assert answer["realness"] == pytest.approx(reference["realness"], abs=1e-5)
    passes = metric(live_server.base_url, "sgan_inference_batch_size_count") - passes_before
    assert passes < CONCURRENT_REQUESTS  # requests were merged into micro-batches
    print(f"{CONCURRENT_REQUESTS} concurrent requests in {elapsed:.2f} s, {passes:.0f} forward passes")


def raw_http(port: int, head: bytes, body_parts: list[bytes], timeout: float = 5.0) -> tuple[bytes, int]:
    """Send a request head and body parts on a socket, stopping as soon as the server answers; returns the
    answer's first bytes and how many body parts went out before it came."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(head)
        sent = 0
        for part in body_parts:
            connection.setblocking(False)
            try:
                answer = connection.recv(4096)
                if answer:
                    return _read_until_closed(connection, answer), sent
            except BlockingIOError:
                pass
            connection.setblocking(True)
            connection.sendall(part)
            sent += 1
            time.sleep(0.01)
        connection.settimeout(timeout)
        return _read_until_closed(connection, connection.recv(4096)), sent


def _read_until_closed(connection: socket.socket, answer: bytes) -> bytes:
    """The rest of an answer: the server closes a connection whose body it refused to read."""
    connection.setblocking(True)
    connection.settimeout(5.0)
    try:
        while chunk := connection.recv(4096):
            answer += chunk
    except ConnectionResetError:  # the kernel resets a connection closed with unread data in it
        pass
    return answer


def test_a_declared_oversize_body_is_refused_before_it_is_sent(live_server) -> None:
    head = b"POST /classify HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\nContent-Length: 1000000000\r\n\r\n"
    answer, _ = raw_http(live_server.port, head, [])  # not one body byte sent
    assert answer.startswith(b"HTTP/1.1 413")
    assert b"over the limit of 65536 bytes" in answer


def test_a_streamed_body_is_cut_off_at_the_limit(live_server) -> None:
    head = b"POST /classify HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"%x\r\n" % 16384 + b"\x00" * 16384 + b"\r\n"
    parts = [chunk] * 64  # 1 MiB offered, never terminated: the server must answer without waiting for the end
    answer, sent = raw_http(live_server.port, head, parts)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert sent < len(parts)


def test_sigterm_lets_in_flight_requests_finish(start_server, app_model_dir: Path) -> None:
    # A long batch window keeps the request in flight, waiting for its batch, when SIGTERM arrives.
    env = {"SGAN_MODEL_DIR": str(app_model_dir), "SGAN_MAX_BATCH_WAIT_MS": "1000", "SGAN_MAX_BATCH_SIZE": "64"}
    with start_server(env) as server:
        result: dict[str, httpx.Response] = {}

        def send() -> None:
            result["response"] = httpx.post(
                f"{server.base_url}/classify", files={"file": ("a.png", garment_png(), "image/png")}, timeout=30
            )

        worker = threading.Thread(target=send)
        worker.start()
        deadline = time.monotonic() + 10
        while metric(server.base_url, "sgan_inference_queue_depth") < 1:
            assert time.monotonic() < deadline, "the request never reached the queue"
            time.sleep(0.02)
        server.process.send_signal(signal.SIGTERM)
        worker.join(timeout=30)
        assert result["response"].status_code == 200
        assert result["response"].json()["label"]
        # Uvicorn re-raises the signal once it has shut down cleanly, so the exit status says SIGTERM.
        assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in server.log()


def sgan_serve() -> str:
    script = Path(sys.executable).with_name("sgan-serve")
    found = str(script) if script.exists() else shutil.which("sgan-serve")
    if found is None:
        pytest.skip("the sgan-serve console script is not installed (pip install -e .)")
    return found


def test_sgan_serve_flags_override_the_environment(start_server, app_model_dir: Path) -> None:
    # The environment names a port nobody listens on and a model that does not exist; the flags win.
    env = {"SGAN_PORT": "1", "SGAN_MODEL_DIR": "/nonexistent/model"}

    def command(port: int) -> list[str]:
        return [sgan_serve(), "--host", "127.0.0.1", "--port", str(port), "--model-dir", str(app_model_dir)]

    with start_server(env, command) as server:
        ready = httpx.get(f"{server.base_url}/ready").json()
        assert ready["model_dir"] == str(app_model_dir)
