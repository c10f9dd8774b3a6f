"""Fixtures for the server tests: one tiny model directory per session, apps built on it (TestClient),
and real uvicorn processes serving it.

A plugin module that each test module names in ``pytest_plugins``, not a ``tests/app/conftest.py``: other
test modules import the root conftest by name (``from conftest import ...``), which a second module called
``conftest`` would shadow.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

APP_TESTS = Path(__file__).resolve().parent
ROOT_CONFTEST = APP_TESTS.parent / "conftest.py"

ClientFactory = Callable[..., AbstractContextManager[TestClient]]


@pytest.fixture(autouse=True)
def _no_sgan_environment(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Server tests say which settings they use: a developer's own SGAN_* variables must not leak in."""
    if APP_TESTS not in Path(request.node.path).parents:
        return
    for name in list(os.environ):
        if name.startswith("SGAN_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def app_model_dir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """A tiny model directory shared by the whole session (the apps only read it).

    Built by tests/conftest.py's ``build_tiny_model_dir``, fetched from pytest's plugin registry because a
    plain ``import conftest`` is ambiguous in a test tree without packages.
    """
    root_conftest = request.config.pluginmanager.get_plugin(str(ROOT_CONFTEST))
    assert root_conftest is not None, f"{ROOT_CONFTEST} is not loaded"
    path: Path = root_conftest.build_tiny_model_dir(tmp_path_factory.mktemp("app") / "tiny-model")
    return path


@pytest.fixture(scope="session")
def build_model_dir(request: pytest.FixtureRequest) -> Callable[..., Path]:
    """``build_model_dir(path, seed=1)``: write a tiny model directory, atomically as the trainer does (a
    directory already there is replaced by a rename); another seed gives other weights, so another model_id."""
    root_conftest = request.config.pluginmanager.get_plugin(str(ROOT_CONFTEST))
    assert root_conftest is not None, f"{ROOT_CONFTEST} is not loaded"
    build: Callable[..., Path] = root_conftest.build_tiny_model_dir
    return build


@pytest.fixture
def make_client(app_model_dir: Path) -> ClientFactory:
    """``with make_client(max_samples=4) as client:`` an app on the tiny model, lifespan running."""

    @contextmanager
    def factory(**overrides: Any) -> Iterator[TestClient]:
        # One torch thread: tests run beside others on a small shared machine.
        options: dict[str, Any] = {"model_dir": app_model_dir, "torch_threads": 1, **overrides}
        with TestClient(create_app(Settings(**options))) as client:
            yield client

    return factory


@pytest.fixture
def client(make_client: ClientFactory) -> Iterator[TestClient]:
    with make_client() as test_client:
        yield test_client


# ---------------------------------------------------------------------------------------------- real servers

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    base_url: str
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_server(
    log_dir: Path,
    env: dict[str, str],
    command: Callable[[int], list[str]] | None = None,
    up_when: str = "/ready",
) -> Iterator[ServerProcess]:
    """A real uvicorn process on a free port of 127.0.0.1, up (``up_when`` answers 200), and stopped on exit.

    It runs ``python -m app`` with SGAN_PORT set to that port, or ``command(port)`` when given. A server
    that must stay unready is waited for with ``up_when="/health"``.
    """
    port = free_port()
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SGAN_")},
        "SGAN_HOST": "127.0.0.1",
        "SGAN_PORT": str(port),
        "SGAN_TORCH_THREADS": "1",
        # One process, so that /metrics describes the whole server; test_server_reliability.py runs two.
        "SGAN_WORKERS": "1",
        **env,
    }
    log_path = log_dir / f"server-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command(port) if command else [sys.executable, "-m", "app"],
            cwd=REPO_ROOT,
            env=full_env,
            stdout=log,
            stderr=log,
        )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", port, log_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"server exited with {process.returncode}:\n{server.log()}"
            assert time.monotonic() < deadline, f"server not up after 60 s:\n{server.log()}"
            try:
                if httpx.get(f"{server.base_url}{up_when}", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="session")
def live_server(app_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server on the tiny model for the whole session, with a small body limit to test against."""
    env = {"SGAN_MODEL_DIR": str(app_model_dir), "SGAN_MAX_BODY_BYTES": str(64 * 1024)}
    with running_server(tmp_path_factory.mktemp("live-server"), env) as server:
        yield server


@pytest.fixture
def start_server(tmp_path: Path) -> Callable[..., AbstractContextManager[ServerProcess]]:
    """``with start_server({"SGAN_MODEL_DIR": ...}) as server:`` a real server of the test's own."""

    def factory(
        env: dict[str, str], command: Callable[[int], list[str]] | None = None
    ) -> AbstractContextManager[ServerProcess]:
        return running_server(tmp_path, env, command)

    return factory
