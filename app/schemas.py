"""Response models: the JSON contract of docs/design.md (HTTP contract), as OpenAPI shows it at /docs."""

from __future__ import annotations

from typing import Any

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
