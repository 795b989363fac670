"""The remote client's data side: apps, concepts, inputs (import, labels, bytes), dataset versions, API keys.

Each method is ``deeptrain.sdk.Client``'s, over the server's Clarifai-shaped routes; its typed result is
rebuilt from the deeptrain record the answer carries (``metadata.deeptrain``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from deeptrain.errors import InvalidInput, NotFound
from deeptrain.formats import FORMATS, ImportRecord, Region, get_format
from deeptrain.formats.records import file_reader
from deeptrain.images import ImageLimits
from deeptrain.remote.base import RemoteBase, native, q
from deeptrain.remote.imports import ProgressFn, RemoteImport, url_reader
from deeptrain.results import App, Concept, DatasetSummary, DatasetVersion, Deleted, ImportResult, Input, Key

DEFAULT_DATASET = "default"  # the server keeps one dataset per app; its versions are the app's snapshots


class DataMethods(RemoteBase):
    # --- apps ----------------------------------------------------------------------------------------------
    def create_app(self, app_id: str, name: str | None = None) -> App:
        app = {"id": app_id, **({"name": name} if name else {})}
        return App(native(self._post("/v2/users/me/apps", {"apps": [app]})["apps"][0]))

    def list_apps(self) -> list[App]:
        return App.many(self._natives("/v2/users/me/apps", "apps"))

    def get_app(self, app_id: str) -> App:
        return App(native(self._get(self._app(app_id))["app"]))

    def delete_app(self, app_id: str) -> Deleted:
        self._delete(self._app(app_id))
        return Deleted({"id": app_id, "deleted": True})

    # --- concepts ------------------------------------------------------------------------------------------
    def create_concept(self, app_id: str, concept_id: str, name: str | None = None) -> Concept:
        concept = {"id": concept_id, **({"name": name} if name else {})}
        return Concept(native(self._post(self._app(app_id, "/concepts"), {"concepts": [concept]})["concepts"][0]))

    def list_concepts(self, app_id: str) -> list[Concept]:
        return Concept.many(self._natives(self._app(app_id, "/concepts"), "concepts"))

    def delete_concept(self, app_id: str, concept_id: str, force: bool = False) -> Deleted:
        """Delete a concept; one that labels inputs is refused unless ``force`` (which drops those labels)."""
        answer = self._delete(self._app(app_id, f"/concepts/{q(concept_id)}"), force="true" if force else None)
        return Deleted(native(answer["concept"]))

    # --- inputs --------------------------------------------------------------------------------------------
    def import_inputs(self, app_id: str, path: str | Path, format: str, split: str | None = None,
                      on_progress: ProgressFn | None = None, update_labels: bool = False) -> ImportResult:
        """Import a local folder or file into the server's app: read here, sent 128 images a request."""
        spec = get_format(format)
        path = Path(path)
        spec.check_path(path, self.settings.max_label_file_bytes)
        self.get_app(app_id)  # a missing app (or a key without it) is refused before anything is read
        reader = spec.reader(path, url_reader())
        return ImportResult(self._importer(app_id, split, update_labels, on_progress).run(reader))

    def _importer(self, app_id: str, split: str | None = None, update_labels: bool = False,
                  on_progress: ProgressFn | None = None) -> RemoteImport:
        return RemoteImport(self.transport, self._app(app_id, "/inputs"), ImageLimits.of(self.settings),
                            split=split, update_labels=update_labels, on_progress=on_progress)

    @staticmethod
    def count_import_candidates(path: str | Path, format: str) -> int | None:
        """A cheap count of the files an import of ``path`` would read (None when unknown): a progress total."""
        spec, path = FORMATS.get(format), Path(path)
        return spec.count(path) if spec is not None and spec.count is not None and path.is_dir() else None

    def add_input(self, app_id: str, image: bytes | str | Path, *, concepts: Iterable[str] = (),
                  negatives: Iterable[str] = (), regions: Iterable[Mapping[str, Any]] = (), split: str | None = None,
                  input_id: str | None = None, metadata: dict[str, Any] | None = None) -> ImportResult:
        """Add one image (bytes or a local file) with labels; regions use normalized boxes."""
        record = ImportRecord(
            source=input_id or (str(image) if not isinstance(image, bytes) else "<bytes>"),
            read_bytes=(lambda _max: image) if isinstance(image, bytes) else file_reader(Path(image)),
            concepts=tuple(concepts), negatives=tuple(negatives),
            regions=tuple(Region(r["concept"], r["top_row"], r["left_col"], r["bottom_row"], r["right_col"])
                          for r in regions),
            split=split, input_id=input_id, metadata=metadata,
        )
        return ImportResult(self._importer(app_id).run([record]))

    def list_inputs(self, app_id: str, limit: int | None = None, offset: int = 0) -> list[Input]:
        """The app's inputs in id order, from ``offset``, at most ``limit`` (pages of the server's list)."""
        per_page = 1000 if limit is None else max(1, min(1000, limit))
        page, skip = offset // per_page + 1, offset % per_page
        rows: list[dict[str, Any]] = []
        while limit is None or len(rows) < limit:
            got = self._get(self._app(app_id, "/inputs"), page=page, per_page=per_page).get("inputs") or []
            rows += got[skip:]
            skip = 0
            if len(got) < per_page:
                break
            page += 1
        return Input.many(_input(r) for r in (rows if limit is None else rows[:limit]))

    def get_input(self, app_id: str, input_id: str) -> Input:
        return Input(_input(self._get(self._app(app_id, f"/inputs/{q(input_id)}"))["input"]))

    def label_input(self, app_id: str, input_id: str, concepts: Iterable[str], negative: bool = False) -> Input:
        """Add whole-image labels (``negative``: negatives) by concept name or id; returns the input."""
        labels = [{"id": c, "value": 0.0 if negative else 1.0} for c in concepts]
        self._post(self._app(app_id, "/annotations"),
                   {"annotations": [{"input_id": input_id, "data": {"concepts": labels}}]})
        return self.get_input(app_id, input_id)

    def unlabel_input(self, app_id: str, input_id: str, concepts: Iterable[str]) -> Input:
        """Remove whole-image labels of these concepts from an input; boxes stay."""
        self.transport.call("PATCH", self._app(app_id, "/inputs"), body={
            "inputs": [{"id": input_id, "data": {"concepts": [{"id": c} for c in concepts]}}], "action": "remove"})
        return self.get_input(app_id, input_id)

    def get_input_bytes(self, app_id: str, input_id: str) -> bytes:
        return self.transport.get_bytes(self._app(app_id, f"/inputs/{q(input_id)}/image"))

    def delete_input(self, app_id: str, input_id: str) -> Deleted:
        self._delete(self._app(app_id, f"/inputs/{q(input_id)}"))
        return Deleted({"id": input_id, "deleted": True})

    # --- dataset versions ---------------------------------------------------------------------------------
    def _datasets(self, app_id: str, tail: str = "") -> str:
        return self._app(app_id, f"/datasets/{DEFAULT_DATASET}/versions{tail}")

    def snapshot(self, app_id: str, test_fraction: float = 0.1, on_progress: ProgressFn | None = None,
                 validation_fraction: float = 0.1) -> DatasetVersion:
        """Have the server write (or find) the dataset version of the app's inputs (progress: all at the end)."""
        body = {"dataset_versions": [{"metadata": {"test_fraction": test_fraction,
                                                   "validation_fraction": validation_fraction}}]}
        version = DatasetVersion(native(self._post(self._datasets(app_id), body)["dataset_versions"][0]))
        if on_progress:
            on_progress(version.counts.get("inputs", 0))
        return version

    def list_datasets(self, app_id: str) -> list[DatasetSummary]:
        return DatasetSummary.many(self._natives(self._datasets(app_id), "dataset_versions"))

    def get_dataset(self, app_id: str, version_id: str) -> DatasetVersion:
        return DatasetVersion(native(self._get(self._datasets(app_id, f"/{q(version_id)}"))["dataset_version"]))

    # --- API keys -----------------------------------------------------------------------------------------
    def create_key(self, app_id: str, scopes: Iterable[str] = ("predict",), name: str = "") -> Key:
        """A new API key of the app; ``key`` in the result is shown only this once."""
        body = {"keys": [{"description": name, "scopes": list(scopes), "apps": [{"id": app_id, "user_id": "me"}]}]}
        return Key(native(self._post("/v2/users/me/keys", body)["keys"][0]))

    def list_keys(self, app_id: str) -> list[Key]:
        return Key.many(self._natives(self._app(app_id, "/keys"), "keys"))

    def revoke_key(self, app_id: str, key_id: str) -> Key:
        if not any(k.id == key_id for k in self.list_keys(app_id)):
            raise NotFound(f"API key {key_id!r} does not exist in app {app_id!r}", "key")
        self._delete(f"/v2/users/me/keys/{q(key_id)}")
        return next(k for k in self.list_keys(app_id) if k.id == key_id)

    def create_user_key(self, name: str = "") -> Key:
        raise InvalidInput("keys create --user is not available with DEEPTRAIN_API_URL: a user key is made on the "
                           "server host (unset DEEPTRAIN_API_URL there and run `deeptrain keys create --user`)")


def _input(rendered: dict[str, Any]) -> dict[str, Any]:
    """An input's record as ``Client.get_input`` gives it (the server's also lists its annotations' ids)."""
    return {k: v for k, v in native(rendered).items() if k != "annotations"}
