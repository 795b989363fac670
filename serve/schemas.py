"""Request and response bodies of the HTTP API, in Clarifai's shapes where they fit."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_INPUTS_PER_REQUEST = 32


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageData(_Strict):
    """Exactly one of: the bytes (base64), an object URL inside the service's storage, a stored input's id."""

    base64: str | None = None
    url: str | None = None
    input_id: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "ImageData":
        given = [k for k in ("base64", "url", "input_id") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of base64, url, input_id (got {', '.join(given) or 'none'})")
        return self


class InputData(_Strict):
    image: ImageData


class Input(_Strict):
    id: str | None = Field(None, description="echoed back on the output")
    data: InputData


class OutputConfig(_Strict):
    max_concepts: int | None = Field(None, ge=1, description="classification: return only the top k concepts")
    min_value: float | None = Field(None, ge=0, le=1, description=(
        "detection: score threshold for returned regions (default: the version's detection_score_threshold); "
        "classification: drop concepts scoring below it"))


class OutputInfo(_Strict):
    output_config: OutputConfig = OutputConfig()


class ModelOptions(_Strict):
    output_info: OutputInfo = OutputInfo()


class PostOutputsRequest(_Strict):
    inputs: list[Input] = Field(..., min_length=1, max_length=MAX_INPUTS_PER_REQUEST)
    model: ModelOptions = ModelOptions()


class Status(BaseModel):
    code: int | str
    description: str


class Output(BaseModel):
    id: str
    input: dict[str, Any]
    model: dict[str, Any]
    data: dict[str, Any]


class PostOutputsResponse(BaseModel):
    status: Status
    outputs: list[Output]


class ErrorResponse(BaseModel):
    status: Status
