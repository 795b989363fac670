"""The per-epoch step schedule (closed form, resumable) and the items of each epoch."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from deeptrain.params import HyperParams
from deeptrain.training.schedule import (
    StepSchedule,
    apply_warmup,
    epoch_indices,
    items_per_epoch,
    lr_factor,
    warmup_factor,
)

HP = HyperParams(lrate=0.1, init_epochs=25, step_epochs=7, lrate_step_factor=0.5, num_epochs=65)


def expected(base: float, epoch: int) -> float:
    n = 0 if epoch < 25 else (epoch - 25) // 7 + 1
    return base * 0.5 ** n


def make(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD([{"params": [model.weight], "lr": 0.1}, {"params": [model.bias], "lr": 1e-4}],
                          lr=0.1, momentum=0.9)
    return model, opt, StepSchedule(opt, HP)


def run_epochs(model, opt, sched, epochs) -> list[list[float]]:
    lrs = []
    for _ in epochs:
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.zero_grad()
        model(torch.ones(1, 2)).sum().backward()
        opt.step()
        sched.step()
    return lrs


def test_closed_form_every_epoch():
    model, opt, sched = make()
    lrs = run_epochs(model, opt, sched, range(65))
    for epoch, (head, base) in enumerate(lrs):
        assert head == pytest.approx(expected(0.1, epoch), rel=1e-12), epoch
        assert base == pytest.approx(expected(1e-4, epoch), rel=1e-12), epoch
        assert head == pytest.approx(0.1 * lr_factor(epoch, 25, 7, 0.5), rel=1e-12)
        assert sched.lr_at(epoch)[0] == pytest.approx(head, rel=1e-12)
    assert lrs[24][0] == pytest.approx(0.1) and lrs[25][0] == pytest.approx(0.05)
    assert lrs[31][0] == pytest.approx(0.05) and lrs[32][0] == pytest.approx(0.025)
    assert lrs[64][0] == pytest.approx(0.1 / 64)


def test_resume_from_state_dict_gives_the_same_sequence():
    full_model, opt, sched = make()
    full = run_epochs(full_model, opt, sched, range(65))

    model, opt, sched = make()
    first = run_epochs(model, opt, sched, range(32))
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)

    model2, opt2, sched2 = make(seed=123)  # fresh objects
    model2.load_state_dict(state["model"])
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    assert sched2.last_epoch == 32
    rest = run_epochs(model2, opt2, sched2, range(32, 65))
    assert first + rest == full
    assert torch.equal(model2.weight, full_model.weight) and torch.equal(model2.bias, full_model.bias)


def test_schedule_keyword_arguments_and_validation():
    opt2 = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=1.0)
    sched = StepSchedule(opt2, init_epochs=0, step_epochs=1, factor=0.1)
    assert [round(sched.lr_at(e)[0], 12) for e in range(3)] == [0.1, 0.01, 0.001]
    with pytest.raises(ValueError):
        StepSchedule(torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=1.0), init_epochs=0, step_epochs=0, factor=0.5)


def test_items_per_epoch():
    assert items_per_epoch(0, 100) == 100
    assert items_per_epoch(250, 100) == 250
    assert items_per_epoch(30, 100) == 30
    with pytest.raises(ValueError):
        items_per_epoch(10, 0)


def test_epoch_indices_cycle_through_permutations():
    idx = epoch_indices(10, 0, epoch=0, seed=0)
    assert sorted(idx) == list(range(10))
    idx = epoch_indices(10, 25, epoch=3, seed=7)
    assert len(idx) == 25
    assert sorted(idx[:10]) == list(range(10)) and sorted(idx[10:20]) == list(range(10))
    assert len(set(idx[20:])) == 5
    assert idx[:10] != idx[10:20]  # reshuffled each pass
    assert epoch_indices(10, 25, epoch=3, seed=7) == idx  # deterministic
    assert epoch_indices(10, 25, epoch=4, seed=7) != idx
    assert epoch_indices(10, 25, epoch=3, seed=8) != idx
    small = epoch_indices(100, 30, epoch=0, seed=0)
    assert len(small) == len(set(small)) == 30
    assert math.isclose(len(set(epoch_indices(1000, 0, 1, 0))), 1000)


def test_warmup_ramps_every_group_to_its_scheduled_lr():
    assert [warmup_factor(k, 4) for k in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_factor(0, -1)
    _, opt, sched = make()
    seen = []
    for k in range(5):  # steps 0-4 of epoch 0 with a 4-step warm-up
        apply_warmup(opt, sched, 0, k, 4)
        seen.append([g["lr"] for g in opt.param_groups])
    assert seen == [pytest.approx([0.1 * f, 1e-4 * f]) for f in (0.25, 0.5, 0.75, 1.0, 1.0)]
    opt.param_groups[0]["lr"] = 0.123  # after the warm-up it leaves the lr alone
    apply_warmup(opt, sched, 30, 99, 4)
    assert opt.param_groups[0]["lr"] == 0.123
    apply_warmup(opt, sched, 30, 2, 4)  # a warm-up step in a stepped epoch scales that epoch's lr
    assert opt.param_groups[0]["lr"] == pytest.approx(expected(0.1, 30) * 0.75)
