"""Several models (docs/design.md, HTTP contract): GET /models lists them; /models/{name}/classify,
/models/{name}/classify/batch and /models/{name}/sample reach one; POST /models/{name}/reload swaps in what its
directory now holds. The plain routes serve the default model."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response

from app.deps import (
    MetricsDep,
    NamedModelDep,
    RegistryDep,
    SettingsDep,
    SlotDep,
    require_api_key,
    require_management_key,
)
from app.registry import ModelSlot
from app.routes.classify import _BATCH_BODY, _SINGLE_BODY, ERRORS, Invert, TopK, classify_one, classify_several
from app.routes.sample import SAMPLE_RESPONSES, Count, Label, OutputFormat, Seed, sample_from
from app.schemas import (
    BatchClassification,
    Classification,
    ErrorResponse,
    ModelEntry,
    ModelList,
    ReloadResponse,
    SampleSetResponse,
)
from app.workers import signal_sibling_workers

router = APIRouter(tags=["models"])

Name = Annotated[str, Path(description="a model's name, as GET /models lists it")]
_UNKNOWN: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse, "description": "no model of that name"}}


def model_entry(slot: ModelSlot) -> ModelEntry:
    served = slot.current
    card = served.card if served is not None else None
    accuracy = card.metrics.get("test_accuracy") if card is not None else None
    return ModelEntry(
        name=slot.name,
        default=slot.default,
        model_dir=str(slot.path),
        status=slot.status,
        model_id=card.model_id if card is not None else None,
        classes=card.class_names if card is not None else None,
        accuracy=float(accuracy) if isinstance(accuracy, (int, float)) else None,
        weights_bytes=served.weights_bytes if served is not None else None,
        loaded_at=served.loaded_at if served is not None else None,
        reloads=slot.reloads,
        refusals=slot.refusals,
        error=slot.error if served is None else slot.last_refusal,
    )


@router.get("/models", response_model=ModelList, summary="The models served")
async def list_models(registry: RegistryDep) -> ModelList:
    """Every model of this server: the default, and one per folder of SGAN_MODELS_DIR, with the version serving
    and its classes and test accuracy. A directory that failed to load is listed with its error."""
    return ModelList(default=registry.default.name, models=[model_entry(slot) for slot in registry.slots()])


@router.post(
    "/models/{name}/classify",
    response_model=Classification,
    responses={**ERRORS, **_UNKNOWN},
    openapi_extra=_SINGLE_BODY,
    dependencies=[Depends(require_api_key)],
    summary="Classify one image with a named model",
)
async def classify_with(
    request: Request,
    name: Name,
    served: NamedModelDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    top_k: TopK = 5,
    invert: Invert = "auto",
) -> Classification:
    """POST /classify, answered by the model ``name``."""
    return await classify_one(request, served, settings, metrics, top_k, invert)


@router.post(
    "/models/{name}/classify/batch",
    response_model=BatchClassification,
    responses={**ERRORS, **_UNKNOWN},
    openapi_extra=_BATCH_BODY,
    dependencies=[Depends(require_api_key)],
    summary="Classify several images with a named model",
)
async def classify_batch_with(
    request: Request,
    name: Name,
    served: NamedModelDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    top_k: TopK = 5,
    invert: Invert = "auto",
) -> BatchClassification:
    """POST /classify/batch, answered by the model ``name``."""
    return await classify_several(request, served, settings, metrics, top_k, invert)


@router.get(
    "/models/{name}/sample",
    response_model=SampleSetResponse,
    responses={**SAMPLE_RESPONSES, **_UNKNOWN},
    dependencies=[Depends(require_api_key)],
    summary="Generate samples with a named model",
)
async def sample_with(
    name: Name,
    served: NamedModelDep,
    settings: SettingsDep,
    n: Count = 16,
    seed: Seed = None,
    output_format: OutputFormat = "png",
    label: Label = None,
) -> SampleSetResponse | Response:
    """GET /sample, answered by the model ``name``."""
    return await sample_from(served, settings, n, seed, output_format, label)


@router.post(
    "/models/{name}/reload",
    response_model=ReloadResponse,
    responses={
        **_UNKNOWN,
        401: {"model": ErrorResponse, "description": "missing or wrong X-API-Key"},
        403: {"model": ErrorResponse, "description": "the server has no SGAN_API_KEY: reloading over HTTP is off"},
        409: {"model": ErrorResponse, "description": "the directory failed to load: the older version still serves"},
    },
    dependencies=[Depends(require_management_key)],
    summary="Reload a model from its directory",
)
async def reload_model(name: Name, registry: RegistryDep, slot: SlotDep) -> ReloadResponse:
    """Load the model's directory now, warm it up and swap it in, without waiting for the next look at the disk.
    Requests in flight finish on the older version. With several workers this one answers and the others are
    told (SIGHUP through the supervisor) to look at once."""
    previous = slot.current.model_id if slot.current is not None else None
    outcome = await registry.reload(slot)
    signal_sibling_workers()
    if outcome == "refused":
        raise HTTPException(
            status_code=409, detail=f"refused, still serving {previous}: {slot.last_refusal or slot.error}"
        )
    assert outcome in ("loaded", "swapped", "changed")
    current = slot.current.model_id if slot.current is not None else None
    return ReloadResponse(name=slot.name, outcome=outcome, model_id=current, previous_model_id=previous)
