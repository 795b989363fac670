"""The typed results of ``deeptrain.sdk.Client``: one class per kind of record.

Each is a ``Result`` (``deeptrain.result_base``): a dict of the fields the service returned,
checked against the fields declared here and readable as attributes (``version.status``,
``version["status"]``); fields not declared here are kept (``extra`` fields). Times are ISO
8601 strings, as stored. ``model_dump(mode="json")`` gives plain JSON-ready data.
"""

from __future__ import annotations

from typing import Any, Optional

from deeptrain.result_base import Result, dump

Number = int | float  # a value kept as given (an int stays an int)

__all__ = [
    "App", "BoundingBox", "Concept", "ConceptScore", "DatasetSummary", "DatasetVersion", "Deleted", "DetectedRegion", "Evaluation",
    "ExportResult", "ExportedModel", "ImportResult", "IndexBuild", "Input", "Job", "JobVersion", "Key", "Model",
    "Prediction", "Region", "Rejected", "Report", "Result", "SchedulerSpec", "SearchHit", "SearchIndex",
    "Submission", "Trial", "TuneReport", "TuneRun", "Version", "Workflow", "WorkflowOutput", "WorkflowResult",
    "WorkflowStep", "dump",
]


class Deleted(Result):
    """What a delete removed: its id (and, for some kinds, what went with it)."""

    id: str
    deleted: bool


# --- apps, concepts, inputs -------------------------------------------------------------------

class App(Result):
    id: str
    name: str
    created_at: str
    num_inputs: Optional[int] = None  # listings and get_app
    num_concepts: Optional[int] = None  # get_app
    num_dataset_versions: Optional[int] = None  # get_app


class Concept(Result):
    id: str
    name: str
    num_labels: Optional[int] = None  # list_concepts
    num_boxes: Optional[int] = None  # list_concepts


class Region(Result):
    """A labelled box, as fractions of the image (0 top/left .. 1 bottom/right)."""

    concept: str
    top_row: Number
    left_col: Number
    bottom_row: Number
    right_col: Number


class Input(Result):
    id: str
    sha256: str
    width: int
    height: int
    format: str
    split: Optional[str]
    source: Optional[str]
    metadata: Optional[dict[str, Any]]
    concepts: list[str]
    negatives: list[str]
    regions: list[Region]
    created_at: str


class Rejected(Result):
    file: str
    reason: str


class ImportResult(Result):
    imported: int
    duplicates: int
    updated: int = 0  # duplicates whose labels were replaced (update_labels)
    differing_labels: int = 0  # duplicates whose stored labels differ from the import's, kept
    rejected: list[Rejected]
    seconds: Number
    images_per_s: Number


class ExportResult(Result):
    format: str
    path: str
    exported: int


# --- dataset versions ------------------------------------------------------------------------

class DatasetVersion(Result):
    """A dataset version's manifest; ``existing`` tells a snapshot that found it already there."""

    id: str
    app_id: str
    content_hash: str
    schema_version: int
    test_fraction: Number
    concepts: list[Concept]
    counts: dict[str, Any]  # inputs, labelled, splits {split: n}, concepts {id: {train, validation, test, negatives, boxes}}
    files: list[str]
    uri: str
    existing: Optional[bool] = None  # snapshot
    created_at: Optional[str] = None  # get_dataset


class DatasetSummary(Result):
    """A row of ``list_datasets``."""

    id: str
    num_inputs: int
    created_at: str
    splits: dict[str, int]
    num_concepts: int


# --- models, versions, evaluation ---------------------------------------------------------------

class Model(Result):
    id: str
    app_id: str
    task: str
    template: str
    params: dict[str, Any]
    concepts: Optional[list[str]]
    default_version: Optional[str]
    created_at: str


class Version(Result):
    """A trained (or queued, training, failed, cancelled) model version."""

    id: str
    app_id: str
    model_id: str
    status: str
    params: dict[str, Any]
    dataset_version_id: str
    concepts: list[str]
    metrics: Optional[dict[str, Any]]
    progress: Optional[dict[str, Any]]
    artifacts: str
    error: Optional[str]
    job_id: Optional[str]
    tune_run: Optional[str]
    created_at: str
    started_at: Optional[str]
    finished_at: Optional[str]


class Evaluation(Result):
    app_id: str
    model_id: str
    version_id: str
    dataset_version_id: str
    metrics: dict[str, Any]
    split: str = "test"


class Report(Result):
    """A version's report.json; ``path`` is a local folder holding it and its plots."""

    task: str
    concepts: list[str]
    metrics: Optional[dict[str, Any]]
    history: list[dict[str, Any]]
    plots: list[str]
    path: str


