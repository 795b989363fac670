"""The learning-rate schedule (stepped once per epoch) and the items of each epoch.

Learning rate of epoch ``e`` (0-based), for every parameter group with initial lr ``base``::

    n(e)  = 0                                          if e < init_epochs
          = floor((e - init_epochs) / step_epochs) + 1  otherwise
    lr(e) = base * lrate_step_factor ** n(e)

so epochs ``0 .. init_epochs-1`` run at the initial lr, the first step happens at the
start of epoch ``init_epochs``, and the next ones every ``step_epochs`` epochs after it.
With the defaults (25, 7, 0.5): epochs 0-24 at lrate, 25-31 at lrate/2, 32-38 at
lrate/4, ... Each group keeps its own base lr (head at ``lrate``, base at
``lrate × base_gradient_multiplier``), so ratios between groups are preserved.

Usage: ``scheduler.step()`` once at the end of every epoch (after that epoch's
``optimizer.step()`` calls). ``state_dict``/``load_state_dict`` resume it exactly
(load the optimizer's state too).

Warm-up (``warmup_steps``, a service parameter): optimizer step ``k`` (0-based, counted
over the whole run) of the first ``warmup_steps`` runs at ``warmup_factor(k) =
(k + 1) / warmup_steps`` of the epoch's scheduled lr (``apply_warmup``). It is a closed
form of the step number, so a resumed run warms up exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from deeptrain.params import HyperParams

__all__ = ["StepSchedule", "apply_warmup", "epoch_indices", "items_per_epoch", "lr_factor", "warmup_factor"]


def lr_factor(epoch: int, init_epochs: int, step_epochs: int, factor: float) -> float:
    """The multiplier of the initial lr at 0-based ``epoch`` (closed form above)."""
    if epoch < init_epochs:
        return 1.0
    return factor ** ((epoch - init_epochs) // step_epochs + 1)


class StepSchedule(LRScheduler):
    """Constant for ``init_epochs`` epochs, then × ``lrate_step_factor`` every ``step_epochs``.

    ``StepSchedule(optimizer, params)`` takes the three values from ``HyperParams``;
    keyword arguments override them (or replace ``params`` entirely).
    """

    def __init__(self, optimizer: Optimizer, params: HyperParams | None = None, *,
                 init_epochs: int | None = None, step_epochs: int | None = None,
                 factor: float | None = None, last_epoch: int = -1):
        self.init_epochs = int(init_epochs if init_epochs is not None else _need(params, "init_epochs"))
        self.step_epochs = int(step_epochs if step_epochs is not None else _need(params, "step_epochs"))
        self.factor = float(factor if factor is not None else _need(params, "lrate_step_factor"))
        if self.init_epochs < 0 or self.step_epochs < 1 or not self.factor > 0:
            raise ValueError(f"invalid schedule: init_epochs={self.init_epochs} (>= 0), "
                             f"step_epochs={self.step_epochs} (>= 1), factor={self.factor} (> 0)")
        super().__init__(optimizer, last_epoch)

    def factor_at(self, epoch: int) -> float:
        return lr_factor(max(epoch, 0), self.init_epochs, self.step_epochs, self.factor)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        f = self.factor_at(self.last_epoch)
        return [base * f for base in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()

    def lr_at(self, epoch: int) -> list[float]:
        """Every group's lr at a given 0-based epoch (without stepping)."""
        f = self.factor_at(epoch)
        return [base * f for base in self.base_lrs]


def warmup_factor(step: int, warmup_steps: int) -> float:
    """The lr multiplier of 0-based optimizer ``step``: (step + 1) / warmup_steps during warm-up, else 1."""
    if warmup_steps < 0 or step < 0:
        raise ValueError(f"warmup_steps and step must be >= 0, got {warmup_steps} and {step}")
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0


def apply_warmup(optimizer: Optimizer, scheduler: StepSchedule, epoch: int, step: int, warmup_steps: int) -> None:
    """During warm-up (``step < warmup_steps``), set every group's lr to its scheduled lr at
    ``epoch`` times ``warmup_factor(step)``; the last warm-up step restores the scheduled lr.
    Afterwards it changes nothing."""
    if step >= warmup_steps:
        return
    factor = warmup_factor(step, warmup_steps)
    for group, lr in zip(optimizer.param_groups, scheduler.lr_at(epoch)):
        group["lr"] = lr * factor


def _need(params: HyperParams | None, name: str) -> Any:
    if params is None:
        raise TypeError(f"StepSchedule needs params or {name}=")
    return getattr(params, name)


def items_per_epoch(num_items_per_epoch: int, split_size: int) -> int:
    """Items in one epoch: ``num_items_per_epoch``, or the split size when it is 0."""
    if num_items_per_epoch < 0:
        raise ValueError(f"num_items_per_epoch must be >= 0, got {num_items_per_epoch}")
    if split_size < 1:
        raise ValueError("the training split is empty")
    return split_size if num_items_per_epoch == 0 else int(num_items_per_epoch)


def epoch_indices(split_size: int, num_items: int, epoch: int, seed: int) -> list[int]:
    """The ``num_items`` split indices of ``epoch``: consecutive passes over the split,
    each an independent permutation, truncated to ``num_items``.

    Deterministic per ``(seed, epoch)``; pass ``p`` of epoch ``e`` is the permutation
    drawn from ``numpy.random.default_rng([seed, e, p])``. ``num_items`` 0 means one
    full pass (the split size). Fewer items than the split take the start of one
    permutation (a fresh random subset each epoch).
    """
    n = items_per_epoch(num_items, split_size)
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be >= 0, got seed={seed}, epoch={epoch}")
    passes = math.ceil(n / split_size)
    out: list[int] = []
    for p in range(passes):
        perm = np.random.default_rng([int(seed), int(epoch), p]).permutation(split_size)
        out.extend(perm[: n - len(out)].tolist())
    return out
