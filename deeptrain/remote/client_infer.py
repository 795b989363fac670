"""The remote client's inference side: predictions, workflows and visual search, on the server's models.

Images are read and checked here (``deeptrain.images.read_checked_image``, as a local call does) and sent
base64, at most ``MAX_PER_REQUEST`` a request; an answer's outputs become the same typed results as a local
call's (deeptrain's record where the answer carries it, else read from Clarifai's fields).
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from deeptrain.errors import DeeptrainError, NotFound
from deeptrain.images import ImageLimits, read_checked_image
from deeptrain.remote.base import RemoteBase, native, q
from deeptrain.results import (Deleted, IndexBuild, Prediction, SearchHit, SearchIndex, Workflow,
                               WorkflowResult)

MAX_PER_REQUEST = 32  # the server's limit of inputs per prediction


def _encoded(images: list[bytes]) -> list[dict[str, Any]]:
    return [{"id": str(k), "data": {"image": {"base64": base64.b64encode(data).decode()}}}
            for k, data in enumerate(images)]


def _record(obj: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return native(obj)
    except DeeptrainError:
        return None


def prediction(output: dict[str, Any]) -> dict[str, Any]:
    """One output as a local prediction: deeptrain's record (``data.metadata.deeptrain``) with the embedding
    vector from ``data.embeddings``; without a record, read from Clarifai's fields."""
    data = output.get("data") or {}
    embedding = {"embedding": data["embeddings"][0]["vector"]} if data.get("embeddings") else {}
    found = _record(output)
    if found is not None:
        return {**found, **({} if "embedding" in found or "regions" in found else embedding)}
    if embedding:
        return embedding
    if "regions" in data:
        return {"regions": [{"bounding_box": r["region_info"]["bounding_box"],
                             "concept": ((r.get("data") or {}).get("concepts") or [{}])[0].get("id"),
                             "value": ((r.get("data") or {}).get("concepts") or [{}])[0].get("value")}
                            for r in data["regions"]]}
    return {"concepts": [{"id": c["id"], "value": c.get("value", 1.0)} for c in data.get("concepts") or []]}


def _step_text(step: str | Mapping[str, Any]) -> str:
    """A workflow step as the server takes it: ``KIND:MODEL[:VERSION]``."""
    if isinstance(step, str):
        return step
    return ":".join(str(step[k]) for k in ("kind", "model_id", "version_id") if step.get(k))


