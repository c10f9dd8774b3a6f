"""``sgan-serve``: run the HTTP server with uvicorn. Flags override the SGAN_* environment."""

from __future__ import annotations

import argparse
import logging
import os
import signal
from typing import Any

import uvicorn

from app.main import create_app
from app.settings import Settings
from app.workers import reuseport_supported, serve_workers

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sgan-serve",
        description="Serve a model directory over HTTP (POST /classify, GET /sample, web page at /). "
        "Every setting can also come from an SGAN_* environment variable; flags win.",
    )
    server = parser.add_argument_group("server")
    server.add_argument("--host", help="interface to listen on (SGAN_HOST, default 127.0.0.1)")
    server.add_argument("--port", type=int, help="port (SGAN_PORT, default 8000)")
    server.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    server.add_argument("--workers", type=int, help="server processes (SGAN_WORKERS, default min(2, cores))")
    model = parser.add_argument_group("model")
    model.add_argument("--model-dir", help="model directory (SGAN_MODEL_DIR, default: the bundled model)")
    model.add_argument(
        "--models-dir", help="a folder of model directories, served as /models/NAME/... (SGAN_MODELS_DIR)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = {
        key: value
        for key, value in (
            ("host", args.host),
            ("port", args.port),
            ("model_dir", args.model_dir),
            ("models_dir", args.models_dir),
            ("log_level", args.log_level),
            ("workers", args.workers),
        )
        if value is not None
    }
    settings = Settings(**overrides)  # init arguments take precedence over the environment
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": settings.access_log,
        "timeout_graceful_shutdown": int(settings.graceful_shutdown_s),
    }
    if settings.workers == 1:
        # SIGHUP asks for a reload of the models (app/registry.py): ignored until the app takes it over, instead
        # of the default of ending the process.
        previous = signal.signal(signal.SIGHUP, signal.SIG_IGN) if hasattr(signal, "SIGHUP") else None
        try:
            uvicorn.run(create_app(settings), **options)
        finally:
            if previous is not None:
                signal.signal(signal.SIGHUP, previous)
        return 0
    # Several processes: each builds its app from the SGAN_* environment (get_settings), so the flags are handed
    # down through it.
    for key, value in overrides.items():
        os.environ[f"SGAN_{key.upper()}"] = str(value)
    if reuseport_supported():
        return serve_workers(settings.workers, options, LOG_FORMAT)
    uvicorn.run("app.main:create_app", factory=True, workers=settings.workers, **options)  # not Linux: one socket
    return 0
