"""What a plan does with ``init_from``: a concrete ``URI#sha256=HEX`` (or None: scratch) and a record.

- ``scratch`` (or nothing): no weights;
- ``imagenet``: the backbone's ImageNet weights from (1) the registry, (2) the Hugging Face hub cache timm
  reads (downloaded there first when ``HF_HUB_OFFLINE`` allows), (3) torchvision's checkpoint cache; a
  cache hit is registered (copied to object storage) so workers on any node read it. None: an error naming
  the two fixes;
- ``imagenet-if-available`` (the templates' default): the same, else scratch, with a note saying so;
- a model version id of the app: its ``weights.safetensors``; else a path or ``file://``/``s3://`` URI.

The record, ``{"source": registry|hub-cache|torchvision-cache|uri|version|none, "architecture", "sha256",
"uri"}`` (+ ``requested``, ``note``), travels in the plan (``plan.json`` beside the version's artifacts).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from sqlalchemy import select

from deeptrain.params import HyperParams
from deeptrain.params.schema import INIT_IF_AVAILABLE, INIT_IMAGENET, INIT_SCRATCH
from deeptrain.services.context import Context
from deeptrain.store import ModelVersion
from deeptrain.templates import Template
from deeptrain.weights.caches import (download_hub, find_cached, hub_cache_dir, hub_repo,
                                      torchvision_cache_file)
from deeptrain.weights.registry import DEFAULT_NAME, WeightsError, add_weights, get_weights


def no_weights_message(template: Template) -> str:
    """Why ``init_from=imagenet`` found nothing, and the two ways to fix it."""
    arch = template.architecture
    if not template.timm_pretrained and not template.torchvision_weights:
        return (f"timm and torchvision have no ImageNet weights for {arch} ({template.name}): convert a "
                f"checkpoint to this model's key names and register it with `deeptrain weights add {arch} FILE` "
                "(checked by key names and shapes), or train with init_from=scratch")
    places = []
    repo = hub_repo(template)
    if repo:
        org, _, name = repo[0].partition("/")
        places.append(f"{hub_cache_dir()}/models--{org}--{name}/snapshots/<revision>/{repo[1]} "
                      "(timm's hub cache; HF_HUB_OFFLINE=0 on a machine online downloads it there)")
    if template.torchvision_weights:
        places.append(torchvision_cache_file(template) or "")
    return (f"no ImageNet weights for {arch} ({template.task}/{template.name}) in the weights registry or the "
            f"local caches; either (1) register a timm/torchvision/safetensors checkpoint once for the cluster: "
            f"`deeptrain weights add {arch} FILE`, or (2) put it in a local cache: {' or '.join(places)}; "
            "or train with init_from=scratch")


def _registered(uri: str, sha256: str, source: str, architecture: str | None, **extra: Any) -> dict[str, Any]:
    return {"source": source, "architecture": architecture, "sha256": sha256, "uri": uri, **extra}


def find_imagenet(ctx: Context, template: Template, *, register: bool = True) -> dict[str, Any] | None:
    """The record of the backbone's ImageNet weights, or None; a cache hit is registered when ``register``."""
    arch = template.architecture
    if arch is None:
        return None
    row = get_weights(ctx, arch, DEFAULT_NAME)
    if row is not None:
        return _registered(row["uri"], row["sha256"], "registry", arch, origin=row["source"])
    hit = find_cached(template)
    if hit is None and register:
        try:
            hit = download_hub(template)
        except Exception as exc:  # noqa: BLE001 - an offline or firewalled machine: as if nothing were cached
            logging.getLogger(__name__).warning("downloading %s from the hub failed: %s: %s",
                                                template.timm_pretrained, type(exc).__name__, exc)
    if hit is None:
        return None
    if not register:
        return {"source": hit.source, "architecture": arch, "path": hit.path, "origin": hit.origin}
    row = add_weights(ctx, arch, hit.path, DEFAULT_NAME, source=f"{hit.source} {hit.origin}")
    return _registered(row["uri"], row["sha256"], hit.source, arch, origin=hit.origin)


