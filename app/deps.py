"""Dependencies shared by the routers, as ``Annotated`` aliases (``EngineDep``, ``SettingsDep``, ...).

They are ``async def`` although they never await: FastAPI runs a plain ``def`` dependency in its thread pool,
and these four hops per classify request cost more than the whole image decode (benchmarks/results/serving.md).
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from app.engine import InferenceEngine
from app.metrics import Metrics
from app.settings import Settings


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def get_engine(request: Request) -> InferenceEngine:
    """The loaded model's engine, or 503 saying why there is none (still loading, or failed to load)."""
    engine: InferenceEngine | None = request.app.state.engine
    if engine is None:
        raise HTTPException(status_code=503, detail=f"model not ready: {request.app.state.load_error}")
    return engine


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
EngineDep = Annotated[InferenceEngine, Depends(get_engine)]

_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="required when the server sets SGAN_API_KEY"
)


async def require_api_key(settings: SettingsDep, api_key: Annotated[str | None, Security(_api_key_header)]) -> None:
    """With SGAN_API_KEY set, the inference routes need it in X-API-Key (constant-time comparison)."""
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    if api_key is None or not secrets.compare_digest(api_key.encode(), expected):
        raise HTTPException(
            status_code=401,
            detail="missing or wrong API key: send it in the X-API-Key header",
            headers={"WWW-Authenticate": "APIKey"},
        )