class InferenceMethods(RemoteBase):
    def _images(self, images: Iterable[bytes | str | Path]) -> list[bytes]:
        limits = ImageLimits.of(self.settings)
        return [read_checked_image(image, limits, f"image {k}" if isinstance(image, bytes) else str(image))
                for k, image in enumerate(images)]

    def _task(self, app_id: str, model_id: str) -> str:
        tasks = self.__dict__.setdefault("_tasks", {})
        if (app_id, model_id) not in tasks:
            tasks[app_id, model_id] = native(self._get(self._app(app_id, f"/models/{q(model_id)}"))["model"])["task"]
        return tasks[app_id, model_id]

    def predict(self, app_id: str, model_id: str, images: Iterable[bytes | str | Path], *,
                version_id: str | None = None, threshold: float | None = None,
                top_k: int | None = None) -> list[Prediction]:
        """Predict on image bytes or local files with the server's model: one result per image."""
        data = self._images(images)
        path = self._app(app_id, f"/models/{q(model_id)}" + (f"/versions/{q(version_id)}" if version_id else "")
                         + "/outputs")
        config: dict[str, Any] = {}
        if top_k is not None:
            config["max_concepts"] = top_k
        if threshold is not None and self._task(app_id, model_id) == "detection":  # a classifier ignores it
            config["min_value"] = threshold
        out: list[dict[str, Any]] = []
        for start in range(0, len(data), MAX_PER_REQUEST):
            body: dict[str, Any] = {"inputs": _encoded(data[start:start + MAX_PER_REQUEST])}
            if config:
                body["model"] = {"output_info": {"output_config": config}}
            out += [prediction(o) for o in self._post(path, body)["outputs"]]
        return Prediction.many(out)

    # --- workflows ------------------------------------------------------------------------------------------
    def _workflows(self, app_id: str, tail: str = "") -> str:
        return self._app(app_id, f"/workflows{tail}")

    def create_workflow(self, app_id: str, workflow_id: str, steps: Iterable[str | Mapping[str, Any]]) -> Workflow:
        """A chain of the server's models run on one input (steps as ``Client.create_workflow`` takes them)."""
        body = {"workflows": [{"id": workflow_id, "metadata": {"steps": [_step_text(s) for s in steps]}}]}
        return Workflow(native(self._post(self._workflows(app_id), body)["workflows"][0]))

    def list_workflows(self, app_id: str) -> list[Workflow]:
        return Workflow.many(self._natives(self._workflows(app_id), "workflows"))

    def get_workflow(self, app_id: str, workflow_id: str) -> Workflow:
        return Workflow(native(self._get(self._workflows(app_id, f"/{q(workflow_id)}"))["workflow"]))

    def delete_workflow(self, app_id: str, workflow_id: str) -> Deleted:
        self._delete(self._workflows(app_id, f"/{q(workflow_id)}"))
        return Deleted({"id": workflow_id, "deleted": True})

    def run_workflow(self, app_id: str, workflow_id: str, images: Iterable[bytes | str | Path], *,
                     threshold: float | None = None, top_k: int | None = None) -> list[WorkflowResult]:
        """Run a workflow on the server, one result per image."""
        data = self._images(images)
        config = {k: v for k, v in (("max_concepts", top_k), ("min_value", threshold)) if v is not None}
        results: list[dict[str, Any]] = []
        for start in range(0, len(data), MAX_PER_REQUEST):
            body: dict[str, Any] = {"inputs": _encoded(data[start:start + MAX_PER_REQUEST])}
            if config:
                body["output_config"] = config
            for result in self._post(self._workflows(app_id, f"/{q(workflow_id)}/results"), body)["results"]:
                results.append({"outputs": [prediction(o) for o in result.get("outputs") or []]})
        return WorkflowResult.many(results)

    # --- visual search ---------------------------------------------------------------------------------------
    def build_search_index(self, app_id: str, model_id: str, version_id: str | None = None, *,
                           batch_size: int = 64, on_progress=None, poll_s: float = 2.0) -> IndexBuild:
        """Have the server build the app's search index (a Ray job on its cluster) and wait for it; the counts
        come from the index before and after (``removed`` is not known remotely: 0)."""
        try:
            before = self.search_index_info(app_id).total
        except NotFound:
            before = 0
        start = time.perf_counter()
        body = {"model_id": model_id, **({"version_id": version_id} if version_id else {})}
        job_id = self._post(self._app(app_id, "/searches/index"), body)["job"]["id"]
        while True:
            job = self._get(self._app(app_id, f"/jobs/{q(job_id)}"))["job"]
            if job["status"] in ("SUCCEEDED", "FAILED", "STOPPED"):
                break
            time.sleep(poll_s)
        if job["status"] != "SUCCEEDED":
            raise DeeptrainError(f"building the search index failed (Ray job {job_id} {job['status']}): "
                                 f"{job.get('message') or ''}\n{job.get('log_tail') or ''}".strip())
        info = self.search_index_info(app_id)
        indexed = max(0, info.total - before)
        if on_progress:
            on_progress(indexed, indexed)
        return IndexBuild({"app_id": app_id, "model_id": info.model_id, "version_id": info.version_id,
                           "indexed": indexed, "removed": 0, "total": info.total, "dim": info.dim,
                           "seconds": round(time.perf_counter() - start, 3)})

    def search_index_info(self, app_id: str) -> SearchIndex:
        return SearchIndex(native(self._get(self._app(app_id, "/searches/index"))["search_index"]))

    def search(self, app_id: str, image: bytes | str | Path | None = None, *, input_id: str | None = None,
               top_k: int = 10, concept: str | None = None) -> list[SearchHit]:
        """Nearest inputs to an image (bytes or a local file) or a stored input, best first."""
        if image is not None:
            rank = {"annotation": {"data": {"image": {"base64": base64.b64encode(self._images([image])[0]).decode()}}}}
        else:
            rank = {"annotation": {"input_id": input_id}}
        query: dict[str, Any] = {"ranks": [rank]}
        if concept is not None:
            query["filters"] = [{"annotation": {"data": {"concepts": [{"id": concept, "value": 1.0}]}}}]
        answer = self._post(self._app(app_id, "/inputs/searches"),
                            {"searches": [{"query": query}], "pagination": {"page": 1, "per_page": top_k}})
        return SearchHit.many(_hit(h) for h in answer.get("hits") or [])


def _hit(hit: dict[str, Any]) -> dict[str, Any]:
    item = hit.get("input") or {}
    record = _record(item) or {}
    concepts = record.get("concepts")
    if concepts is None:
        concepts = [c["id"] for c in (item.get("data") or {}).get("concepts") or [] if c.get("value", 1.0) > 0]
    return {"input_id": record.get("input_id", item.get("id")), "score": record.get("score", hit.get("score", 0.0)),
            "concepts": concepts}
