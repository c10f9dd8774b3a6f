"""Operations: GET /health, /ready, /info, /metrics. Never behind the API key: probes and scrapers need them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from app.deps import EngineDep, MetricsDep, SettingsDep
from app.schemas import ErrorResponse, HealthResponse, ReadyResponse

router = APIRouter(tags=["operations"])

_NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorResponse, "description": "the model is not loaded, and why"}
}


@router.get("/health", response_model=HealthResponse, summary="Liveness")
async def health() -> HealthResponse:
    """200 while the process serves requests, whether or not a model is loaded."""
    return HealthResponse(status="ok")


@router.get("/ready", response_model=ReadyResponse, responses=_NOT_READY, summary="Readiness")
async def ready(request: Request, settings: SettingsDep) -> ReadyResponse:
    """200 once the model is loaded; 503 with the reason (still loading, missing or corrupt directory)."""
    engine = request.app.state.engine
    if engine is None:
        raise HTTPException(status_code=503, detail=f"model not ready: {request.app.state.load_error}")
    return ReadyResponse(status="ready", model_id=engine.card.model_id, model_dir=str(settings.resolved_model_dir))


@router.get("/info", response_model=dict[str, Any], responses=_NOT_READY, summary="The model card")
async def info(engine: EngineDep) -> dict[str, Any]:
    """The loaded model's card (model.json): classes, image shape, normalisation, training facts, metrics."""
    return engine.card.to_dict()


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
async def prometheus_metrics(metrics: MetricsDep) -> Response:
    return Response(content=metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
