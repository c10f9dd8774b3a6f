"""Settings come from SGAN_* environment variables; sgan-serve's flags override them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app import cli
from app.settings import Settings, get_settings
from model import BUNDLED_MODEL_DIR

pytest_plugins = ["app_fixtures"]  # the fixtures of tests/app (see app_fixtures.py)


def test_settings_are_read_from_sgan_environment_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SGAN_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("SGAN_MAX_SAMPLES", "7")
    monkeypatch.setenv("SGAN_MAX_BATCH_WAIT_MS", "2.5")
    monkeypatch.setenv("SGAN_API_KEY", "k3y")
    settings = Settings()
    assert settings.resolved_model_dir == tmp_path
    assert (settings.max_samples, settings.max_batch_wait_ms) == (7, 2.5)
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "k3y"
    assert "k3y" not in repr(settings)  # a secret never reaches a log line


def test_no_model_dir_means_the_bundled_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SGAN_MODEL_DIR", "")  # as a compose file with an empty variable writes it
    monkeypatch.setenv("SGAN_API_KEY", "")
    settings = Settings()
    assert settings.model_dir is None and settings.api_key is None
    assert settings.resolved_model_dir == BUNDLED_MODEL_DIR


@pytest.mark.parametrize(
    ("name", "value"),
    [("SGAN_MAX_PIXELS", "0"), ("SGAN_MAX_PIXELS", str(10**12)), ("SGAN_PORT", "http"), ("SGAN_MAX_BATCH_SIZE", "0")],
)
def test_impossible_settings_are_refused_at_start(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_get_settings_reads_the_environment_once() -> None:
    get_settings.cache_clear()
    try:
        assert get_settings() is get_settings()
    finally:
        get_settings.cache_clear()


def test_cli_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SGAN_HOST", "0.0.0.0")
    monkeypatch.setenv("SGAN_PORT", "9000")
    monkeypatch.setenv("SGAN_MAX_SAMPLES", "5")
    monkeypatch.setenv("SGAN_WORKERS", "1")  # one process: uvicorn.run gets the app (several: app/workers.py)
    seen: dict[str, Any] = {}

    def fake_run(app: Any, **options: Any) -> None:
        seen["settings"] = app.state.settings
        seen.update(options)

    monkeypatch.setattr(cli.uvicorn, "run", fake_run)
    assert cli.main(["--port", "8123", "--model-dir", str(tmp_path)]) == 0
    assert (seen["host"], seen["port"]) == ("0.0.0.0", 8123)
    assert seen["settings"].model_dir == tmp_path
    assert seen["settings"].max_samples == 5  # not a flag: the environment still counts
    assert seen["timeout_graceful_shutdown"] > 0


def test_model_folder_reload_and_backend_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SGAN_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("SGAN_RELOAD_POLL_S", "0.5")
    monkeypatch.setenv("SGAN_BACKEND", "onnxruntime")
    settings = Settings()
    assert (settings.models_dir, settings.reload_poll_s, settings.backend) == (tmp_path, 0.5, "onnxruntime")
    monkeypatch.setenv("SGAN_MODELS_DIR", "")  # as a compose file with an empty variable writes it
    monkeypatch.setenv("SGAN_BACKEND", "tensorrt")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.setenv("SGAN_BACKEND", "torch")
    assert Settings().models_dir is None
    assert cli.build_parser().parse_args(["--models-dir", "m"]).models_dir == "m"