class ExportedModel(Result):
    """An export and its parity against the served PyTorch path on real images: classification
    ``top1_agreement``, embedding ``cosine_min``, detection ``counts_equal``/``labels_equal``/``max_box_diff``."""

    format: str
    path: str
    max_abs_diff: Number
    outputs: int
    output_names: list[str] = []
    images: int = 0
    top1_agreement: Number | None = None
    cosine_min: Number | None = None
    counts_equal: bool | None = None
    labels_equal: bool | None = None
    detections: int | None = None
    max_box_diff: Number | None = None


# --- Ray Jobs -------------------------------------------------------------------------------------

class JobVersion(Result):
    app: str
    model: str
    version: str
    status: str
    error: Optional[str]


class Job(Result):
    """A Ray Job that ``submit`` sent, with the versions it trains (brought up to date)."""

    job_id: str
    status: str
    message: Optional[str]
    entrypoint: str
    command: Optional[str]
    app: Optional[str]
    model: Optional[str]
    version: Optional[str]
    start_time: Optional[int]
    end_time: Optional[int]
    driver_exit_code: Optional[int]
    versions: Optional[list[JobVersion]] = None
    version_status: Optional[str] = None
    version_error: Optional[str] = None


class Submission(Result):
    job: Job
    version: Version


# --- tuning -----------------------------------------------------------------------------------------

class SchedulerSpec(Result):
    """The trial scheduler a run uses; ``note`` says why it is not the one asked for (ASHA -> FIFO)."""

    name: str
    time_attr: str
    max_t: int
    grace_period: int
    reduction_factor: int
    note: Optional[str] = None


class Trial(Result):
    trial_id: str
    version_id: str
    status: str
    stopped_early: bool
    best: bool
    params: dict[str, Any]
    metric: Optional[Number]  # validation: what Tune compared and the best trial is chosen on
    metrics: dict[str, Any]
    test_metric: Optional[Number] = None  # reported only; None for a trial stopped early
    test_metrics: dict[str, Any] = {}
    epochs: int
    curve: list[list[Number]]
    runs: int
    error: Optional[str]


class TuneRun(Result):
    """A tuning run; ``trials`` and ``best`` come with ``tune``, ``get_tune_run`` and ``resume_tune``."""

    id: str
    app_id: str
    model_id: str
    status: str
    metric: str
    mode: str
    space: dict[str, str]
    params: dict[str, Any]
    num_trials: int
    max_concurrent: int
    num_workers: int
    scheduler: SchedulerSpec
    dataset_version_id: str
    best_version: Optional[str]
    artifacts: str
    error: Optional[str]
    created_at: str
    finished_at: Optional[str]
    trials: Optional[list[Trial]] = None
    best: Optional[Trial] = None


class TuneReport(Result):
    """A run's tune_report.json; ``path`` is a local folder holding it and its plots."""

    run: dict[str, Any]
    best: Optional[dict[str, Any]]
    worst: Optional[dict[str, Any]]
    stopped_early: list[str]
    failed: list[str]
    trials: list[dict[str, Any]]
    plots: list[str]
    path: str


# --- keys, predictions, workflows, search -------------------------------------------------------------

class Key(Result):
    """An API key (``kind`` app: of ``app_id``; user: every app); ``key`` (the secret) is there only in what
    ``create_key`` returns."""

    id: str
    app_id: Optional[str]
    kind: str = "app"
    name: str
    scopes: list[str]
    created_at: str
    revoked_at: Optional[str]
    key: Optional[str] = None


class ConceptScore(Result):
    id: str
    value: Number


class BoundingBox(Result):
    top_row: Number
    left_col: Number
    bottom_row: Number
    right_col: Number


class DetectedRegion(Result):
    """A detected region; in a workflow, later steps add their ``concepts`` or ``embedding`` for its crop."""

    bounding_box: BoundingBox
    concept: Optional[str] = None
    value: Optional[Number] = None
    concepts: Optional[list[ConceptScore]] = None
    embedding: Optional[list[Number]] = None


class Prediction(Result):
    """One image's prediction: ``concepts`` (classification), ``regions`` (detection) or ``embedding``."""

    concepts: Optional[list[ConceptScore]] = None
    regions: Optional[list[DetectedRegion]] = None
    embedding: Optional[list[Number]] = None


class WorkflowStep(Result):
    kind: str
    model_id: str
    version_id: Optional[str]


class Workflow(Result):
    id: str
    app_id: str
    steps: list[WorkflowStep]
    created_at: str


class WorkflowOutput(Prediction):
    """A step's output for one image (the version it ran, and its prediction)."""

    kind: str
    model_id: str
    version_id: str


class WorkflowResult(Result):
    outputs: list[WorkflowOutput]


class SearchHit(Result):
    input_id: str
    score: Number
    concepts: list[str]


class IndexBuild(Result):
    app_id: str
    model_id: str
    version_id: str
    indexed: int
    removed: int
    total: int
    dim: int
    seconds: Number


class SearchIndex(Result):
    app_id: str
    model_id: str
    version_id: str
    generation: int
    dim: int
    total: int
    updated_at: str
