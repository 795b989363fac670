"""A trained version's files under ``apps/<app>/models/<model>/<version>/``.

``weights.safetensors`` (the model's state_dict), ``manifest.json`` (template, task,
params, ordered concepts, dataset version, metrics, preprocessing, package version),
``report.json`` and the PNG plots. ``load_model`` rebuilds a model from them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from deeptrain import __version__
from deeptrain.errors import Conflict
from deeptrain.params import HyperParams
from deeptrain.storage import Storage
from deeptrain.templates import get_template

WEIGHTS = "weights.safetensors"
MANIFEST = "manifest.json"


def write_weights(storage: Storage, prefix: str, state_dict: dict[str, torch.Tensor]) -> None:
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    storage.put_bytes(f"{prefix}/{WEIGHTS}", save_safetensors(tensors))


def write_manifest(storage: Storage, prefix: str, version: dict[str, Any], task: str, template: str,
                   dataset: dict[str, Any], metrics: dict[str, Any], canvas: int,
                   init_weights: dict[str, Any] | None = None) -> dict[str, Any]:
    """The version's manifest: what serving, export and evaluation read besides the weights; ``init_weights`` is
    the base it started from (source, architecture, sha256, uri — the plan's record)."""
    tmpl = get_template(task, template)
    manifest = {
        "app_id": version["app_id"], "model_id": version["model_id"], "version_id": version["id"],
        "task": task, "template": template, "params": version["params"], "concepts": version["concepts"],
        "dataset_version": {"id": dataset["id"], "content_hash": dataset["content_hash"]},
        "preprocessing": {"image_size": version["params"]["image_size"], "mean": list(tmpl.mean),
                          "std": list(tmpl.std), "canvas": canvas,
                          "resize": "shorter side to image_size, centre crop"},
        "metrics": metrics, "deeptrain_version": __version__, "torch_version": torch.__version__,
        "init_weights": dict(init_weights or {}),
    }
    storage.put_bytes(f"{prefix}/{MANIFEST}", json.dumps(manifest, indent=2, default=str).encode())
    return manifest


@dataclass
class LoadedModel:
    model: nn.Module
    manifest: dict[str, Any]
    # what predictions call ``predict`` on: ``deeptrain.inference.predict_model`` sets it on first use (the model
    # itself, or its inference graph)
    predictor: Any = field(default=None, repr=False)

    @property
    def params(self) -> HyperParams:
        return HyperParams.model_validate(self.manifest["params"])


def load_model(storage: Storage, prefix: str) -> LoadedModel:
    """Rebuild a trained version's model (eval mode) from its manifest and weights."""
    from deeptrain.training.loop import task_kwargs

    try:
        manifest = json.loads(storage.get_bytes(f"{prefix}/{MANIFEST}"))
    except Exception as exc:  # NotFound or a broken file
        raise Conflict(f"model version at {prefix} has no readable artifacts ({exc}); is it trained?") from None
    params = HyperParams.model_validate(manifest["params"])
    template = get_template(manifest["task"], manifest["template"])
    model = template.build(len(manifest["concepts"]), **task_kwargs(manifest["task"], params))
    model.load_state_dict(load_safetensors(storage.get_bytes(f"{prefix}/{WEIGHTS}")))
    model.eval()
    return LoadedModel(model, manifest)
