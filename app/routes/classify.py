"""POST /classify and POST /classify/batch."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.deps import DefaultModelDep, MetricsDep, SettingsDep, require_api_key
from app.engine import Prediction
from app.imaging import ImageError, PreparedImage, prepare_upload
from app.metrics import Metrics
from app.registry import ServedModel
from app.schemas import BatchClassification, BatchItem, Classification, ClassScore, ErrorResponse
from app.settings import Settings
from model import ModelCard
from model.imaging import InvertMode

router = APIRouter(tags=["inference"], dependencies=[Depends(require_api_key)])

TopK = Annotated[int, Query(ge=1, description="how many classes to list in `top` (at most the number of classes)")]
Invert = Annotated[
    InvertMode,
    Query(
        description="auto: invert when the image's background polarity differs from the training images'; "
        "true/false: always/never invert"
    ),
]

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "empty, truncated or undecodable image"},
    401: {"model": ErrorResponse, "description": "missing or wrong X-API-Key (when the server requires one)"},
    408: {"model": ErrorResponse, "description": "the request body was not complete in time (SGAN_BODY_TIMEOUT_S)"},
    413: {"model": ErrorResponse, "description": "body or pixel count over the limit"},
    415: {"model": ErrorResponse, "description": "not multipart/form-data or image/*, or an unsupported format"},
    422: {"model": ErrorResponse, "description": "bad query parameters or form fields"},
    503: {"model": ErrorResponse, "description": "model not ready, or the inference queue is full"},
}

_IMAGE_SCHEMA = {"type": "string", "format": "binary"}
_SINGLE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": _IMAGE_SCHEMA}, "required": ["file"]}
            },
            "image/*": {"schema": _IMAGE_SCHEMA},
        },
    }
}
_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"files": {"type": "array", "items": _IMAGE_SCHEMA}},
                    "required": ["files"],
                }
            }
        },
    }
}


@dataclass(frozen=True)
class Upload:
    data: bytes
    content_type: str | None
    filename: str | None


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _parse_form(request: Request, max_files: int, too_many_status: int) -> FormData:
    try:
        return await request.form(max_files=max_files, max_fields=16)
    except StarletteHTTPException as exc:
        if exc.status_code in (408, 413):  # the body limits, raised while the parser was reading
            raise
        detail = str(exc.detail)
        # Starlette reports every multipart problem as a 400; too many files is a limit, not a syntax error.
        status = too_many_status if detail.startswith("Too many files") else 400
        raise HTTPException(status_code=status, detail=f"bad multipart body: {detail}") from None


async def _read_part(part: UploadFile) -> Upload:
    return Upload(await part.read(), part.content_type, part.filename)


def _form_files(form: FormData, field: str) -> list[UploadFile]:
    values = form.getlist(field)
    if any(not isinstance(value, UploadFile) for value in values):
        raise HTTPException(status_code=422, detail=f"multipart field {field!r} must be a file upload, not text")
    return [value for value in values if isinstance(value, UploadFile)]


async def read_single_upload(request: Request) -> Upload:
    """The image of a /classify request: multipart field ``file``, or the raw body of an image/* request."""
    media_type = _media_type(request)
    if media_type.startswith("image/"):
        return Upload(await request.body(), media_type, None)
    if media_type != "multipart/form-data":
        raise HTTPException(
            status_code=415,
            detail="send the image as multipart/form-data (field 'file') or as a raw body with an image/* "
            f"content type, not {media_type or 'no content type'}",
        )
    # One more than allowed, so that two files get our clear 422 below instead of the parser's error.
    form = await _parse_form(request, max_files=2, too_many_status=422)
    try:
        files = _form_files(form, "file")
        if not files:
            raise HTTPException(status_code=422, detail="multipart field 'file' is missing")
        if len(files) > 1:
            raise HTTPException(status_code=422, detail="send one file to /classify; use /classify/batch for more")
        return await _read_part(files[0])
    finally:
        await form.close()  # spooled temporary files


async def read_batch_uploads(request: Request, max_files: int) -> list[Upload]:
    """The images of a batch request (/classify/batch, /suggest): the repeated multipart field ``files``, at
    most ``max_files`` of them (413 beyond)."""
    if _media_type(request) != "multipart/form-data":
        raise HTTPException(status_code=415, detail="send the images as multipart/form-data, field 'files'")
    form = await _parse_form(request, max_files=max_files, too_many_status=413)
    try:
        parts = _form_files(form, "files")
        if not parts:
            raise HTTPException(status_code=422, detail="multipart field 'files' is missing (one or more images)")
        return [await _read_part(part) for part in parts]
    finally:
        await form.close()


async def prepare_batch(
    uploads: list[Upload], card: ModelCard, max_pixels: int, invert: InvertMode
) -> list[PreparedImage | ImageError]:
    """Each upload decoded for the model, or the ``ImageError`` it would have got alone, in request order."""

    async def prepare(upload: Upload) -> PreparedImage | ImageError:
        try:
            return await prepare_upload(upload.data, card, max_pixels, invert, upload.content_type)
        except ImageError as exc:
            return exc

    return list(await asyncio.gather(*(prepare(upload) for upload in uploads)))


def build_classification(prediction: Prediction, card: ModelCard, top_k: int, inverted: bool) -> Classification:
    probabilities = prediction.probabilities
    order = np.argsort(-probabilities, kind="stable")  # most probable first; ties keep class order
    best = int(order[0])
    names = card.class_names
    return Classification(
        label=names[best],
        index=best,
        confidence=float(probabilities[best]),
        probabilities={name: float(p) for name, p in zip(names, probabilities, strict=True)},
        top=[ClassScore(label=names[i], index=int(i), probability=float(probabilities[i])) for i in order[:top_k]],
        realness=prediction.realness,
        inverted=inverted,
        model_id=card.model_id,
    )


@router.post(
    "/classify",
    response_model=Classification,
    responses=ERRORS,
    openapi_extra=_SINGLE_BODY,
    summary="Classify one image",
)
async def classify(
    request: Request,
    served: DefaultModelDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    top_k: TopK = 5,
    invert: Invert = "auto",
) -> Classification:
    """Class probabilities and the realness score for one image (multipart field `file`, or a raw
    `image/*` body). PNG, JPEG, WebP, GIF and BMP are accepted, of any size."""
    return await classify_one(request, served, settings, metrics, top_k, invert)


async def classify_one(
    request: Request, served: ServedModel, settings: Settings, metrics: Metrics, top_k: int, invert: InvertMode
) -> Classification:
    """/classify on one version of a model: its card decodes the image, its engine answers, its id is reported."""
    upload = await read_single_upload(request)
    card = served.card
    try:
        prepared = await prepare_upload(upload.data, card, settings.max_pixels, invert, upload.content_type)
    except ImageError as exc:
        metrics.rejected_images.labels(status=str(exc.status_code)).inc()
        raise
    prediction = await served.engine.classify(prepared.pixels)
    return build_classification(prediction, card, top_k, prepared.inverted)


@router.post(
    "/classify/batch",
    response_model=BatchClassification,
    responses=ERRORS,
    openapi_extra=_BATCH_BODY,
    summary="Classify several images",
)
async def classify_batch(
    request: Request,
    served: DefaultModelDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    top_k: TopK = 5,
    invert: Invert = "auto",
) -> BatchClassification:
    """Several images in the multipart field `files` (repeated), answered in order. A file that cannot be
    classified gets its own status code and detail; the others are still answered."""
    return await classify_several(request, served, settings, metrics, top_k, invert)


async def classify_several(
    request: Request, served: ServedModel, settings: Settings, metrics: Metrics, top_k: int, invert: InvertMode
) -> BatchClassification:
    """/classify/batch on one version of a model."""
    card, engine = served.card, served.engine
    uploads = await read_batch_uploads(request, settings.max_batch_files)
    prepared = await prepare_batch(uploads, card, settings.max_pixels, invert)
    good = [item for item in prepared if isinstance(item, PreparedImage)]
    predictions = iter(await engine.classify_many([item.pixels for item in good]) if good else [])

    results: list[BatchItem] = []
    for index, (upload, item) in enumerate(zip(uploads, prepared, strict=True)):
        if isinstance(item, ImageError):
            metrics.rejected_images.labels(status=str(item.status_code)).inc()
            results.append(
                BatchItem(index=index, filename=upload.filename, status_code=item.status_code, detail=item.detail)
            )
        else:
            classification = build_classification(next(predictions), card, top_k, item.inverted)
            results.append(BatchItem(index=index, filename=upload.filename, status_code=200, result=classification))
    return BatchClassification(model_id=card.model_id, results=results)
