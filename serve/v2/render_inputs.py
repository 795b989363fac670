"""Inputs and annotations in Clarifai's shapes, both ways: the request bodies (lenient, bounded) and what
they become for the services (import records, labels), and the rendering of stored inputs, annotations and
per-input import outcomes.

Concept values follow Clarifai: ``value > 0`` is a positive label, ``value == 0`` a negative one (the
official client sends ``0.0`` for a concept whose value was not set); an absent value is 1.0. A concept is
named by ``id``, else by ``name``.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Callable

from pydantic import Field

from deeptrain.errors import InvalidInput
from deeptrain.formats import ImportRecord, Region, Rejection
from deeptrain.services.annotations import ConceptLabel
from deeptrain.wire import codes
from serve.v2.paging import native, timestamp
from serve.v2.routing import Lenient

MAX_INPUTS = 128  # PostInputs
MAX_ITEMS = 128  # other lists in a body
MAX_LABELS = 256  # concepts or regions of one input
MAX_METADATA_BYTES = 64 * 1024  # one input's metadata, as JSON
INPUT_INVALID_URL = 30106
INPUT_SUCCESS = {"code": codes.INPUT_DOWNLOAD_SUCCESS, "description": "Download complete"}
ANNOTATION_SUCCESS = {"code": codes.ANNOTATION_SUCCESS, "description": "Annotation success"}
MIME = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "bmp": "image/bmp", "gif": "image/gif",
        "tiff": "image/tiff"}


# --- request bodies -----------------------------------------------------------------------------------------

class ConceptIn(Lenient):
    id: str | None = Field(None, max_length=256)
    name: str | None = Field(None, max_length=256)
    value: float = 1.0


class BoundingBoxIn(Lenient):  # the client leaves out a 0.0 edge
    top_row: float = 0.0
    left_col: float = 0.0
    bottom_row: float = 0.0
    right_col: float = 0.0


class RegionInfoIn(Lenient):
    bounding_box: BoundingBoxIn | None = None


class RegionDataIn(Lenient):
    concepts: list[ConceptIn] = Field(default_factory=list, max_length=MAX_LABELS)


class RegionIn(Lenient):
    region_info: RegionInfoIn | None = None
    data: RegionDataIn | None = None


class ImageIn(Lenient):
    base64: str | None = None  # bounded by the request's byte limit; checked against the image limit
    url: str | None = Field(None, max_length=8192)


class DataIn(Lenient):
    image: ImageIn | None = None
    concepts: list[ConceptIn] = Field(default_factory=list, max_length=MAX_LABELS)
    regions: list[RegionIn] = Field(default_factory=list, max_length=MAX_LABELS)
    metadata: dict[str, Any] | None = None


class InputIn(Lenient):
    id: str | None = Field(None, max_length=256)
    data: DataIn | None = None
    split: str | None = Field(None, max_length=32)  # deeptrain extension: train, validation or test


class PostInputsBody(Lenient):
    inputs: list[InputIn] = Field(..., min_length=1, max_length=MAX_INPUTS)
    update_labels: bool = False  # deeptrain extension: a duplicate's labels replace the stored ones


class IdsBody(Lenient):
    ids: list[str] = Field(..., min_length=1, max_length=MAX_ITEMS)


class PatchInputsBody(Lenient):
    inputs: list[InputIn] = Field(..., min_length=1, max_length=MAX_ITEMS)
    action: str = Field("merge", max_length=16)


class AnnotationIn(Lenient):
    id: str | None = Field(None, max_length=64)
    input_id: str | None = Field(None, max_length=256)
    data: DataIn | None = None


class PostAnnotationsBody(Lenient):
    annotations: list[AnnotationIn] = Field(..., min_length=1, max_length=MAX_ITEMS)


class PatchAnnotationsBody(Lenient):
    annotations: list[AnnotationIn] = Field(..., min_length=1, max_length=MAX_ITEMS)
    action: str = Field("merge", max_length=16)


class DeleteAnnotationsBody(Lenient):
    ids: list[str] = Field(default_factory=list, max_length=MAX_ITEMS)
    input_ids: list[str] = Field(default_factory=list, max_length=MAX_ITEMS)


# --- requests -> service arguments --------------------------------------------------------------------------

def concept_label(concept: ConceptIn) -> ConceptLabel:
    named = concept.id or concept.name
    if not named:
        raise InvalidInput("a concept needs an id or a name")
    return ConceptLabel(named, concept.name if concept.id else None, concept.value > 0)


def labels(concepts: list[ConceptIn]) -> tuple[ConceptLabel, ...]:
    return tuple(concept_label(c) for c in concepts)


def box_of(region: RegionIn) -> tuple[float, float, float, float]:
    bb = region.region_info.bounding_box if region.region_info is not None else None
    if bb is None:
        raise InvalidInput("a region needs region_info.bounding_box (top_row, left_col, bottom_row, right_col)")
    return (bb.top_row, bb.left_col, bb.bottom_row, bb.right_col)


def region_labels(region: RegionIn) -> tuple[ConceptLabel, ...]:
    return labels(region.data.concepts) if region.data is not None else ()


def _base64_reader(text: str) -> Callable[[int], bytes]:
    def read(max_bytes: int) -> bytes:
        if len(text) > (max_bytes + 2) // 3 * 4 + 8:
            raise InvalidInput(f"image is over the {max_bytes:,}-byte upload limit")
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput("image.base64 is not valid base64") from None
    return read


def import_item(index: int, item: InputIn) -> tuple[ImportRecord | Rejection, int | None]:
    """The import record of ``inputs[index]``, or its rejection with the status code it gets (None: by reason)."""
    source = f"inputs[{index}]" + (f" ({item.id})" if item.id else "")
    data = item.data or DataIn()
    image = data.image or ImageIn()
    if image.url and not image.base64:
        return Rejection(source, "image.url is not supported: deeptrain downloads nothing; send the image's "
                                 "bytes in image.base64"), INPUT_INVALID_URL
    if not image.base64:
        return Rejection(source, "no image: send the image's bytes in data.image.base64"), None
    try:
        if data.metadata is not None and len(json.dumps(data.metadata)) > MAX_METADATA_BYTES:
            raise InvalidInput(f"metadata is over {MAX_METADATA_BYTES:,} bytes as JSON")
        whole = labels(data.concepts)
        regions = []
        for region in data.regions:
            box, concepts = box_of(region), region_labels(region)
            if not concepts:
                raise InvalidInput("a region has no concept")
            for lab in concepts:
                if not lab.positive:
                    raise InvalidInput(f"the concept {lab.concept!r} of a region has value 0 (a negative): a box's "
                                       "concept must be positive (value 1)")
                regions.append(Region(lab.concept, *box))
    except InvalidInput as exc:
        return Rejection(source, str(exc)), None
    return ImportRecord(
        source=source, read_bytes=_base64_reader(image.base64),
        concepts=tuple(dict.fromkeys(lab.concept for lab in whole if lab.positive)),
        negatives=tuple(dict.fromkeys(lab.concept for lab in whole if not lab.positive)),
        regions=tuple(regions), split=item.split, input_id=item.id, metadata=data.metadata,
    ), None


def named_concepts(inputs: list[InputIn]) -> list[ConceptLabel]:
    """The concepts of a request named by id with a display name (created with it before an import)."""
    out = []
    for item in inputs:
        data = item.data or DataIn()
        for concept in [*data.concepts, *(c for r in data.regions if r.data for c in r.data.concepts)]:
            if concept.id and concept.name:
                out.append(ConceptLabel(concept.id, concept.name))
    return out


def rejection_code(reason: str) -> int:
    unsupported = ("not an image", "unsupported image format")
    return codes.INPUT_UNSUPPORTED_FORMAT if reason.startswith(unsupported) else codes.INPUT_INVALID_ARGUMENT


# --- rendering ----------------------------------------------------------------------------------------------

def _concept(annotation: dict[str, Any]) -> dict[str, Any]:
    return {"id": annotation["concept_id"], "name": annotation["concept_name"],
            "value": 1.0 if annotation["positive"] else 0.0}


def _box(box: list[float]) -> dict[str, Any]:
    return {"bounding_box": dict(zip(("top_row", "left_col", "bottom_row", "right_col"), map(float, box)))}


def render_region(annotation: dict[str, Any]) -> dict[str, Any]:
    return {"id": str(annotation["id"]), "region_info": _box(annotation["box"]), "value": 1.0,
            "data": {"concepts": [_concept(annotation)]}}


def image_route(app_id: str, input_id: str) -> str:
    return f"/v2/users/me/apps/{app_id}/inputs/{input_id}/image"


def input_data(view: dict[str, Any], app_id: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """An input's ``data``: its image (a deeptrain route to its bytes), labels, boxes and metadata (the user's,
    with ``deeptrain``: ``extra`` or the native record)."""
    notes = view.get("annotations", [])
    return {
        "image": {"url": image_route(app_id, view["id"]),
                  "image_info": {"width": view["width"], "height": view["height"], "format": view["format"]}},
        "concepts": [_concept(a) for a in notes if a["box"] is None],
        "regions": [render_region(a) for a in notes if a["box"] is not None],
        "metadata": {**(view["metadata"] or {}), **(extra or native(view))},
    }


def render_input(view: dict[str, Any], app_id: str) -> dict[str, Any]:
    """A stored input (``services.inputs.input_views``) as Clarifai's ``Input``."""
    return {"id": view["id"], "created_at": timestamp(view["created_at"]), "status": INPUT_SUCCESS,
            "data": input_data(view, app_id)}


