"""GET /model/confusion.png: the loaded model's confusion matrix on its test split, drawn from its card, for the
web page's Model panel. The rest of the panel comes from GET /info."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response

from app.confusion import confusion_png, matrix_of
from app.deps import EngineDep
from app.schemas import ErrorResponse
from model import ModelCard

router = APIRouter(tags=["web"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "a PNG heat map: rows true class, columns predicted", "content": {"image/png": {}}},
    404: {"model": ErrorResponse, "description": "the model card holds no confusion matrix"},
    503: {"model": ErrorResponse, "description": "the model is not loaded, and why"},
}


def rendered_confusion(request: Request, card: ModelCard) -> bytes | None:
    """Drawn once per model: kept on the app beside the id of the model it shows."""
    cached: tuple[str, bytes | None] | None = getattr(request.app.state, "confusion_png", None)
    if cached is None or cached[0] != card.model_id:
        matrix = matrix_of(card.metrics, len(card.class_names))
        cached = (card.model_id, None if matrix is None else confusion_png(matrix, card.class_names))
        request.app.state.confusion_png = cached
    return cached[1]


@router.get("/model/confusion.png", response_class=Response, responses=_RESPONSES, summary="Confusion matrix")
async def confusion_matrix(request: Request, engine: EngineDep) -> Response:
    """The loaded model's confusion matrix on its test split (the card's ``metrics.confusion_matrix``)."""
    png = rendered_confusion(request, engine.card)
    if png is None:
        raise HTTPException(
            status_code=404,
            detail="the model card holds no confusion matrix: the model was trained without a test split, "
            "or by a version that did not record one",
        )
    return Response(png, media_type="image/png", headers={"X-Model-Id": engine.card.model_id})
