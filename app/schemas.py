"""Response models: the JSON contract of docs/design.md (HTTP contract), as OpenAPI shows it at /docs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorResponse(BaseModel):
    detail: Any = Field(description="what went wrong: a message, or FastAPI's list of validation errors")


class ClassScore(BaseModel):
    label: str
    index: int
    probability: float


class Classification(BaseModel):
    label: str = Field(description="the most probable class")
    index: int = Field(description="its index in the model's class list")
    confidence: float = Field(description="its probability p(y=label | x, real)")
    probabilities: dict[str, float] = Field(description="p(y=k | x, real) for all K classes, by class name")
    top: list[ClassScore] = Field(description="the top_k classes, most probable first")
    realness: float = Field(
        description="D(x) = p(real | x) from the K+1 discriminator: low for images unlike the training data"
    )
    inverted: bool = Field(description="whether the image was inverted to match the training background")
    model_id: str


class BatchItem(BaseModel):
    index: int = Field(description="position of the file in the request")
    filename: str | None
    status_code: int = Field(description="200, or the code this file alone would have got")
    result: Classification | None = None
    detail: str | None = Field(default=None, description="why the file was refused, when status_code != 200")


class BatchClassification(BaseModel):
    model_id: str
    results: list[BatchItem]


class SampleItem(BaseModel):
    png_base64: str = Field(description="the generated image, a base64 PNG at the model's resolution")
    label: str = Field(description="the discriminator's class for it")
    index: int
    confidence: float
    realness: float


class SampleSetResponse(BaseModel):
    seed: int = Field(description="pass it back as ?seed= to get the same samples")
    requested: int
    found: int = Field(description="samples returned: fewer than requested when a label filter ran out of draws")
    drawn: int = Field(description="latent vectors drawn to find them")
    label: str | None = Field(description="the class filter, if any")
    model_id: str
    samples: list[SampleItem]


class HealthResponse(BaseModel):
    status: str


class ReadyResponse(BaseModel):
    status: str
    model_id: str
    model_dir: str


class ModelEntry(BaseModel):
    name: str = Field(description="the folder name; /models/{name}/classify and /models/{name}/sample reach it")
    default: bool = Field(description="whether the plain routes (/classify, /sample) serve this model")
    model_dir: str
    status: Literal["ready", "loading", "error"] = Field(
        description="ready: serving; loading: not loaded yet; error: its directory failed to load (see error)"
    )
    model_id: str | None = Field(description="the version serving (first 12 hex digits of the weights' SHA-256)")
    classes: list[str] | None
    accuracy: float | None = Field(description="test accuracy from the model card, when it was measured")
    weights_bytes: int | None = Field(description="memory held by the networks' tensors (both networks)")
    loaded_at: float | None = Field(description="when the serving version was loaded (Unix time)")
    reloads: int = Field(description="replacements swapped in by this worker")
    refusals: int = Field(description="replacements refused by this worker (the older version kept serving)")
    error: str | None = Field(
        description="why no version serves (status error), or why the last replacement was refused"
    )


class ModelList(BaseModel):
    default: str = Field(description="the name of the model the plain routes serve")
    models: list[ModelEntry]


class ReloadResponse(BaseModel):
    name: str
    outcome: Literal["loaded", "swapped", "changed"] = Field(
        description="swapped: the directory's model now serves; changed: its files changed while loading, and the "
        "next look at the disk loads them"
    )
    model_id: str | None = Field(description="the version serving now")
    previous_model_id: str | None


class Suggestion(BaseModel):
    rank: int = Field(description="1 = label this one first")
    index: int = Field(description="position of the file in the request")
    filename: str | None
    label: str = Field(description="the class the model predicts for it")
    class_index: int = Field(description="that class's index in the model's class list")
    confidence: float = Field(description="its probability p(y=label | x, real)")
    realness: float = Field(description="D(x) = p(real | x)")
    score: float = Field(description="1 - (p_(1) - p_(2)): 1 when the model cannot choose between its two best classes")


class NotSuggested(BaseModel):
    index: int = Field(description="position of the file in the request")
    filename: str | None
    reason: Literal["unreadable", "junk", "near-duplicate"] = Field(
        description="unreadable: refused as /classify/batch refuses it (status_code, detail); junk: realness below "
        "the floor; near-duplicate: looks like a suggested image (duplicate_of)"
    )
    status_code: int | None = Field(default=None, description="for an unreadable file: its code if sent alone")
    detail: str | None = None
    duplicate_of: int | None = Field(default=None, description="the request index of the suggestion it duplicates")


class SuggestionList(BaseModel):
    model_id: str
    suggestions: list[Suggestion] = Field(description="the images to label, the most useful first")
    not_suggested: list[NotSuggested] = Field(
        description="files left out for a reason; images that were merely ranked below `count` are not listed"
    )
