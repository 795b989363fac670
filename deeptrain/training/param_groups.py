"""Optimizer parameter groups: head at ``lrate``, pre-initialized base at ``lrate × base_gradient_multiplier``.

Build the groups (and the optimizer) from the **unwrapped** model, before any DDP
wrap: the head is recognized by parameter-name prefixes (``Template.head_prefixes``),
and DDP's ``module.`` prefix would hide it. The parameter tensors are shared with the
wrapper, so the optimizer keeps working after ``prepare_model``.

Rules (SPEC §4, ``base_gradient_multiplier``):

- head parameters train at ``lrate``;
- with a pre-initialized base (``init_from`` given) the base trains at
  ``lrate × base_gradient_multiplier``; without one the multiplier is ignored and the
  base trains at ``lrate``;
- multiplier ``0`` with a pre-initialized base freezes the base: its parameters get
  ``requires_grad=False`` and are in no group (so the optimizer keeps no state for
  them), and ``set_train_mode`` keeps its BatchNorm layers in eval mode;
- biases and the weights of normalization layers (BatchNorm, LayerNorm, GroupNorm,
  InstanceNorm, LocalResponseNorm has none) get no weight decay.

Every group carries ``name`` (``head``, ``head_no_decay``, ``base``, ``base_no_decay``)
and ``lr_scale`` (its lr relative to ``lrate``: 1 for the head, the multiplier or 1 for
the base); the scheduler scales each group's own initial lr.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
from torch import nn

from deeptrain.params import HyperParams

__all__ = [
    "NORM_TYPES",
    "build_param_groups",
    "is_head",
    "make_optimizer",
    "set_train_mode",
]

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
)
if hasattr(nn, "RMSNorm"):
    NORM_TYPES = NORM_TYPES + (nn.RMSNorm,)


def is_head(name: str, head_prefixes: Sequence[str]) -> bool:
    """Whether a parameter (or module, given without a trailing dot) belongs to the head."""
    return any(name.startswith(p) or (name + ".").startswith(p) for p in head_prefixes)


def _no_decay_names(model: nn.Module) -> set[str]:
    """Names of biases and normalization-layer parameters."""
    names: set[str] = set()
    for mod_name, module in model.named_modules():
        is_norm = isinstance(module, NORM_TYPES)
        for p_name, _ in module.named_parameters(recurse=False):
            if is_norm or p_name == "bias" or p_name.endswith("_bias"):
                names.add(f"{mod_name}.{p_name}" if mod_name else p_name)
    return names


def _check_unwrapped(names: Iterable[str], head_prefixes: Sequence[str]) -> None:
    names = list(names)
    if not any(is_head(n, head_prefixes) for n in names):
        wrapped = names and all(n.startswith("module.") for n in names)
        hint = (" (the model looks wrapped in DDP: build the groups from the unwrapped module, "
                "before prepare_model)") if wrapped else ""
        raise ValueError(f"no parameter of the model matches the head prefixes {list(head_prefixes)}{hint}")


def build_param_groups(model: nn.Module, head_prefixes: Sequence[str], params: HyperParams) -> list[dict[str, Any]]:
    """Parameter groups for ``torch.optim.SGD`` (see the module docstring).

    ``model`` must be the unwrapped module (names without DDP's ``module.``).
    The base's scale and whether it is frozen come from ``params`` (``base_lr_scale``,
    ``base_frozen``: the multiplier applies only with ``init_from``). Freezing sets ``requires_grad_(False)`` on
    the base parameters as a side effect. Parameters that already have
    ``requires_grad=False`` are left out. Empty groups are omitted.
    """
    head_prefixes = tuple(head_prefixes)
    named = list(model.named_parameters())
    _check_unwrapped((n for n, _ in named), head_prefixes)
    lrate = params.lrate
    if lrate is None:  # HyperParams always derives it; guard against hand-made objects
        raise ValueError("params.lrate is not set; resolve the parameters with resolve_params")
    frozen, base_scale = params.base_frozen, params.base_lr_scale
    no_decay = _no_decay_names(model)

    buckets: dict[str, list[torch.nn.Parameter]] = {"head": [], "head_no_decay": [], "base": [], "base_no_decay": []}
    for name, param in named:
        head = is_head(name, head_prefixes)
        if not head and frozen:
            param.requires_grad_(False)
            continue
        if not param.requires_grad:
            continue
        key = ("head" if head else "base") + ("_no_decay" if name in no_decay else "")
        buckets[key].append(param)

    groups: list[dict[str, Any]] = []
    for key, plist in buckets.items():
        if not plist:
            continue
        scale = 1.0 if key.startswith("head") else float(base_scale)
        groups.append({
            "params": plist,
            "name": key,
            "lr": lrate * scale,
            "lr_scale": scale,
            "weight_decay": 0.0 if key.endswith("_no_decay") else params.weight_decay,
        })
    if not groups:
        raise ValueError("the model has no trainable parameter")
    return groups


def make_optimizer(model: nn.Module, head_prefixes: Sequence[str], params: HyperParams) -> torch.optim.SGD:
    """``SGD(momentum=params.momentum)`` over ``build_param_groups(...)``; call before any DDP wrap."""
    groups = build_param_groups(model, head_prefixes, params)
    return torch.optim.SGD(groups, lr=params.lrate, momentum=params.momentum,
                           weight_decay=params.weight_decay)


def set_train_mode(model: nn.Module, head_prefixes: Sequence[str], frozen_base: bool) -> nn.Module:
    """``model.train()``; with a frozen base, its BatchNorm layers go back to eval mode.

    A frozen base is a fixed feature extractor: its BatchNorm layers must use (and not
    update) their running statistics. Call at the start of every training epoch (and
    after any evaluation that switched the model to eval and back). ``model`` is the
    unwrapped module.
    """
    model.train()
    if frozen_base:
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not is_head(name, head_prefixes):
                module.eval()
    return model
