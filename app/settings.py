"""Server settings, read from ``SGAN_*`` environment variables (pydantic-settings).

``get_settings()`` is cached so the process reads its environment once; tests build ``Settings(...)``
directly and hand it to ``create_app``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from PIL import Image
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from model import BUNDLED_MODEL_DIR

MIB = 1024 * 1024


def _default_workers() -> int:
    # One process serves about one core of Python. Measured on 2 cores at concurrency 64: 4,463 requests/s with
    # 2 workers against 2,285 with 1 (same at concurrency 1). Above 2 cores, unmeasured: see the README.
    return min(2, os.cpu_count() or 1)


def _default_torch_threads(workers: int = 1) -> int:
    # Half the cores for torch's intra-op pools: the other half decode images and run the event loops, which
    # would otherwise be starved by a matmul spinning on every core. Each worker process has its own pool.
    return max(1, (os.cpu_count() or 2) // (2 * workers))


class Settings(BaseSettings):
    """Every knob of the server; each field ``x`` is read from the environment variable ``SGAN_X``."""

    model_config = SettingsConfigDict(env_prefix="SGAN_", protected_namespaces=(), extra="ignore")

    # --- model
    model_dir: Path | None = Field(
        default=None,
        description="the default model directory (the plain routes serve it); empty: the bundled default model",
    )
    models_dir: Path | None = Field(
        default=None,
        description="a folder of model directories, each served under its folder name at /models/{name}/...; "
        "one copied in is loaded, one removed is unloaded",
    )
    # Polling rather than inotify (watchfiles): a stat of three files per model per poll costs nothing, and it also
    # sees changes made through a Docker volume, NFS or another container, which inotify events may not reach.
    reload_poll_s: float = Field(
        default=1.0,
        ge=0,
        description="how often each worker checks the model directories for a replaced model (0: never; SIGHUP "
        "and POST /models/{name}/reload still do)",
    )
    backend: Literal["torch", "onnxruntime"] = Field(
        default="torch",
        description="what runs the discriminator: torch, or onnxruntime on the model exported at load time "
        "(pip install 'sgan-service[onnx]'; benchmarks/results/onnx.md)",
    )

    # --- network
    host: str = Field(default="127.0.0.1", description="interface to listen on (0.0.0.0 in a container)")
    port: int = Field(default=8000, ge=0, le=65535)
    api_key: SecretStr | None = Field(
        default=None, description="if set, /classify, /classify/batch and /sample require it in X-API-Key"
    )
    graceful_shutdown_s: float = Field(default=30.0, gt=0, description="how long SIGTERM waits for requests")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    # Off by default: writing one line per request cost 19% of the throughput at concurrency 64 (3,623 vs
    # 4,463 requests/s, 2 workers on 2 cores); /metrics counts and times every request by route and status.
    access_log: bool = Field(default=False, description="one log line per request (uvicorn's access log)")
    workers: int = Field(
        default_factory=_default_workers,
        ge=1,
        description="server processes on the port, each with its own model and micro-batcher (app/workers.py)",
    )

    # --- input limits
    max_body_bytes: int = Field(default=10 * MIB, ge=1, description="largest body for /classify")
    max_batch_body_bytes: int = Field(default=50 * MIB, ge=1, description="largest body for /classify/batch")
    max_pixels: int = Field(
        default=40_000_000,
        ge=1,
        le=Image.MAX_IMAGE_PIXELS,
        description="largest width*height accepted, checked from the image header before decoding",
    )
    max_batch_files: int = Field(default=16, ge=1, description="most images in one /classify/batch request")
    body_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="how long a client may take to send a whole request body; a slower one gets 408 and its "
        "connection is closed (a stalled upload must not hold a request for ever)",
    )

    # --- inference engine
    max_batch_size: int = Field(default=32, ge=1, description="most images the worker runs in one forward pass")
    # 0: the worker takes whatever is queued as soon as it is free; images that arrive during a forward pass
    # form the next batch (mean batch 32 at concurrency 64). Waiting bought nothing under load and cost every
    # lone request the whole wait: at concurrency 1, 5 ms gave 115 requests/s, 1 ms 347 and 0 ms 926.
    max_batch_wait_ms: float = Field(
        default=0.0, ge=0, description="how long the first image of a batch waits for others to join it"
    )
    max_queue: int = Field(default=1024, ge=1, description="images waiting for the worker before 503 'busy'")
    torch_threads: int = Field(default_factory=_default_torch_threads, ge=1)

    # --- samples
    max_samples: int = Field(default=64, ge=1, description="largest n for /sample")
    max_sample_draws: int = Field(
        default=1024, ge=1, description="most latents /sample?label= draws while looking for that class"
    )

    @field_validator("model_dir", "models_dir", "api_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `SGAN_MODEL_DIR=` in a compose file means "not set", not "the current directory".
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _batch_limit_covers_single(self) -> Settings:
        if self.max_batch_body_bytes < self.max_body_bytes:
            self.max_batch_body_bytes = self.max_body_bytes
        return self

    @model_validator(mode="after")
    def _share_cores_between_workers(self) -> Settings:
        if "torch_threads" not in self.model_fields_set:
            self.torch_threads = _default_torch_threads(self.workers)
        return self

    @property
    def resolved_model_dir(self) -> Path:
        return self.model_dir if self.model_dir is not None else BUNDLED_MODEL_DIR


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