def render_outcome(outcome: dict[str, Any], item: InputIn, view: dict[str, Any] | None, app_id: str,
                   code: int | None = None) -> dict[str, Any]:
    """What became of one input of a PostInputs request; ``data.metadata.deeptrain`` is the outcome (with the
    stored input's native record as ``input``)."""
    kind = outcome["outcome"]
    if kind == "rejected":
        status = {"code": code or rejection_code(outcome["reason"] or ""), "description": outcome["reason"] or ""}
        return {"id": item.id or "", "status": status, "data": {"metadata": native(outcome)}}
    status = INPUT_SUCCESS if kind == "imported" else {
        "code": codes.INPUT_DUPLICATE, "description": f"input already exists as {outcome['existing_id']!r}"}
    rendered = {"id": outcome["input_id"] or "", "status": status}
    if view is None:  # deleted meanwhile
        return {**rendered, "data": {"metadata": native(outcome)}}
    record = {k: v for k, v in view.items() if k != "annotations"}
    return {**rendered, "created_at": timestamp(view["created_at"]),
            "data": input_data(view, app_id, native({**outcome, "input": record}))}


def render_annotation(annotation: dict[str, Any]) -> dict[str, Any]:
    """One label (``services.annotations``) as Clarifai's ``Annotation``."""
    data: dict[str, Any] = ({"concepts": [_concept(annotation)]} if annotation["box"] is None
                            else {"regions": [render_region(annotation)]})
    return {"id": str(annotation["id"]), "input_id": annotation["input_id"], "status": ANNOTATION_SUCCESS,
            "input_level": annotation["box"] is None, "data": {**data, "metadata": native(annotation)}}