def _version_weights(ctx: Context, app_id: str, value: str) -> str | None:
    """The weights URI of a trained model version of the app named ``value``, or None when none is."""
    if "/" in value or "." in value or ":" in value:
        return None
    with ctx.store.session() as s:
        version = s.scalars(select(ModelVersion).where(ModelVersion.app_id == app_id, ModelVersion.id == value)).first()
        if version is None:
            return None
        if version.status != "trained":
            raise WeightsError(f"init_from version {value!r} is {version.status}, not trained; "
                               "wait for it or name a trained version")
        return ctx.storage.uri_for(f"{version.artifact_prefix}/weights.safetensors")


def check_tenant_init_from(ctx: Context, app_id: str, value: Any) -> None:
    """What a caller of the HTTP API may name as ``init_from``: ``imagenet``, ``imagenet-if-available``,
    ``scratch`` or a trained version of its own app. A path or URI would read the server's files or another
    app's storage (and tell which exist): those are registered on the server host (``deeptrain weights add``)."""
    if value is None or value in (INIT_IMAGENET, INIT_IF_AVAILABLE, INIT_SCRATCH):
        return
    if isinstance(value, str) and value.replace("-", "").replace("_", "").isalnum() and len(value) <= 64 \
            and _version_weights(ctx, app_id, value) is not None:
        return
    raise WeightsError("init_from over the HTTP API is imagenet, imagenet-if-available, scratch or a trained "
                       "version id of this app; weights files and URIs are registered on the server host with "
                       "`deeptrain weights add`")


def _from_location(ctx: Context, app_id: str, template: Template, value: str) -> dict[str, Any]:
    from deeptrain.training.init_from import InitFromError, read_source, split_sha256

    location, expected = split_sha256(value)
    version_uri = _version_weights(ctx, app_id, location)
    try:
        data, _ = read_source(version_uri or location)
    except InitFromError as exc:
        raise WeightsError(f"{exc}; or use init_from=imagenet / scratch") from None
    sha256 = hashlib.sha256(data).hexdigest()
    if expected is not None and expected != sha256:
        raise WeightsError(f"init_from {location!r} has sha256 {sha256}, not the {expected} it names")
    return _registered(version_uri or location, sha256, "version" if version_uri else "uri", template.architecture,
                       **({"version": location} if version_uri else {}))


def resolve_init_from(ctx: Context, app_id: str, template: Template,
                      params: HyperParams) -> tuple[HyperParams, dict[str, Any]]:
    """``params`` with ``init_from`` made concrete (``URI#sha256=HEX``, or None), and its record."""
    value = params.init_from
    if value in (None, INIT_SCRATCH):
        return params.model_copy(update={"init_from": None}), {"source": "none", "requested": value}
    if value in (INIT_IMAGENET, INIT_IF_AVAILABLE):
        record = find_imagenet(ctx, template)
        if record is None:
            message = no_weights_message(template)
            if value == INIT_IMAGENET:
                raise WeightsError(f"init_from=imagenet: {message}")
            note = f"init_from={value}: no ImageNet weights found, training from scratch ({message})"
            logging.getLogger(__name__).warning(note)
            return (params.model_copy(update={"init_from": None}),
                    {"source": "none", "requested": value, "architecture": template.architecture, "note": note})
    else:
        record = _from_location(ctx, app_id, template, value)
    record["requested"] = value
    concrete = f"{record['uri']}#sha256={record['sha256']}"
    return params.model_copy(update={"init_from": concrete}), record


def which_weights(ctx: Context, target: str) -> dict[str, Any]:
    """What ``init_from=imagenet`` would use for a template or architecture, and from where (nothing is
    registered or downloaded by asking)."""
    from deeptrain.weights.architecture import architecture_of, reference_template

    template = reference_template(architecture_of(target))
    found = find_imagenet(ctx, template, register=False)
    base = {"architecture": template.architecture, "timm_pretrained": template.timm_pretrained,
            "torchvision_weights": template.torchvision_weights}
    if found is None:
        return {**base, "source": "none", "fix": no_weights_message(template)}
    return {**base, **found}
