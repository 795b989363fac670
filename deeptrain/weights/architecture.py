"""Which backbone a name means, and the key names and shapes of its base (torch only to build on ``meta``)."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from deeptrain.errors import InvalidInput
from deeptrain.templates import Template, all_templates, architectures, templates_of_architecture

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor


def architecture_of(name: str) -> str:
    """An architecture name (``resnext50_32x4d``), a template name (``ResNext``) or ``task/Template``."""
    if name in architectures():
        return name
    task, _, template = name.rpartition("/")
    found = {t.architecture for t in all_templates()
             if t.architecture and t.name.lower() == template.lower() and (not task or t.task == task)}
    if len(found) == 1:
        return found.pop()
    names = sorted({t.name for t in all_templates()})
    raise InvalidInput(f"unknown architecture or template {name!r}; architectures: {', '.join(architectures())}; "
                       f"templates: {', '.join(names)}")


def reference_template(architecture: str) -> Template:
    """The template a backbone's weights are checked against (classification first)."""
    return templates_of_architecture(architecture)[0]


@lru_cache(maxsize=None)
def base_shapes(architecture: str) -> dict[str, tuple[int, ...]]:
    """Every base tensor of the backbone (the reference template's non-head state) and its shape."""
    import torch

    from deeptrain.training.param_groups import is_head

    template = reference_template(architecture)
    with torch.device("meta"):
        model = template.build(2)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not is_head(k, template.head_prefixes)}


def conform(state_dict: "dict[str, Tensor]", architecture: str, source: str) -> "dict[str, Tensor]":
    """The backbone's base tensors of ``state_dict`` under the model's names (timm/torchvision names and
    their ``module.``/``model.``/``backbone.`` prefixes accepted); every base tensor must be there with
    its shape (BatchNorm's ``num_batches_tracked`` counters excepted), the classifier may differ or be absent."""
    from deeptrain.training.init_from import match_keys

    shapes = base_shapes(architecture)
    mapping, _ = match_keys(list(state_dict), list(shapes))
    renamed = {dst: state_dict[src] for src, dst in mapping.items()}
    out = {}
    for key, shape in shapes.items():
        value = renamed.get(key)
        if value is None:
            if key.endswith("num_batches_tracked"):
                continue
            sample = ", ".join(list(state_dict)[:3])
            raise InvalidInput(f"{source} is not {architecture} weights: it lacks the base tensor {key!r} "
                               f"(its keys look like {sample})")
        if tuple(value.shape) != shape:
            raise InvalidInput(f"{source} is not {architecture} weights: {key!r} has shape {tuple(value.shape)}, "
                               f"the model's is {shape}")
        out[key] = value.detach().to("cpu").contiguous()
    return out
