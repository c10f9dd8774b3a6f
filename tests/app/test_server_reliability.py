"""Failure behaviour of a real server process on 127.0.0.1: clients that hang up or stall mid-upload, a model
directory that is missing or corrupt, SIGTERM with many requests in flight, several worker processes stopping
together (or when one dies), and a fuzz of the OpenAPI schema.

The SIGTERM test with one request in flight and the body size limits on the wire are in test_server_uvicorn.py.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from app_fixtures import running_server
from app_images import garment_png

from app.main import create_app
from app.settings import Settings

pytest_plugins = ["app_fixtures"]  # the fixtures of tests/app (see app_fixtures.py)

REPO_ROOT = Path(__file__).resolve().parents[2]


def metric_total(base_url: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels`` (0 when there are none yet)."""
    total = 0.0
    for line in httpx.get(f"{base_url}/metrics", timeout=10).text.splitlines():
        found = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if found and all(f'{key}="{value}"' in (found.group(1) or "") for key, value in labels.items()):
            total += float(found.group(2))
    return total


def server_errors(base_url: str) -> float:
    return sum(metric_total(base_url, "sgan_http_requests_total", status=str(code)) for code in range(500, 600))


def wait_for_in_flight(base_url: str, expected: float, timeout_s: float = 10.0) -> None:
    """Until the in-flight gauge reads ``expected`` (the /metrics request that reads it counts as one)."""
    deadline = time.monotonic() + timeout_s
    while (value := metric_total(base_url, "sgan_http_requests_in_flight")) != expected:
        assert time.monotonic() < deadline, f"{value} requests in flight, expected {expected}"
        time.sleep(0.05)


def classify_ok(base_url: str) -> None:
    response = httpx.post(f"{base_url}/classify", files={"file": ("a.png", garment_png(), "image/png")}, timeout=30)
    assert response.status_code == 200, response.text


