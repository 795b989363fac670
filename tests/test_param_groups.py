"""Param groups: base at lrate x base_gradient_multiplier, frozen base, no decay on norms/biases."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from deeptrain.params import HyperParams
from deeptrain.training.param_groups import build_param_groups, make_optimizer, set_train_mode

HEAD = ("fc.",)


def tiny(num_classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(3, 4, 3, padding=1, bias=False),
        bn=nn.BatchNorm2d(4),
        relu=nn.ReLU(),
        conv2=nn.Conv2d(4, 4, 1),
        gn=nn.GroupNorm(2, 4),
        pool=nn.AdaptiveAvgPool2d(1),
        flat=nn.Flatten(),
        ln=nn.LayerNorm(4),
        fc=nn.Linear(4, num_classes),
    ))


def params(**kw) -> HyperParams:
    return HyperParams(**kw)


def pre(hp: HyperParams) -> HyperParams:
    """The same parameters with a pre-initialized base (``init_from``), which the multiplier applies to."""
    return hp.model_copy(update={"init_from": "base.pt"})


def base_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("fc.")}


def one_step(multiplier: float) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    model = tiny().double()
    hp = params(lrate=0.1, base_gradient_multiplier=multiplier)
    opt = make_optimizer(model, HEAD, pre(hp))
    before = base_tensors(model)
    torch.manual_seed(1)
    x = torch.randn(8, 3, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (8,))
    set_train_mode(model, HEAD, frozen_base=multiplier == 0)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    after = base_tensors(model)
    return before, after


def test_base_update_scales_with_multiplier():
    b1, a1 = one_step(1.0)
    b2, a2 = one_step(0.001)
    for name in b1:
        assert torch.equal(b1[name], b2[name])  # same init
        d1 = (a1[name] - b1[name]).norm().item()
        d2 = (a2[name] - b2[name]).norm().item()
        assert d1 > 0, name
        assert d1 / d2 == pytest.approx(1000, rel=0.01), name


def test_groups_carry_name_lr_scale_and_lr():
    model = tiny()
    hp = params(lrate=0.1, base_gradient_multiplier=0.01)
    groups = {g["name"]: g for g in build_param_groups(model, HEAD, pre(hp))}
    assert set(groups) == {"head", "head_no_decay", "base", "base_no_decay"}
    assert groups["head"]["lr"] == 0.1 and groups["head"]["lr_scale"] == 1.0
    assert groups["base"]["lr"] == pytest.approx(0.001) and groups["base"]["lr_scale"] == 0.01
    assert groups["head"]["params"] == [model.fc.weight] and groups["head_no_decay"]["params"] == [model.fc.bias]
    total = sum(len(g["params"]) for g in groups.values())
    assert total == len(list(model.parameters()))


def test_multiplier_ignored_without_pretrained_base():
    model = tiny()
    hp = params(lrate=0.1, base_gradient_multiplier=0.0)
    groups = build_param_groups(model, HEAD, hp)
    assert all(g["lr"] == 0.1 and g["lr_scale"] == 1.0 for g in groups)
    assert all(p.requires_grad for p in model.parameters())
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_zero_multiplier_freezes_the_base():
    model = tiny()
    hp = params(lrate=0.1, base_gradient_multiplier=0.0)
    opt = make_optimizer(model, HEAD, pre(hp))
    base = {n: p for n, p in model.named_parameters() if not n.startswith("fc.")}
    assert all(not p.requires_grad for p in base.values())
    grouped = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not grouped & {id(p) for p in base.values()}
    assert {g["name"] for g in opt.param_groups} == {"head", "head_no_decay"}

    before = {n: t.detach().clone() for n, t in model.state_dict().items()}
    set_train_mode(model, HEAD, frozen_base=True)
    assert model.training and model.fc.training and not model.bn.training
    torch.manual_seed(1)
    x = torch.randn(8, 3, 8, 8) * 3 + 1
    y = torch.randint(0, 3, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    after = model.state_dict()
    for name in before:
        if name.startswith("fc."):
            assert not torch.equal(before[name], after[name]), name
        else:  # weights and BatchNorm running stats bit-identical
            assert torch.equal(before[name], after[name]), name
    assert all(p.grad is None for p in base.values())
    state_ids = {id(p) for p in opt.state}
    assert state_ids and not state_ids & {id(p) for p in base.values()}
    # an unfrozen train mode does update running stats (the check above is meaningful)
    set_train_mode(model, HEAD, frozen_base=False)
    model(x)
    assert not torch.equal(before["bn.running_mean"], model.state_dict()["bn.running_mean"])


def test_no_weight_decay_on_norms_and_biases():
    model = tiny()
    hp = params(lrate=0.1, weight_decay=5e-4)
    opt = make_optimizer(model, HEAD, pre(hp))
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    no_decay = {"bn.weight", "bn.bias", "conv2.bias", "gn.weight", "gn.bias", "ln.weight", "ln.bias", "fc.bias"}
    for name, p in names.items():
        expected = 0.0 if name in no_decay else 5e-4
        assert decay[id(p)] == expected, name
    assert opt.defaults["momentum"] == 0.9
    assert all(g["momentum"] == 0.9 for g in opt.param_groups)


def test_wrapped_model_is_refused():
    class Wrapper(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.module = m

    with pytest.raises(ValueError, match="unwrapped"):
        build_param_groups(Wrapper(tiny()), HEAD, pre(params()))
