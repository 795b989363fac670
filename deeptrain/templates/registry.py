"""The template registry: (task, template name) -> how to build and train that model.

This module imports neither torch nor ray, so the parameter schema, the CLI and the
HTTP layer can describe templates cheaply. Builders are named by import path and
resolved only when a model is actually built.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Mapping

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

Task = Literal["classification", "detection", "embedding"]
TASKS: tuple[Task, ...] = ("classification", "detection", "embedding")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)
DEFAULT_INIT_FROM = "imagenet-if-available"  # a built-in template's default (see ``deeptrain.weights``)


class TemplateError(ValueError):
    """An unknown or duplicate template."""


@dataclass(frozen=True)
class Template:
    """One trainable (task, architecture) pair.

    builder: "module:function"; the function takes ``num_classes`` plus task keyword
        arguments and returns an ``nn.Module`` following the task's model contract.
    head_prefixes: parameter-name prefixes of the head; every other parameter is the
        base, trained at ``lrate * base_gradient_multiplier``.
    defaults: hyperparameter defaults that differ from the schema's global defaults.
    reference_num_params: the published parameter count at 1000 classes (backbone +
        classifier), pinned by the tests within 1 %.
    architecture: the backbone; the weights registry (``deeptrain weights``) is keyed by it, so the
        classification, detection and embedding templates of one backbone share its ImageNet weights.
    timm_pretrained: timm's pretrained tag of the backbone (``name.tag``; its ``hf_hub_id`` names the
        Hugging Face hub repository timm downloads ``model.safetensors`` from); None: timm has none.
    torchvision_weights: the file torchvision downloads into ``$TORCH_HOME/hub/checkpoints``; None: none.
    A template with an architecture defaults to ``init_from=imagenet-if-available``.
    """

    task: Task
    name: str
    builder: str
    head_prefixes: tuple[str, ...]
    min_image_size: int
    description: str
    reference: str
    reference_num_params: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    defaults: Mapping[str, Any] = field(default_factory=dict)
    architecture: str | None = None
    timm_pretrained: str | None = None
    torchvision_weights: str | None = None

    def __post_init__(self) -> None:
        defaults = dict(self.defaults)
        if self.architecture is not None:
            defaults.setdefault("init_from", DEFAULT_INIT_FROM)
        object.__setattr__(self, "defaults", MappingProxyType(defaults))

    @property
    def key(self) -> tuple[str, str]:
        return (self.task, self.name)

    def build(self, num_classes: int, **kwargs: Any) -> "nn.Module":
        module_name, _, func_name = self.builder.partition(":")
        builder = getattr(importlib.import_module(module_name), func_name)
        return builder(num_classes=num_classes, **kwargs)


_REGISTRY: dict[tuple[str, str], Template] = {}


def register(template: Template) -> Template:
    """Add a template; a second template under the same (task, name) is refused."""
    if template.task not in TASKS:
        raise TemplateError(f"unknown task {template.task!r}; valid tasks: {', '.join(TASKS)}")
    if template.key in _REGISTRY:
        raise TemplateError(f"template {template.task}/{template.name} is already registered")
    _REGISTRY[template.key] = template
    return template


def get_template(task: str, name: str) -> Template:
    """Look up a template; the error lists the valid choices and the closest match."""
    if task not in TASKS:
        close = difflib.get_close_matches(task, TASKS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise TemplateError(f"unknown task {task!r}{hint}; valid tasks: {', '.join(TASKS)}")
    try:
        return _REGISTRY[(task, name)]
    except KeyError:
        names = [n for (t, n) in _REGISTRY if t == task]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise TemplateError(
            f"unknown {task} template {name!r}{hint}; valid {task} templates: {', '.join(names)}"
        ) from None


def all_templates() -> list[Template]:
    """Every registered template, in registration order."""
    return list(_REGISTRY.values())


def templates_of_architecture(architecture: str) -> list[Template]:
    """The templates built on one backbone (classification first), in registration order."""
    found = [t for t in _REGISTRY.values() if t.architecture == architecture]
    return sorted(found, key=lambda t: TASKS.index(t.task))


def architectures() -> list[str]:
    """Every backbone a registered template is built on, in registration order."""
    return list(dict.fromkeys(t.architecture for t in _REGISTRY.values() if t.architecture))
