"""Pretrained (ImageNet) bases: a registry of backbone weights, the local caches, and resolving ``init_from``.

- ``architecture``: which backbone a template (or an architecture name) means; ``check``: whether a
  state_dict fits it (key names and shapes), converted to the model's names;
- ``caches``: the Hugging Face hub cache (timm) and torchvision's checkpoint cache, read in their own layouts;
- ``registry``: ``deeptrain weights add/list/remove/which``: weights stored once in object storage,
  content-addressed (``weights/<architecture>/<sha256>.safetensors``), one row per (architecture, name);
- ``resolve``: what the plan does with ``init_from`` (``imagenet``, ``imagenet-if-available``, ``scratch``,
  a version id, a path or a URI): a concrete ``URI#sha256=HEX`` or None, and a record of where it came from.
"""

from deeptrain.weights.registry import WeightsError, add_weights, list_weights, remove_weights
from deeptrain.weights.resolve import resolve_init_from, which_weights

__all__ = ["WeightsError", "add_weights", "list_weights", "remove_weights", "resolve_init_from", "which_weights"]
