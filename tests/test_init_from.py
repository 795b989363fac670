"""init_from: weights from .safetensors / .pt / file:// URIs into a model's base; head re-initialized."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from deeptrain.training.init_from import (
    InitFromError,
    _filesystem,
    apply_init_from,
    load_state_dict_source,
    match_keys,
)

HEAD = ("fc.",)


def tiny(num_classes: int = 3, width: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(3, width, 3, padding=1, bias=False),
        bn=nn.BatchNorm2d(width),
        relu=nn.ReLU(),
        pool=nn.AdaptiveAvgPool2d(1),
        flat=nn.Flatten(),
        fc=nn.Linear(width, num_classes),
    ))


@pytest.fixture
def source() -> nn.Module:
    model = tiny(seed=1)
    with torch.no_grad():
        model.bn.running_mean.fill_(0.25)  # buffers travel too
    return model


def assert_loaded(model: nn.Module, src: nn.Module, head_too: bool = True) -> None:
    ours, theirs = model.state_dict(), src.state_dict()
    for key in theirs:
        if head_too or not key.startswith("fc."):
            assert torch.equal(ours[key], theirs[key]), key


def test_safetensors_file(tmp_path: Path, source):
    path = tmp_path / "w.safetensors"
    save_file(source.state_dict(), str(path))
    sd = load_state_dict_source(path)
    model = tiny(seed=2)
    report = apply_init_from(model, sd, HEAD)
    assert_loaded(model, source)
    assert report.missing == [] and report.unexpected == [] and report.reinitialized_head == []
    assert set(report.loaded) == set(source.state_dict())


def test_pt_file_and_checkpoint_dict(tmp_path: Path, source):
    torch.save(source.state_dict(), tmp_path / "w.pt")
    model = tiny(seed=2)
    apply_init_from(model, load_state_dict_source(str(tmp_path / "w.pt")), HEAD)
    assert_loaded(model, source)
    # a training checkpoint holding the weights under "model"
    torch.save({"model": source.state_dict(), "epoch": 3}, tmp_path / "ckpt.pth")
    assert set(load_state_dict_source(tmp_path / "ckpt.pth")) == set(source.state_dict())


def test_file_uri_and_directory(tmp_path: Path, source):
    save_file(source.state_dict(), str(tmp_path / "weights.safetensors"))
    sd = load_state_dict_source((tmp_path / "weights.safetensors").as_uri())
    model = tiny(seed=2)
    apply_init_from(model, sd, HEAD)
    assert_loaded(model, source)
    assert set(load_state_dict_source(tmp_path.as_uri())) == set(source.state_dict())  # a version's directory
    assert set(load_state_dict_source(tmp_path)) == set(source.state_dict())


def test_prefixed_keys_load(source):
    for prefix in ("module.", "model.", "backbone.", "module.model."):
        sd = {prefix + k: v for k, v in source.state_dict().items()}
        model = tiny(seed=2)
        report = apply_init_from(model, sd, HEAD)
        assert report.renamed_prefix == prefix
        assert report.unexpected == [] and report.missing == []
        assert_loaded(model, source)


def test_head_with_other_class_count_is_reinitialized(source):
    model = tiny(num_classes=7, seed=2)
    fresh_head = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("fc.")}
    report = apply_init_from(model, source.state_dict(), HEAD)
    assert sorted(report.reinitialized_head) == ["fc.bias", "fc.weight"]
    assert_loaded(model, source, head_too=False)
    for key, value in fresh_head.items():
        assert torch.equal(model.state_dict()[key], value)
    assert "re-initialized head" in report.summary()


def test_mismatched_base_raises_naming_the_key(source):
    model = tiny(width=8, seed=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InitFromError) as info:
        apply_init_from(model, source.state_dict(), HEAD)
    msg = str(info.value)
    assert "'conv.weight'" in msg and "(4, 3, 3, 3)" in msg and "(8, 3, 3, 3)" in msg
    for key, value in before.items():  # nothing was loaded
        assert torch.equal(model.state_dict()[key], value)


def test_missing_and_unexpected_are_reported(source):
    sd = dict(source.state_dict())
    del sd["bn.num_batches_tracked"]
    sd["extra.weight"] = torch.zeros(2)
    report = apply_init_from(tiny(seed=2), sd, HEAD)
    assert report.missing == ["bn.num_batches_tracked"]
    assert report.unexpected == ["extra.weight"]


def test_unrelated_weights_are_refused():
    with pytest.raises(InitFromError, match="none of the model's base weights"):
        apply_init_from(tiny(), {"encoder.layer.weight": torch.zeros(3)}, HEAD)


def test_unreadable_sources(tmp_path: Path):
    with pytest.raises(InitFromError, match="no such file"):
        load_state_dict_source(tmp_path / "nope.safetensors")
    (tmp_path / "junk.pt").write_bytes(b"not weights")
    with pytest.raises(InitFromError, match="not a readable"):
        load_state_dict_source(tmp_path / "junk.pt")
    with pytest.raises(InitFromError, match="nothing is downloaded"):
        load_state_dict_source("https://example.com/w.safetensors")


def test_s3_uri_uses_the_aws_variables(monkeypatch):
    import pyarrow.fs as pafs

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    fs, path = _filesystem("s3://bucket/models/w.safetensors")
    assert isinstance(fs, pafs.S3FileSystem) and path == "bucket/models/w.safetensors"


def test_match_keys_prefers_exact_names():
    mapping, prefix = match_keys(["a.w", "module.a.w"], ["a.w"])
    assert prefix == "" and mapping == {"a.w": "a.w", "module.a.w": "module.a.w"}
    mapping, prefix = match_keys(["module.a.w", "module.b.w"], ["a.w", "b.w"])
    assert prefix == "module." and mapping == {"module.a.w": "a.w", "module.b.w": "b.w"}
