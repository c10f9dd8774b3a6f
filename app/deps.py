"""Dependencies shared by the routers, as ``Annotated`` aliases (``EngineDep``, ``SettingsDep``, ...).

They are ``async def`` although they never await: FastAPI runs a plain ``def`` dependency in its thread pool,
and these four hops per classify request cost more than the whole image decode (benchmarks/results/serving.md).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from app.engine import InferenceEngine
from app.metrics import Metrics
from app.registry import ModelRegistry, ModelSlot, ModelUnavailable, ServedModel
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


async def get_registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry | None = request.app.state.models
    if registry is None:
        raise HTTPException(status_code=503, detail=f"model not ready: {request.app.state.load_error}")
    return registry


async def get_slot(registry: Annotated[ModelRegistry, Depends(get_registry)], name: str) -> ModelSlot:
    """The model named in the path, or 404."""
    slot = registry.get(name)
    if slot is None:
        raise HTTPException(status_code=404, detail=f"no model named {name!r}: GET /models lists them")
    return slot


def _lease(registry: ModelRegistry, slot: ModelSlot) -> ServedModel:
    try:
        return registry.lease(slot)
    except ModelUnavailable as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from None


async def default_model(registry: Annotated[ModelRegistry, Depends(get_registry)]) -> AsyncIterator[ServedModel]:
    """The version of the default model serving now, held until the request is answered: a live swap never
    changes the model under a request (app/registry.py)."""
    served = _lease(registry, registry.default)
    try:
        yield served
    finally:
        served.release()


async def named_model(
    registry: Annotated[ModelRegistry, Depends(get_registry)], slot: Annotated[ModelSlot, Depends(get_slot)]
) -> AsyncIterator[ServedModel]:
    """The same, for the model named in the path (/models/{name}/...)."""
    served = _lease(registry, slot)
    try:
        yield served
    finally:
        served.release()


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
EngineDep = Annotated[InferenceEngine, Depends(get_engine)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
SlotDep = Annotated[ModelSlot, Depends(get_slot)]
# scope="function": the lease ends when the handler returns, not after the response has been sent.
DefaultModelDep = Annotated[ServedModel, Depends(default_model, scope="function")]
NamedModelDep = Annotated[ServedModel, Depends(named_model, scope="function")]

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


async def require_management_key(
    settings: SettingsDep, api_key: Annotated[str | None, Security(_api_key_header)]
) -> None:
    """Management routes (POST /models/{name}/reload) always need a key: refused while SGAN_API_KEY is unset."""
    if settings.api_key is None:
        raise HTTPException(
            status_code=403,
            detail="reloading over HTTP needs SGAN_API_KEY set on the server and sent in X-API-Key; without one, "
            "send the server SIGHUP or replace the model directory (it is picked up within SGAN_RELOAD_POLL_S)",
        )
    await require_api_key(settings, api_key)
