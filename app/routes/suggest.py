"""POST /suggest: which of several images a label would teach the serving model most (docs/design.md, What to
label next). The ranking is ``model.suggest.rank_for_labelling``, the rule ``sgan-suggest`` uses; the uploads
go through /classify/batch's parsing, limits and errors."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Query, Request

from app.deps import DefaultModelDep, MetricsDep, SettingsDep, require_api_key
from app.imaging import ImageError, PreparedImage
from app.metrics import Metrics
from app.registry import ServedModel
from app.routes.classify import _BATCH_BODY, ERRORS, Invert, prepare_batch, read_batch_uploads
from app.schemas import NotSuggested, Suggestion, SuggestionList
from app.settings import Settings
from model.imaging import InvertMode
from model.suggest import ImageScores, Ranking, rank_for_labelling

router = APIRouter(tags=["labelling"], dependencies=[Depends(require_api_key)])

# A bound for the query parameter alone: a request never holds more than SGAN_MAX_BATCH_FILES images.
MAX_COUNT = 1024
Count = Annotated[
    int | None,
    Query(ge=1, le=MAX_COUNT, description="how many images to suggest (default: every usable one, ranked)"),
]


@router.post(
    "/suggest",
    response_model=SuggestionList,
    responses=ERRORS,
    openapi_extra=_BATCH_BODY,
    summary="Which images to label next",
)
async def suggest(
    request: Request,
    served: DefaultModelDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    count: Count = None,
    invert: Invert = "auto",
) -> SuggestionList:
    """Several unlabelled images in the multipart field `files` (repeated, as for /classify/batch), ranked by
    what a label would teach the model: the ones it cannot place between two classes first; junk (realness
    below 0.5) and near-duplicates of a suggestion are left out and say why."""
    return await suggest_on(request, served, settings, metrics, count, invert)


async def suggest_on(
    request: Request,
    served: ServedModel,
    settings: Settings,
    metrics: Metrics,
    count: int | None,
    invert: InvertMode,
) -> SuggestionList:
    """/suggest on one version of a model."""
    uploads = await read_batch_uploads(request, settings.max_batch_files)
    prepared = await prepare_batch(uploads, served.card, settings.max_pixels, invert)
    filenames = [upload.filename for upload in uploads]
    left_out: list[NotSuggested] = []
    for index, item in enumerate(prepared):
        if isinstance(item, ImageError):
            metrics.rejected_images.labels(status=str(item.status_code)).inc()
            left_out.append(
                NotSuggested(
                    index=index,
                    filename=filenames[index],
                    reason="unreadable",
                    status_code=item.status_code,
                    detail=item.detail,
                )
            )
    readable = [index for index, item in enumerate(prepared) if isinstance(item, PreparedImage)]
    suggestions: list[Suggestion] = []
    if readable:
        pixels = np.stack([item.pixels for item in prepared if isinstance(item, PreparedImage)])  # (B, C, H, W)
        scores = await served.engine.score_for_labelling(pixels)
        ranking = rank_for_labelling(scores, count or len(readable))
        suggestions = _suggestions(ranking, scores, readable, filenames, served.card.class_names)
        left_out += _left_out(ranking, readable, filenames)
    return SuggestionList(
        model_id=served.card.model_id,
        suggestions=suggestions,
        not_suggested=sorted(left_out, key=lambda item: item.index),
    )


def _suggestions(
    ranking: Ranking, scores: ImageScores, readable: list[int], filenames: list[str | None], class_names: list[str]
) -> list[Suggestion]:
    """The picks, in rank order; ``readable`` maps a scored image to its position in the request."""
    items = []
    for rank, position in enumerate(ranking.picks, start=1):
        probabilities = scores.probabilities[position]
        predicted = int(probabilities.argmax())
        items.append(
            Suggestion(
                rank=rank,
                index=readable[position],
                filename=filenames[readable[position]],
                label=class_names[predicted],
                class_index=predicted,
                confidence=float(probabilities[predicted]),
                realness=float(scores.realness[position]),
                score=float(ranking.scores[position]),
            )
        )
    return items


def _left_out(ranking: Ranking, readable: list[int], filenames: list[str | None]) -> list[NotSuggested]:
    """Junk and near-duplicates, each with its reason."""
    items = []
    for position, index in enumerate(readable):
        if ranking.junk[position]:
            items.append(NotSuggested(index=index, filename=filenames[index], reason="junk"))
        elif ranking.duplicate_of[position] >= 0:
            original = readable[int(ranking.duplicate_of[position])]
            items.append(
                NotSuggested(index=index, filename=filenames[index], reason="near-duplicate", duplicate_of=original)
            )
    return items
