"""ImageNet bases: init_from=imagenet from the weights registry, the Hugging Face hub cache (timm's layout)
or torchvision's checkpoint cache; imagenet-if-available falls back to scratch; every run records the sha256.

No network: the checkpoints are fabricated (random values, the backbone's real key names and shapes) in the
exact on-disk layout each cache uses, and found there by huggingface_hub's / torch.hub's own functions.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from safetensors.torch import save_file

from deeptrain.errors import InvalidInput, NotFound
from deeptrain.params import resolve_params
from deeptrain.templates import all_templates, get_template
from deeptrain.training.init_from import InitFromError, load_state_dict_source, split_sha256
from deeptrain.training.loop import build_model
from deeptrain.training.param_groups import is_head
from deeptrain.weights import WeightsError, resolve_init_from
from deeptrain.weights.architecture import base_shapes
from deeptrain.weights.caches import hub_repo
from tests import imagegen

HUB_REVISION = "0123456789abcdef0123456789abcdef01234567"
WITH_TIMM = [t for t in all_templates() if t.timm_pretrained]


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty, offline hub and torchvision caches of this test only."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def _random(key: str, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """Random values a network can run with: He-scaled kernels, BatchNorm near identity, positive variances."""
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.long)
    if key.endswith("running_var"):
        return torch.rand(shape, generator=g) + 0.5
    if len(shape) == 1:
        return (1.0 if key.endswith(".weight") else 0.0) + 0.1 * torch.randn(shape, generator=g)
    fan_in = max(1, int(torch.tensor(shape[1:]).prod()))
    return torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5


def fabricate(architecture: str, seed: int = 0, classes: int = 1000) -> dict[str, torch.Tensor]:
    """A backbone checkpoint as timm/torchvision publish it: every base tensor (random) plus a 1000-way fc."""
    g = torch.Generator().manual_seed(seed)
    out = {k: _random(k, s, g) for k, s in base_shapes(architecture).items()}
    out["fc.weight"], out["fc.bias"] = torch.randn(classes, 8, generator=g), torch.zeros(classes)
    return out


def write_hub_cache(template, tensors) -> str:
    """``$HF_HOME/hub/models--{org}--{name}/snapshots/{rev}/model.safetensors`` + ``refs/main``, as
    huggingface_hub leaves a timm download."""
    import os

    repo, filename = hub_repo(template)
    org, _, name = repo.partition("/")
    root = os.path.join(os.environ["HF_HOME"], "hub", f"models--{org}--{name}")
    os.makedirs(os.path.join(root, "snapshots", HUB_REVISION))
    os.makedirs(os.path.join(root, "refs"))
    with open(os.path.join(root, "refs", "main"), "w") as f:
        f.write(HUB_REVISION)
    path = os.path.join(root, "snapshots", HUB_REVISION, filename)
    save_file(tensors, path)
    return path


def write_torchvision_cache(template, tensors) -> str:
    """``$TORCH_HOME/hub/checkpoints/<file>.pth``: a pickled state_dict, as torchvision downloads it."""
    import os

    folder = os.path.join(os.environ["TORCH_HOME"], "hub", "checkpoints")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, template.torchvision_weights)
    torch.save(tensors, path)
    return path


def params_for(template, **values):
    return resolve_params(template, {"image_size": max(32, template.min_image_size), **values})


def assert_base_is(model, tensors, template):
    base = {k: v for k, v in model.state_dict().items() if not is_head(k, template.head_prefixes)}
    assert base, "the model has a base"
    for key, value in base.items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, tensors[key]), key


@pytest.mark.parametrize("template", WITH_TIMM, ids=lambda t: f"{t.task}-{t.name}")
def test_each_templates_hub_repository_is_timms_pretrained_config(template):
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(template.timm_pretrained)
    assert cfg is not None and cfg.num_classes == 1000, template.timm_pretrained
    assert hub_repo(template) == (cfg.hf_hub_id, cfg.hf_hub_filename or "model.safetensors")


def test_the_torchvision_files_are_torchvisions_imagenet_weights():
    import torchvision.models as models
    urls = {"resnext50_32x4d": models.ResNeXt50_32X4D_Weights.IMAGENET1K_V1.url,
            "inception_v3": models.Inception_V3_Weights.IMAGENET1K_V1.url}
    for template in all_templates():
        if template.torchvision_weights:
            assert urls[template.architecture].endswith("/" + template.torchvision_weights)


@pytest.mark.parametrize(("task", "name", "cache"), [
    ("classification", "ResNext", "hub"), ("embedding", "ResNext", "torchvision"),
    ("detection", "InceptionV2", "hub"), ("classification", "InceptionV2", "torchvision"),
])
def test_imagenet_is_found_in_each_cache_layout_and_loads_strictly(local_client, caches, task, name, cache):
    template = get_template(task, name)
    tensors = fabricate(template.architecture)
    path = (write_hub_cache if cache == "hub" else write_torchvision_cache)(template, tensors)
    assert local_client.weights.which(name if task != "detection" else f"detection/{name}")["path"] == path

    params, record = resolve_init_from(local_client.ctx, "app", template, params_for(template, init_from="imagenet"))
    assert record["source"] == f"{cache.replace('hub', 'hub-cache').replace('torchvision', 'torchvision-cache')}"
    assert record["architecture"] == template.architecture and params.pretrained_base
    uri, sha256 = split_sha256(params.init_from)
    assert sha256 == record["sha256"] == hashlib.sha256(local_client.ctx.storage.get_bytes(
        local_client.ctx.storage.key_for_uri(uri))).hexdigest()
    assert_base_is(build_model(task, name, params, 3), tensors, template)
    # the hit was copied into the registry: the next run (any node) reads it from object storage
    again, second = resolve_init_from(local_client.ctx, "app", template, params_for(template, init_from="imagenet"))
    assert second["source"] == "registry" and again.init_from == params.init_from


@pytest.mark.parametrize("template", WITH_TIMM, ids=lambda t: f"{t.task}-{t.name}")
def test_offline_with_nothing_registered_names_both_fixes(local_client, caches, template):
    with pytest.raises(WeightsError) as err:
        resolve_init_from(local_client.ctx, "app", template, params_for(template, init_from="imagenet"))
    text = str(err.value)
    assert f"deeptrain weights add {template.architecture} FILE" in text
    assert f"models--timm--{template.timm_pretrained}/snapshots/<revision>/model.safetensors" in text
    if template.torchvision_weights:
        assert f"hub/checkpoints/{template.torchvision_weights}" in text
    assert local_client.weights.which(template.name if template.task != "detection" else
                                      f"detection/{template.name}")["source"] == "none"


@pytest.mark.parametrize("task", ["classification", "embedding"])
def test_bn_inception_has_no_timm_weights_and_takes_a_converted_checkpoint(local_client, caches, tmp_path, task):
    template = get_template(task, "InceptionBatchNorm")
    with pytest.raises(WeightsError, match="timm and torchvision have no ImageNet weights for bn_inception.*"
                                           "deeptrain weights add bn_inception FILE"):
        resolve_init_from(local_client.ctx, "app", template, params_for(template, init_from="imagenet"))
    tensors = fabricate("bn_inception", seed=3)
    torch.save({"state_dict": {f"module.{k}": v for k, v in tensors.items()}}, tmp_path / "converted.pth")
    row = local_client.weights.add("InceptionBatchNorm", tmp_path / "converted.pth")
    assert row["architecture"] == "bn_inception" and not row["unchanged"]
    params, record = resolve_init_from(local_client.ctx, "app", template, params_for(template, init_from="imagenet"))
    assert record["source"] == "registry" and record["sha256"] == row["sha256"]
    assert_base_is(build_model(task, "InceptionBatchNorm", params, 4), tensors, template)


def test_add_checks_names_and_shapes_stores_once_and_remove_forgets(local_client, caches, tmp_path):
    resnext = fabricate("resnext50_32x4d")
    save_file(resnext, tmp_path / "resnext.safetensors")
    with pytest.raises(InvalidInput, match="not inception_v3 weights: it lacks the base tensor "
                                           "'Conv2d_1a_3x3.conv.weight'"):
        local_client.weights.add("InceptionV2", tmp_path / "resnext.safetensors")
    wrong = {**resnext, "layer1.0.conv1.weight": torch.zeros(7, 64, 1, 1)}
    save_file(wrong, tmp_path / "wrong.safetensors")
    with pytest.raises(InvalidInput, match=r"'layer1.0.conv1.weight' has shape \(7, 64, 1, 1\), the model's is "
                                           r"\(128, 64, 1, 1\)"):
        local_client.weights.add("ResNext", tmp_path / "wrong.safetensors")
    first = local_client.weights.add("ResNext", tmp_path / "resnext.safetensors")
    torch.save(resnext, tmp_path / "same.pt")  # the same tensors in torch's format: the same stored file
    second = local_client.weights.add("resnext50_32x4d", tmp_path / "same.pt")
    assert second["unchanged"] and second["sha256"] == first["sha256"]
    stored = list(local_client.ctx.storage.list("weights"))
    assert stored == [f"weights/resnext50_32x4d/{first['sha256']}.safetensors"]
    kept = load_safetensors(local_client.ctx.storage.get_bytes(stored[0]))
    assert "fc.weight" not in kept and torch.equal(kept["conv1.weight"], resnext["conv1.weight"])
    assert [r["architecture"] for r in local_client.weights.list()] == ["resnext50_32x4d"]
    assert local_client.weights.list()[0]["templates"] == ["classification/ResNext", "embedding/ResNext"]
    local_client.weights.remove("ResNext")
    assert local_client.weights.list() == [] and list(local_client.ctx.storage.list("weights")) == []
    with pytest.raises(NotFound, match="no weights 'imagenet' registered for resnext50_32x4d"):
        local_client.weights.remove("ResNext")


def test_the_default_falls_back_to_scratch_and_says_so(local_client, caches):
    template = get_template("classification", "ResNext")
    default = params_for(template)
    assert default.init_from == "imagenet-if-available" and not default.pretrained_base
    params, record = resolve_init_from(local_client.ctx, "app", template, default)
    assert params.init_from is None and not params.pretrained_base and params.base_lr_scale == 1.0
    assert record["source"] == "none" and "training from scratch" in record["note"]
    assert "deeptrain weights add resnext50_32x4d FILE" in record["note"]
    scratch, record = resolve_init_from(local_client.ctx, "app", template, params_for(template, init_from="scratch"))
    assert scratch.init_from is None and record == {"source": "none", "requested": "scratch"}


def test_a_hub_that_cannot_be_reached_is_no_error_for_the_default(local_client, caches, monkeypatch):
    """Online mode (HF_HUB_OFFLINE=0) on a machine that cannot reach the hub: the download fails, the default
    trains from scratch with its note, and imagenet names the fixes (never the hub's own exception)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "2")
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "2")
    template = get_template("classification", "ResNext")
    params, record = resolve_init_from(local_client.ctx, "app", template, params_for(template))
    assert params.init_from is None and "training from scratch" in record["note"]
    with pytest.raises(WeightsError, match="deeptrain weights add resnext50_32x4d FILE"):
        resolve_init_from(local_client.ctx, "app", template, params_for(template, init_from="imagenet"))


