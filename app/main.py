"""The FastAPI app factory and its lifespan (load the models, watch them for replacements, free them after
serving)."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.requests import ClientDisconnect

from app.engine import EngineUnavailable
from app.imaging import ImageError
from app.limits import BodySizeLimitMiddleware, BodyTimeoutMiddleware
from app.metrics import Metrics, MetricsMiddleware
from app.registry import ModelRegistry, ModelSlot
from app.routes import classify, model_panel, models, ops, sample, suggest, web
from app.settings import Settings, get_settings

logger = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    metrics: Metrics = app.state.metrics
    registry = ModelRegistry(settings, metrics, on_default_change=lambda slot: _show_default(app, metrics, slot))
    await registry.start()
    app.state.models = registry
    # Everything that exists now (torch, FastAPI, the model) lives as long as the process: take it out of the
    # cyclic garbage collector's view. Otherwise each full collection walks ~200,000 such objects, a 105 ms
    # stop of the event loop (measured on the 2-core benchmark machine) that set p99 under load at 100-150 ms
    # (benchmarks/results/serving.md). Reference counting still frees all of it as usual.
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        # Uvicorn runs this after in-flight requests finished (SIGTERM: graceful shutdown), so closing only has
        # to drain what is still queued.
        app.state.models = None
        await registry.close()


def _show_default(app: FastAPI, metrics: Metrics, slot: ModelSlot) -> None:
    """The default model's version (or why there is none) where /ready, /info and the web page read it. A
    missing or corrupt directory leaves a live process that says why."""
    app.state.engine = slot.current.engine if slot.current is not None else None
    app.state.load_error = slot.error
    metrics.model_ready.set(0 if slot.current is None else 1)


async def _image_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ImageError)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)


async def _engine_unavailable(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})


async def _client_disconnect(request: Request, exc: Exception) -> JSONResponse:
    # The client hung up mid-upload: nobody will read this answer, but it is not a server error either.
    logger.info("client disconnected during %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "the client disconnected before the request body was complete"}, status_code=400)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Reached only by a bug: client input is mapped to 4xx before it gets here. Keep the JSON contract.
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings if settings is not None else get_settings()
    app = FastAPI(
        title="SGAN image classifier",
        summary="A semi-supervised GAN's K+1 discriminator as a classifier, and its generator's samples.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics = Metrics()
    app.state.engine = None
    app.state.models = None  # the ModelRegistry, while the lifespan runs
    app.state.load_error = "the model is still loading"

    routers = (
        classify.router,
        sample.router,
        ops.router,
        web.router,
        model_panel.router,
        models.router,
        suggest.router,
    )
    for router in routers:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=web.STATIC_DIR), name="static")

    app.add_exception_handler(ImageError, _image_error)
    app.add_exception_handler(EngineUnavailable, _engine_unavailable)
    app.add_exception_handler(ClientDisconnect, _client_disconnect)
    app.add_exception_handler(Exception, _unexpected)

    def body_limit(path: str) -> int:
        # /classify/batch and /models/{name}/classify/batch
        batch = path.endswith("/classify/batch") or path == "/suggest"  # /suggest takes a batch too
        return settings.max_batch_body_bytes if batch else settings.max_body_bytes

    # Added last = outermost: metrics see every answer, the body limits' 413s and 408s included.
    app.add_middleware(BodyTimeoutMiddleware, timeout_s=settings.body_timeout_s)
    app.add_middleware(BodySizeLimitMiddleware, limit_for_path=body_limit)
    known_paths = frozenset(route.path for router in routers for route in router.routes if isinstance(route, APIRoute))
    app.add_middleware(MetricsMiddleware, metrics=metrics, known_paths=known_paths)
    return app
