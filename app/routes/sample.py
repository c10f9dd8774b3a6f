"""GET /sample: what the generator has learnt, judged by the discriminator."""

from __future__ import annotations

import base64
import secrets
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Response
from starlette.concurrency import run_in_threadpool

from app.deps import DefaultModelDep, SettingsDep, require_api_key
from app.engine import SampleSet
from app.registry import ServedModel
from app.routes.classify import ERRORS
from app.schemas import SampleItem, SampleSetResponse
from app.settings import Settings
from model import ModelCard
from model.imaging import encode_png, tile_grid

router = APIRouter(tags=["samples"], dependencies=[Depends(require_api_key)])

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes any 64-bit value; JSON clients keep 63 safely

Count = Annotated[int, Query(ge=1, description="how many samples (at most SGAN_MAX_SAMPLES)")]
Seed = Annotated[int | None, Query(ge=0, le=MAX_SEED, description="same seed, same samples; random when left out")]
OutputFormat = Annotated[Literal["png", "json"], Query(alias="format")]
Label = Annotated[
    str | None,
    Query(max_length=200, description="keep only samples the discriminator assigns to this class (name or index)"),
]
SAMPLE_RESPONSES = {
    **ERRORS,
    200: {
        "description": "format=png: a PNG grid (headers X-Seed, X-Samples-Found, X-Samples-Drawn, X-Model-Id); "
        "format=json: one base64 PNG per sample with the discriminator's label and realness",
        "content": {"image/png": {}},
    },
}


def resolve_label(card: ModelCard, label: str) -> int:
    """A class given by name (exact, then case-insensitive) or by index."""
    names = card.class_names
    if label in names:
        return names.index(label)
    lowered = [name.lower() for name in names]
    if label.lower() in lowered:
        return lowered.index(label.lower())
    if label.isdigit() and int(label) < len(names):
        return int(label)
    raise HTTPException(
        status_code=422, detail=f"unknown label {label!r}: expected one of {names} or an index 0..{len(names) - 1}"
    )


@router.get("/sample", response_model=SampleSetResponse, responses=SAMPLE_RESPONSES, summary="Generate samples")
async def sample(
    served: DefaultModelDep,
    settings: SettingsDep,
    n: Count = 16,
    seed: Seed = None,
    output_format: OutputFormat = "png",
    label: Label = None,
) -> SampleSetResponse | Response:
    return await sample_from(served, settings, n, seed, output_format, label)


async def sample_from(
    served: ServedModel,
    settings: Settings,
    n: int,
    seed: int | None,
    output_format: Literal["png", "json"],
    label: str | None,
) -> SampleSetResponse | Response:
    """/sample on one version of a model."""
    if n > settings.max_samples:
        raise HTTPException(status_code=422, detail=f"n={n} is over the limit of {settings.max_samples} samples")
    card = served.card
    label_index = resolve_label(card, label) if label is not None else None
    if seed is None:
        seed = secrets.randbelow(2**31)  # short enough to read off the page and type back
    result = await served.engine.sample(n, seed, label_index, max_draws=settings.max_sample_draws)
    label_name = card.class_names[label_index] if label_index is not None else None

    # PNG encoding is CPU work: keep it off the event loop, like decoding.
    if output_format == "png":
        png = await run_in_threadpool(_grid_png, result, card.image_shape)
        headers = {
            "X-Seed": str(seed),
            "X-Samples-Requested": str(n),
            "X-Samples-Found": str(len(result.samples)),
            "X-Samples-Drawn": str(result.drawn),
            "X-Model-Id": card.model_id,
        }
        return Response(content=png, media_type="image/png", headers=headers)
    return await run_in_threadpool(_sample_set_response, result, card, n, label_name)


def _grid_png(result: SampleSet, image_shape: tuple[int, int, int]) -> bytes:
    # (N, C, H, W) with N possibly 0 (a label filter that found nothing): the grid is then one empty tile.
    images = np.array([item.pixels for item in result.samples], dtype=np.uint8).reshape(-1, *image_shape)
    return encode_png(tile_grid(images))


def _sample_set_response(result: SampleSet, card: ModelCard, requested: int, label: str | None) -> SampleSetResponse:
    samples = []
    for item in result.samples:
        index = int(item.prediction.probabilities.argmax())
        samples.append(
            SampleItem(
                png_base64=base64.b64encode(encode_png(item.pixels)).decode("ascii"),
                label=card.class_names[index],
                index=index,
                confidence=float(item.prediction.probabilities[index]),
                realness=item.prediction.realness,
            )
        )
    return SampleSetResponse(
        seed=result.seed,
        requested=requested,
        found=len(samples),
        drawn=result.drawn,
        label=label,
        model_id=card.model_id,
        samples=samples,
    )