def test_a_planned_version_records_the_sha256_it_starts_from(local_client, caches):
    from deeptrain.jobs.plan import load_plan
    from deeptrain.jobs.train import queue_version

    c = local_client
    c.create_app("a")
    for i in range(8):
        c.add_input("a", imagegen.png_bytes((20 * i, 100, 30 * (i % 2))), concepts=["odd" if i % 2 else "even"],
                    split="test" if i >= 6 else "train", input_id=f"i{i}")
    c.create_model("a", "m", "classification", "ResNext", {"image_size": 32, "batch_size": 2})
    tensors = fabricate("resnext50_32x4d", seed=5)
    write_hub_cache(get_template("classification", "ResNext"), tensors)
    version, plan = queue_version(c.ctx, "a", "m", {"base_gradient_multiplier": 0.0}, None, 1)
    sha256 = plan.init_weights["sha256"]
    assert plan.init_weights["source"] == "hub-cache" and plan.init_weights["requested"] == "imagenet-if-available"
    assert version["params"]["init_from"].endswith(f"#sha256={sha256}") and plan.params.base_frozen
    saved = load_plan(c.ctx, version)
    assert saved.init_weights == plan.init_weights and saved.params == plan.params
    assert json.loads(plan.to_json())["init_weights"]["uri"].endswith(f"weights/resnext50_32x4d/{sha256}.safetensors")

    # a trained version of the app as init_from: its weights.safetensors, with their sha256
    from deeptrain.services import models as model_service

    trained = fabricate("resnext50_32x4d", seed=6)
    data = save_safetensors(trained)
    c.ctx.storage.put_bytes(f"{version['artifacts']}/weights.safetensors", data)
    with pytest.raises(WeightsError, match=f"init_from version {version['id']!r} is queued, not trained"):
        queue_version(c.ctx, "a", "m", {"init_from": version["id"]}, None, 1)
    model_service.update_version(c.ctx, "a", "m", version["id"], status="trained")
    _, from_version = queue_version(c.ctx, "a", "m", {"init_from": version["id"]}, None, 1)
    assert from_version.init_weights["source"] == "version"
    assert from_version.init_weights["sha256"] == hashlib.sha256(data).hexdigest()
    assert_base_is(build_model("classification", "ResNext", from_version.params, 2), trained,
                   get_template("classification", "ResNext"))


def test_weights_changed_after_planning_are_refused(tmp_path):
    save_file({"w": torch.ones(2)}, tmp_path / "w.safetensors")
    digest = hashlib.sha256((tmp_path / "w.safetensors").read_bytes()).hexdigest()
    assert torch.equal(load_state_dict_source(f"{tmp_path}/w.safetensors#sha256={digest}")["w"], torch.ones(2))
    save_file({"w": torch.zeros(2)}, tmp_path / "w.safetensors")
    with pytest.raises(InitFromError, match="changed since the run was planned"):
        load_state_dict_source(f"{tmp_path}/w.safetensors#sha256={digest}")


def test_the_model_builder_refuses_an_unplanned_imagenet():
    template = get_template("classification", "ResNext")
    with pytest.raises(InitFromError, match="resolved by the plan"):
        build_model("classification", "ResNext", params_for(template, init_from="imagenet"), 2)
