"""ImageNet weights already on this machine: the Hugging Face hub cache timm downloads into, and
torchvision's checkpoint cache, each read in its own layout with its library's own functions.

- hub: ``$HF_HUB_CACHE`` (or ``$HUGGINGFACE_HUB_CACHE``, else ``$HF_HOME/hub``, else
  ``~/.cache/huggingface/hub``)/``models--{org}--{name}/snapshots/{revision}/model.safetensors`` with
  ``refs/main`` naming the revision, found by ``huggingface_hub.try_to_load_from_cache`` for the repository
  timm's pretrained config names (``hf_hub_id``). With ``HF_HUB_OFFLINE`` unset or false (deeptrain's model
  modules set it to 1 unless it is given), a missing file is downloaded by ``huggingface_hub`` into that cache.
- torchvision: ``torch.hub.get_dir()`` (``$TORCH_HOME/hub``)``/checkpoints/<file>`` (never downloaded here).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from deeptrain.templates import Template

HUB_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class CacheHit:
    source: str  # "hub-cache" or "torchvision-cache"
    path: str
    origin: str  # the hub repository or torchvision file it is


def hub_cache_dir() -> str:
    """The hub cache as ``huggingface_hub`` places it, read from the environment now (not at import)."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return os.path.expanduser(os.environ[name])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_repo(template: Template) -> tuple[str, str] | None:
    """(repository, file) of the backbone's weights on the hub; None: timm has none. timm publishes every
    pretrained tag as ``timm/<name.tag>`` holding ``model.safetensors`` (its pretrained config's ``hf_hub_id``;
    the tests check each template's against timm's), so planning a run needs no timm import."""
    if not template.timm_pretrained:
        return None
    return f"timm/{template.timm_pretrained}", HUB_FILES[0]


def find_hub_cache(template: Template) -> CacheHit | None:
    repo = hub_repo(template)
    if repo is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    for filename in dict.fromkeys((repo[1], *HUB_FILES)):
        found = try_to_load_from_cache(repo[0], filename, cache_dir=hub_cache_dir())
        if isinstance(found, str) and os.path.isfile(found):
            return CacheHit("hub-cache", found, f"{repo[0]}/{filename}")
    return None


def download_hub(template: Template) -> CacheHit | None:
    """Download the backbone's weights into the hub cache (only when ``HF_HUB_OFFLINE`` allows it)."""
    repo = hub_repo(template)
    if repo is None or hub_offline():
        return None
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(repo[0], repo[1], cache_dir=hub_cache_dir())
    return CacheHit("hub-cache", path, f"{repo[0]}/{repo[1]}")


def torchvision_cache_file(template: Template) -> str | None:
    if not template.torchvision_weights:
        return None
    import torch.hub

    return str(Path(torch.hub.get_dir()) / "checkpoints" / template.torchvision_weights)


def find_torchvision_cache(template: Template) -> CacheHit | None:
    path = torchvision_cache_file(template)
    if path and os.path.isfile(path):
        return CacheHit("torchvision-cache", path, template.torchvision_weights or "")
    return None


def find_cached(template: Template) -> CacheHit | None:
    """The hub cache first, then torchvision's; None when neither holds the backbone's weights."""
    return find_hub_cache(template) or find_torchvision_cache(template)
