"""Request and response bodies of the inference API (outputs, workflow results, searches), in Clarifai's shapes.

Requests are lenient (``extra="ignore"``: the official client sends ``user_app_id``, ``model_id`` and more)
and bounded (inputs per request, id and URL lengths, ``max_concepts``, ``select_concepts``). Response models
document the answers (``responses=``) without filtering them (``extra="allow"``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deeptrain.search.faiss_index import MAX_TOP_K

MAX_INPUTS_PER_REQUEST = 128  # Clarifai's limit for PostModelOutputs: run as batched forwards of MAX_BATCH
MAX_WORKFLOW_INPUTS = 32  # a workflow's steps multiply its work (crops: Settings.max_workflow_crops)
MAX_ID_CHARS = 256  # an echoed input id, a stored input id, a concept id
MAX_CONCEPTS = 1000  # output_config.max_concepts
MAX_URL_CHARS = 2048


class _Strict(BaseModel):
    """A request body part: unknown fields ignored (Clarifai's clients send more than deeptrain reads)."""

    model_config = ConfigDict(extra="ignore")


class _Open(BaseModel):
    """A documented answer: fields beyond the documented ones pass through."""

    model_config = ConfigDict(extra="allow")


class ImageData(_Strict):
    """Exactly one of: the bytes (base64), an object URL inside the service's storage, a stored input's id."""

    base64: str | None = None
    url: str | None = Field(None, max_length=MAX_URL_CHARS, description="the storage URL of one of this app's inputs")
    input_id: str | None = Field(None, max_length=MAX_ID_CHARS)

    @model_validator(mode="after")
    def _exactly_one(self) -> "ImageData":
        given = [k for k in ("base64", "url", "input_id") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of base64, url, input_id (got {', '.join(given) or 'none'})")
        return self


class InputData(_Strict):
    image: ImageData


class Input(_Strict):
    id: str | None = Field(None, max_length=MAX_ID_CHARS, description="echoed back on the output")
    data: InputData


class ConceptRef(_Strict):
    """A concept named by ``id`` (or ``name`` when it has no id); its ``value`` is ignored here."""

    id: str | None = Field(None, max_length=MAX_ID_CHARS)
    name: str | None = Field(None, max_length=MAX_ID_CHARS)

    @property
    def key(self) -> str | None:
        return self.id or self.name


class OutputConfig(_Strict):
    max_concepts: int | None = Field(None, ge=1, le=MAX_CONCEPTS,
                                     description="classification: return only the top k concepts")
    min_value: float | None = Field(None, ge=0, le=1, description=(
        "detection: score threshold for returned regions (default: the version's detection_score_threshold); "
        "classification: drop concepts scoring below it"))
    select_concepts: list[ConceptRef] = Field([], max_length=MAX_CONCEPTS, description=(
        "only these concepts (by id, or name), whatever their rank; their value is ignored"))

    @property
    def selected(self) -> frozenset[str] | None:
        keys = {c.key for c in self.select_concepts if c.key}
        return frozenset(keys) if keys else None


class OutputInfo(_Strict):
    output_config: OutputConfig = OutputConfig()


class ModelOptions(_Strict):
    output_info: OutputInfo = OutputInfo()


class PostOutputsRequest(_Strict):
    inputs: list[Input] = Field(..., min_length=1, max_length=MAX_INPUTS_PER_REQUEST)
    model: ModelOptions = ModelOptions()


class Status(_Open):
    code: int
    description: str


class Output(_Open):
    id: str
    input: dict[str, Any]
    model: dict[str, Any]
    data: dict[str, Any]


class PostOutputsResponse(_Open):
    status: Status
    outputs: list[Output]


class ErrorResponse(_Open):
    status: Status


# --- visual search -------------------------------------------------------------------



class QueryImage(_Strict):
    """Exactly one of: the bytes (base64), an object URL inside the service's storage."""

    base64: str | None = None
    url: str | None = Field(None, max_length=MAX_URL_CHARS, description="the storage URL of one of this app's inputs")

    @model_validator(mode="after")
    def _exactly_one(self) -> "QueryImage":
        given = [k for k in ("base64", "url") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of base64, url (got {', '.join(given) or 'none'})")
        return self


class SearchQuery(_Strict):
    """Search with an image (embedded by the app's search-index version) or a stored input (excluded from hits)."""

    image: QueryImage | None = None
    input_id: str | None = Field(None, max_length=MAX_ID_CHARS)

    @model_validator(mode="after")
    def _exactly_one(self) -> "SearchQuery":
        if (self.image is None) == (self.input_id is None):
            raise ValueError("give exactly one of image, input_id")
        return self


class PostSearchesRequest(_Strict):
    query: SearchQuery
    concept: str | None = Field(None, max_length=MAX_ID_CHARS, description="only inputs labelled with this concept id")
    top_k: int = Field(10, ge=1, le=MAX_TOP_K, description="number of hits")


class HitConcept(_Open):
    id: str
    value: float = 1.0


class SearchHit(_Open):
    input: dict[str, Any] = Field(..., description='{"id": input id}')
    score: float = Field(..., description="cosine similarity of the embeddings, in [-1, 1]")
    concepts: list[HitConcept]


class PostSearchesResponse(_Open):
    status: Status
    model: dict[str, Any] = Field(..., description="the embedding model version of the app's search index")
    hits: list[SearchHit]


# --- workflows ---------------------------------------------------------------------


class PostWorkflowResultsRequest(_Strict):
    inputs: list[Input] = Field(..., min_length=1, max_length=MAX_WORKFLOW_INPUTS)
    output_config: OutputConfig = OutputConfig()


class WorkflowOutput(_Open):
    id: str
    model: dict[str, Any]
    data: dict[str, Any]


class WorkflowResult(_Open):
    status: Status
    input: dict[str, Any]
    outputs: list[WorkflowOutput] = Field(..., description=(
        "one output per step, in order; after a detect step every output's data.regions lists the detector's "
        "regions in the same order (same region ids), each with that step's concepts or embeddings of its crop"))


class PostWorkflowResultsResponse(_Open):
    status: Status
    workflow: dict[str, Any]
    results: list[WorkflowResult]


# --- Clarifai's PostInputsSearches -----------------------------------------------------

MAX_SEARCH_TERMS = 8


class SearchData(_Strict):
    image: QueryImage | None = None
    concepts: list[ConceptRef] = Field([], max_length=MAX_SEARCH_TERMS)


class SearchAnnotation(_Strict):
    input_id: str | None = Field(None, max_length=MAX_ID_CHARS)
    data: SearchData = SearchData()


class SearchTerm(_Strict):
    """A rank (what to look like: an image or a stored input) or a filter (``data.concepts``: labelled with)."""

    annotation: SearchAnnotation = SearchAnnotation()


class ClarifaiQuery(_Strict):
    ranks: list[SearchTerm] = Field([], max_length=MAX_SEARCH_TERMS)
    filters: list[SearchTerm] = Field([], max_length=MAX_SEARCH_TERMS)


class Search(_Strict):
    query: ClarifaiQuery


class Pagination(_Strict):
    page: int = Field(1, ge=1, le=MAX_TOP_K)
    per_page: int = Field(20, ge=1, le=MAX_TOP_K)


class PostInputsSearchesRequest(_Strict):
    """One search: one rank (``annotation.data.image`` or ``annotation.input_id``), at most one concept filter;
    ``pagination.page * per_page`` at most 1000."""

    searches: list[Search] = Field(..., min_length=1, max_length=1)
    pagination: Pagination = Pagination()