def raw_head(content_type: str, length: int) -> bytes:
    return (
        f"POST /classify HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def multipart_body(data: bytes, boundary: str = "sgan-test-boundary") -> tuple[str, bytes]:
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return f"multipart/form-data; boundary={boundary}", body


def read_answer(connection: socket.socket, timeout_s: float) -> bytes:
    """Everything the server sends until it closes the connection."""
    connection.settimeout(timeout_s)
    answer = b""
    try:
        while chunk := connection.recv(4096):
            answer += chunk
    except ConnectionResetError:
        pass
    return answer


# ---------------------------------------------------------------------------------------------- clients


@pytest.mark.parametrize("multipart", [False, True], ids=["raw-body", "multipart"])
@pytest.mark.parametrize("reset", [False, True], ids=["close", "reset"])
def test_a_client_that_hangs_up_mid_upload_leaves_nothing_behind(live_server, multipart: bool, reset: bool) -> None:
    base_url = live_server.base_url
    errors_before = server_errors(base_url)
    log_before = len(live_server.log())
    content_type, body = multipart_body(garment_png()) if multipart else ("image/png", garment_png())
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=5) as connection:
        connection.sendall(raw_head(content_type, len(body) + 1000) + body[: len(body) // 2])
        time.sleep(0.2)  # the server is now waiting for the rest inside the route
        if reset:  # an abrupt RST, as a crashed client or a dropped mobile connection gives
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    wait_for_in_flight(base_url, 1)
    classify_ok(base_url)
    assert server_errors(base_url) == errors_before
    assert "Traceback" not in live_server.log()[log_before:]


def test_a_body_that_never_finishes_times_out_and_frees_its_slot(start_server, app_model_dir: Path) -> None:
    env = {"SGAN_MODEL_DIR": str(app_model_dir), "SGAN_BODY_TIMEOUT_S": "1"}
    with start_server(env) as server:
        base_url = server.base_url
        multipart_type, multipart = multipart_body(garment_png())
        stalled = []
        for content_type, body in [("image/png", garment_png())] * 3 + [(multipart_type, multipart)] * 3:
            connection = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            connection.sendall(raw_head(content_type, len(body)) + body[:100])  # and never the rest
            stalled.append(connection)

        # A trickle is no way around it: the deadline is for the whole body, not between two bytes.
        trickler = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        trickler.sendall(raw_head("image/png", 10_000))
        stop_trickle = threading.Event()

        def trickle() -> None:
            while not stop_trickle.wait(0.1):
                try:
                    trickler.send(b"\x00")
                except OSError:
                    return

        threading.Thread(target=trickle, daemon=True).start()
        started = time.monotonic()
        try:
            wait_for_in_flight(base_url, 1 + len(stalled) + 1, timeout_s=0.8)
            classify_ok(base_url)  # the stalled uploads hold nobody else up
            for connection in [*stalled, trickler]:
                answer = read_answer(connection, timeout_s=5)
                assert answer.startswith(b"HTTP/1.1 408"), answer
                assert b"not complete after 1 s" in answer
            assert time.monotonic() - started < 4
        finally:
            stop_trickle.set()
            for connection in [*stalled, trickler]:
                connection.close()
        wait_for_in_flight(base_url, 1)
        assert metric_total(base_url, "sgan_http_requests_total", route="/classify", status="408") == len(stalled) + 1
        classify_ok(base_url)


# ---------------------------------------------------------------------------------------------- model directory


@pytest.mark.parametrize("damage", ["missing", "corrupt-weights"])
def test_a_server_on_a_broken_model_directory_never_becomes_ready_and_says_why(
    app_model_dir: Path, tmp_path: Path, damage: str
) -> None:
    model_dir = tmp_path / "model"
    if damage == "corrupt-weights":
        shutil.copytree(app_model_dir, model_dir)
        weights = model_dir / "discriminator.safetensors"
        weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    reason = {"missing": "not found", "corrupt-weights": "SHA-256"}[damage]

    with running_server(tmp_path, {"SGAN_MODEL_DIR": str(model_dir)}, up_when="/health") as server:
        for _ in range(5):  # not a slow start: it stays unready
            ready = httpx.get(f"{server.base_url}/ready", timeout=5)
            assert ready.status_code == 503 and reason in ready.json()["detail"], ready.text
            time.sleep(0.1)
        refused = httpx.post(
            f"{server.base_url}/classify", content=garment_png(), headers={"Content-Type": "image/png"}
        )
        assert refused.status_code == 503 and reason in refused.json()["detail"]
        assert f"cannot load the model from {model_dir}" in server.log() and reason in server.log()
        assert "Traceback" not in server.log()


# ---------------------------------------------------------------------------------------------- shutdown


def test_sigterm_under_load_lets_every_in_flight_request_finish(start_server, app_model_dir: Path) -> None:
    in_flight = 48
    # A long batch window holds every request in the queue, all in flight together, when SIGTERM arrives.
    env = {"SGAN_MODEL_DIR": str(app_model_dir), "SGAN_MAX_BATCH_WAIT_MS": "2000", "SGAN_MAX_BATCH_SIZE": "64"}
    with start_server(env) as server:
        responses: list[httpx.Response | BaseException] = []

        async def fire() -> None:
            limits = httpx.Limits(max_connections=in_flight)
            async with httpx.AsyncClient(timeout=60, limits=limits) as client:
                url, png = f"{server.base_url}/classify", garment_png(size=28)
                sends = (client.post(url, content=png, headers={"Content-Type": "image/png"}) for _ in range(in_flight))
                responses.extend(await asyncio.gather(*sends, return_exceptions=True))

        worker = threading.Thread(target=asyncio.run, args=(fire(),))
        worker.start()
        deadline = time.monotonic() + 15
        while metric_total(server.base_url, "sgan_inference_queue_depth") < in_flight:
            assert time.monotonic() < deadline, "the requests never all reached the queue"
            time.sleep(0.02)
        server.process.send_signal(signal.SIGTERM)
        worker.join(timeout=60)
        statuses = [r.status_code if isinstance(r, httpx.Response) else repr(r) for r in responses]
        assert statuses == [200] * in_flight
        assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in server.log()


def worker_pids(parent: int) -> list[int]:
    """The server processes a multi-worker sgan-serve started (not multiprocessing's resource tracker)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, NotADirectoryError):
            continue
        if int(stat[stat.rfind(")") + 2 :].split()[1]) == parent and b"resource_tracker" not in cmdline:
            pids.append(int(entry.name))
    return pids


def test_two_workers_share_the_port_and_stop_together_on_sigterm(start_server, app_model_dir: Path) -> None:
    with start_server({"SGAN_MODEL_DIR": str(app_model_dir), "SGAN_WORKERS": "2"}) as server:
        workers = worker_pids(server.process.pid)
        assert len(workers) == 2
        for _ in range(20):  # a new connection each time: the kernel spreads them over both workers
            classify_ok(server.base_url)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
        assert server.log().count("Application shutdown complete") == 2
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_with_two_workers_metrics_count_the_whole_server_and_their_files_go_at_the_end(
    start_server, app_model_dir: Path
) -> None:
    with start_server({"SGAN_MODEL_DIR": str(app_model_dir), "SGAN_WORKERS": "2"}) as server:
        workers = worker_pids(server.process.pid)
        environs = [Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") for pid in workers]
        metrics_dirs = {line.split(b"=", 1)[1].decode() for env in environs for line in env
                        if line.startswith(b"PROMETHEUS_MULTIPROC_DIR=")}  # fmt: skip
        assert len(metrics_dirs) == 1  # one directory, shared by both workers
        metrics_dir = Path(metrics_dirs.pop())
        for _ in range(30):  # a new connection each time: the kernel spreads them over both workers
            classify_ok(server.base_url)
        assert len({path.name.rsplit("_", 1)[-1] for path in metrics_dir.glob("counter_*.db")}) == 2  # both counted
        for _ in range(6):  # each scrape, whichever worker answers it, reports all 30 requests
            assert metric_total(server.base_url, "sgan_http_requests_total", route="/classify", status="200") == 30
            assert metric_total(server.base_url, "sgan_model_ready") == 1
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
        assert not metrics_dir.exists()


def test_when_a_worker_dies_the_server_stops_and_says_so(start_server, app_model_dir: Path) -> None:
    with start_server({"SGAN_MODEL_DIR": str(app_model_dir), "SGAN_WORKERS": "2"}) as server:
        first, second = worker_pids(server.process.pid)
        os.kill(first, signal.SIGKILL)
        # Non-zero, so that what runs the server (Docker's restart policy) starts it afresh.
        assert server.process.wait(timeout=30) == 1
        assert "a worker process exited on its own" in server.log()
        assert not Path(f"/proc/{second}").exists()


# ---------------------------------------------------------------------------------------------- fuzz


try:
    import schemathesis
    from hypothesis import HealthCheck, settings
    from schemathesis.checks import not_a_server_error
except ImportError:  # a dev extra: without it only the fuzz test is skipped
    schemathesis = None

if schemathesis is None:

    @pytest.mark.skip(reason="schemathesis is not installed (pip install -e '.[dev]')")
    def test_fuzzing_the_openapi_schema_never_gets_a_server_error() -> None:
        pass

else:
    # The schema the live server serves at /openapi.json, built here because schemathesis must have it when the
    # tests are collected (its lazy fixture loader does not work with this pytest). It depends on no model.
    fuzzed_schema = schemathesis.openapi.from_dict(create_app(Settings(model_dir=None, api_key=None)).openapi())

    @pytest.mark.slow
    @fuzzed_schema.parametrize()
    @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
    def test_fuzzing_the_openapi_schema_never_gets_a_server_error(case, live_server) -> None:
        case.call_and_validate(base_url=live_server.base_url, checks=[not_a_server_error], timeout=30)
