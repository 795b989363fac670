"""The Python SDK: the same service layer the CLI and the HTTP API use.

    from deeptrain import sdk
    client = sdk.Client()                       # settings from DEEPTRAIN_* variables
    client.create_app("fashion")
    report = client.import_inputs("fashion", "images/", format="imagefolder")
    version = client.snapshot("fashion")

With ``DEEPTRAIN_API_URL`` set, ``Client()`` is a ``deeptrain.remote.RemoteClient``: the same calls, sent to
that deeptrain server (``DEEPTRAIN_API_KEY`` its key).

Results are typed (``deeptrain.results``, pydantic-checked) and are dicts as well:
``report.imported == report["imported"]``, ``json.dumps(version)``, ``version.model_dump(mode="json")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import pyarrow.dataset as pads

from deeptrain.config import Settings
from deeptrain.formats import ImportRecord, Region
from deeptrain.results import (App, Concept, DatasetSummary, DatasetVersion, Deleted, ExportedModel, ExportResult,
                               ImportResult, IndexBuild, Input, Key, Model, Prediction, SearchHit, SearchIndex,
                               Workflow, WorkflowResult)
from deeptrain.results_lifecycle import GcResult, ModelDeleted, VersionDeleted
from deeptrain.sdk_training import TrainingMethods
from deeptrain.sdk_tuning import TuningMethods
from deeptrain.services import apps, concepts, datasets, gc, inputs, keys, labels, workflows
from deeptrain.services import models as models_service
from deeptrain.services.context import Context
from deeptrain.services.inputs import ProgressFn
from deeptrain.weights.client import WeightsMethods


class Client(TrainingMethods, TuningMethods):
    """Every deeptrain operation; results are typed (``deeptrain.results``) and read like dicts too."""

    def __new__(cls, settings: Settings | None = None, **overrides: Any):
        """With ``DEEPTRAIN_API_URL`` set (``settings.api_url``), a ``deeptrain.remote.RemoteClient``: the same
        methods over that server's HTTP API (those that need its storage or cluster refuse, saying so)."""
        settings = settings or Settings.from_env(**overrides)
        if settings.api_url and cls is Client:
            from deeptrain.remote import RemoteClient

            return RemoteClient(settings)
        return super().__new__(cls)

    def __init__(self, settings: Settings | None = None, **overrides: Any):
        self.settings = settings or Settings.from_env(**overrides)
        self.ctx = Context.from_settings(self.settings)
        self.weights = WeightsMethods(self.ctx)  # the backbone weights registry (``deeptrain.weights.client``)

    # --- apps ----------------------------------------------------------------------
    def create_app(self, app_id: str, name: str | None = None) -> App:
        return App(apps.create_app(self.ctx, app_id, name))

    def list_apps(self) -> list[App]:
        return App.many(apps.list_apps(self.ctx))

    def get_app(self, app_id: str) -> App:
        return App(apps.get_app(self.ctx, app_id))

    def delete_app(self, app_id: str) -> Deleted:
        return Deleted(apps.delete_app(self.ctx, app_id))

    # --- concepts ------------------------------------------------------------------
    def create_concept(self, app_id: str, concept_id: str, name: str | None = None) -> Concept:
        return Concept(concepts.create_concept(self.ctx, app_id, concept_id, name))

    def list_concepts(self, app_id: str) -> list[Concept]:
        return Concept.many(concepts.list_concepts(self.ctx, app_id))

    def delete_concept(self, app_id: str, concept_id: str, force: bool = False) -> Deleted:
        return Deleted(concepts.delete_concept(self.ctx, app_id, concept_id, force))

    # --- inputs --------------------------------------------------------------------
    def import_inputs(
        self, app_id: str, path: str | Path, format: str, split: str | None = None,
        on_progress: ProgressFn | None = None, update_labels: bool = False,
    ) -> ImportResult:
        """Import a folder or file. An image the app already has (same bytes) is a duplicate: with
        ``update_labels`` its labels are replaced by the import's (``updated``), else kept and counted when
        they differ (``differing_labels``)."""
        return ImportResult(inputs.import_path(self.ctx, app_id, path, format, split=split,
                                               on_progress=on_progress, update_labels=update_labels).as_dict())

    @staticmethod
    def count_import_candidates(path: str | Path, format: str) -> int | None:
        """A cheap count of the files an import of ``path`` would read (None when unknown): a progress total."""
        return inputs.count_candidates(path, format)

    def add_input(
        self, app_id: str, image: bytes | str | Path, *, concepts: Iterable[str] = (),
        negatives: Iterable[str] = (), regions: Iterable[Mapping[str, Any]] = (), split: str | None = None,
        input_id: str | None = None, metadata: dict[str, Any] | None = None,
    ) -> ImportResult:
        """Add one image (bytes or a file path) with labels; regions use normalized boxes."""
        from deeptrain.formats.records import file_reader

        record = ImportRecord(
            source=input_id or (str(image) if not isinstance(image, bytes) else "<bytes>"),
            read_bytes=(lambda _max: image) if isinstance(image, bytes) else file_reader(Path(image)), concepts=tuple(concepts), negatives=tuple(negatives),
            regions=tuple(Region(r["concept"], r["top_row"], r["left_col"], r["bottom_row"], r["right_col"])
                          for r in regions),
            split=split, input_id=input_id, metadata=metadata,
        )
        return ImportResult(inputs.import_records(self.ctx, app_id, [record]).as_dict())

    def list_inputs(self, app_id: str, limit: int | None = None, offset: int = 0) -> list[Input]:
        return Input.many(inputs.list_inputs(self.ctx, app_id, limit, offset))

    def get_input(self, app_id: str, input_id: str) -> Input:
        return Input(inputs.input_record(self.ctx, app_id, input_id))

    def label_input(self, app_id: str, input_id: str, concepts: Iterable[str], negative: bool = False) -> Input:
        """Add whole-image labels (``negative``: negatives) by concept name or id; a concept the app lacks is
        created, as an import does; the opposite label of a concept is replaced. Returns the input."""
        labels.label_input(self.ctx, app_id, input_id, list(concepts), negative)
        return self.get_input(app_id, input_id)

    def unlabel_input(self, app_id: str, input_id: str, concepts: Iterable[str]) -> Input:
        """Remove whole-image labels (positive or negative) of these concepts from an input; boxes stay."""
        labels.unlabel_input(self.ctx, app_id, input_id, list(concepts))
        return self.get_input(app_id, input_id)

    def get_input_bytes(self, app_id: str, input_id: str) -> bytes:
        return inputs.get_input_bytes(self.ctx, app_id, input_id)

    def delete_input(self, app_id: str, input_id: str) -> Deleted:
        return Deleted(inputs.delete_input(self.ctx, app_id, input_id))

    def export_inputs(self, app_id: str, out_dir: str | Path, format: str) -> ExportResult:
        return ExportResult(inputs.export_inputs(self.ctx, app_id, out_dir, format))

    # --- dataset versions ----------------------------------------------------------
    def snapshot(self, app_id: str, test_fraction: float = 0.1,
                 on_progress: ProgressFn | None = None, validation_fraction: float = 0.1) -> DatasetVersion:
        """Write (or find) the dataset version of the app's inputs: inputs without a split go to test with
        ``test_fraction``; without imported validation inputs, ``validation_fraction`` of the training inputs
        are carved into validation (by content hash; the manifest's ``validation`` says which happened)."""
        return DatasetVersion(datasets.snapshot(self.ctx, app_id, test_fraction=test_fraction,
                                                validation_fraction=validation_fraction, on_progress=on_progress))

    def list_datasets(self, app_id: str) -> list[DatasetSummary]:
        return DatasetSummary.many(datasets.list_datasets(self.ctx, app_id))

    def get_dataset(self, app_id: str, version_id: str) -> DatasetVersion:
        return DatasetVersion(datasets.get_dataset(self.ctx, app_id, version_id))

    def open_dataset(self, app_id: str, version_id: str) -> pads.Dataset:
        return datasets.open_dataset(self.ctx, app_id, version_id)

    # --- models (training, versions, jobs: sdk_training; tuning: sdk_tuning) ----------
    def create_model(self, app_id: str, model_id: str, task: str, template: str,
                     params: dict[str, Any] | None = None, concepts: Iterable[str] | None = None) -> Model:
        return Model(models_service.create_model(self.ctx, app_id, model_id, task, template, params, concepts))

    def list_models(self, app_id: str) -> list[Model]:
        return Model.many(models_service.list_models(self.ctx, app_id))

    def get_model(self, app_id: str, model_id: str) -> Model:
        return Model(models_service.get_model(self.ctx, app_id, model_id))

    def delete_model(self, app_id: str, model_id: str, force: bool = False) -> ModelDeleted:
        """Delete a model with its versions, tuning runs and stored objects; refused while a workflow runs it
        or a version is queued or training (``force``: delete those too; a run still alive then fails)."""
        return ModelDeleted(models_service.delete_model(self.ctx, app_id, model_id, force))

    def delete_version(self, app_id: str, model_id: str, version_id: str, force: bool = False) -> VersionDeleted:
        """Delete a model version and its stored objects; refused while a workflow pins it, while it is a tuning
        trial, or while it is queued or training (``force``: then too)."""
        return VersionDeleted(models_service.delete_version(self.ctx, app_id, model_id, version_id, force))

    def gc(self, app_id: str | None = None, dry_run: bool = False, grace_s: float | None = None) -> GcResult:
        """Remove stored objects no record refers to (one app's, or all and old temporary files); objects
        younger than ``grace_s`` (default ``Settings.gc_grace_s``) stay. ``dry_run``: only list them."""
        return GcResult(gc.collect_garbage(self.ctx, app_id, dry_run, grace_s))

    # --- inference --------------------------------------------------------------------
    def load_version(self, app_id: str, model_id: str, version_id: str | None = None):
        """The version's model, ready for inference (cached per client)."""
        return self._loaded(models_service.get_trained_version(self.ctx, app_id, model_id, version_id))

    def _loaded(self, version: dict[str, Any]):
        from deeptrain.artifacts import load_model

        cache = self.__dict__.setdefault("_models", {})
        if version["artifacts"] not in cache:
            cache[version["artifacts"]] = load_model(self.ctx.storage, version["artifacts"])
        return cache[version["artifacts"]]

    def _predict_version(self, version: dict[str, Any], images: list[bytes], threshold: float | None = None,
                         top_k: int | None = None) -> list[dict[str, Any]]:
        from deeptrain.inference import predict_bytes

        return predict_bytes(self._loaded(version), images, threshold=threshold, top_k=top_k)

    def predict(self, app_id: str, model_id: str, images: Iterable[bytes | str | Path], *,
                version_id: str | None = None, threshold: float | None = None,
                top_k: int | None = None) -> list[Prediction]:
        """Predict on image bytes or files: concepts, regions or embeddings, one result per image."""
        from deeptrain.inference import predict_bytes

        version = models_service.get_trained_version(self.ctx, app_id, model_id, version_id)
        images = list(images)
        names = [f"image {k}" if isinstance(image, bytes) else str(image) for k, image in enumerate(images)]
        return Prediction.many(predict_bytes(self._loaded(version), self._checked_images(images), threshold=threshold,
                                             top_k=top_k, names=names))

    def _checked_images(self, images: Iterable[bytes | str | Path]) -> list[bytes]:
        """The bytes of each image through the one intake (``deeptrain.images.read_checked_image``): a file read
        bounded, the header checked; an error names the image. Decoding happens once, when predicting."""
        from deeptrain.images import ImageLimits, read_checked_image

        limits = ImageLimits.of(self.settings)
        return [read_checked_image(image, limits, f"image {k}" if isinstance(image, bytes) else str(image))
                for k, image in enumerate(images)]

    # --- visual search ---------------------------------------------------------------
    def build_search_index(self, app_id: str, model_id: str, version_id: str | None = None, *,
                           batch_size: int = 64, on_progress=None) -> IndexBuild:
        """Embed the app's inputs not indexed yet with a trained embedding version (Ray Data batch inference)
        and make it the app's search index; ``on_progress(n_done, n_to_embed)`` follows the embedding."""
        from deeptrain import search

        return IndexBuild(search.build_index(self.ctx, app_id, model_id, version_id, batch_size,
                                             on_progress=on_progress))

    def search(self, app_id: str, image: bytes | str | Path | None = None, *, input_id: str | None = None,
               top_k: int = 10, concept: str | None = None) -> list[SearchHit]:
        """Nearest inputs to an image (bytes or file) or a stored input (itself excluded), best first:
        ``[{"input_id", "score", "concepts"}]``; ``concept`` keeps only inputs labelled with it."""
        from deeptrain import search

        return SearchHit.many(search.search(self.ctx, app_id, image, input_id, top_k, concept))

    def search_index_info(self, app_id: str) -> SearchIndex:
        """Which embedding version is the app's search index, its size and when it was built."""
        from deeptrain import search

        return SearchIndex(search.index_info(self.ctx, app_id))

    # --- workflows ----------------------------------------------------------------------
    def create_workflow(self, app_id: str, workflow_id: str,
                        steps: Iterable[str | Mapping[str, Any]]) -> Workflow:
        """A chain of models run on one input; steps are ``KIND:MODEL[:VERSION]`` (kind detect, classify or
        embed) or ``{"kind", "model_id", "version_id"}``; detect only first, later steps run on its regions."""
        return Workflow(workflows.create_workflow(self.ctx, app_id, workflow_id, list(steps)))

    def list_workflows(self, app_id: str) -> list[Workflow]:
        return Workflow.many(workflows.list_workflows(self.ctx, app_id))

    def get_workflow(self, app_id: str, workflow_id: str) -> Workflow:
        return Workflow(workflows.get_workflow(self.ctx, app_id, workflow_id))

    def delete_workflow(self, app_id: str, workflow_id: str) -> Deleted:
        return Deleted(workflows.delete_workflow(self.ctx, app_id, workflow_id))

    def run_workflow(self, app_id: str, workflow_id: str, images: Iterable[bytes | str | Path], *,
                     threshold: float | None = None, top_k: int | None = None) -> list[WorkflowResult]:
        """Run a workflow on image bytes or files, one result per image (see ``services.workflows.run_workflow``)."""
        return WorkflowResult.many(workflows.run_workflow(self.ctx, app_id, workflow_id, self._checked_images(images),
                                                          self._predict_version, threshold=threshold, top_k=top_k))

    # --- API keys ---------------------------------------------------------------------
    def create_key(self, app_id: str, scopes: Iterable[str] = ("predict",), name: str = "") -> Key:
        """A new API key for the HTTP API; ``key`` in the result is shown only this once."""
        return Key(keys.create_key(self.ctx, app_id, scopes, name))

    def create_user_key(self, name: str = "") -> Key:
        """A new user key (every scope in every app; creates apps): what remote mode's DEEPTRAIN_API_KEY holds.
        ``key`` in the result is shown only this once."""
        return Key(keys.create_user_key(self.ctx, name))

    def list_keys(self, app_id: str) -> list[Key]:
        return Key.many(keys.list_keys(self.ctx, app_id))

    def revoke_key(self, app_id: str, key_id: str) -> Key:
        return Key(keys.revoke_key(self.ctx, app_id, key_id))

    def export(self, app_id: str, model_id: str, version_id: str, fmt: str, out: str | Path,
               images: Iterable[bytes | str | Path] | None = None, *, score_threshold: float | None = None,
               max_images: int = 32) -> ExportedModel:
        """Export a trained version to ONNX or ``torch.export`` (``deeptrain.exports``) and check it against
        the served path on real images: ``images`` (bytes or files), by default up to ``max_images`` of the
        version's test split (any split when it has none). Reports top-1 agreement, cosine or box
        agreement and the max abs difference."""
        from itertools import islice

        from deeptrain.exports import check_target, export_version

        check_target(fmt, Path(out))
        loaded = self.load_version(app_id, model_id, version_id)
        if images is None:
            data = self._version_images(app_id, loaded.manifest["dataset_version"]["id"], max_images)
        else:
            data = self._checked_images(list(islice(images, max_images)))
        names = {c.id: c.name for c in self.list_concepts(app_id)}
        return ExportedModel(export_version(loaded, fmt, out, data, score_threshold=score_threshold,
                                            concept_names=names))

    def _version_images(self, app_id: str, dataset_version_id: str, limit: int) -> list[bytes]:
        import pyarrow.compute as pc

        dataset = self.open_dataset(app_id, dataset_version_id)
        table = dataset.head(limit, columns=["image"], filter=pc.field("split") == "test")
        if table.num_rows == 0:
            table = dataset.head(limit, columns=["image"])
        return table.column("image").to_pylist()
