"""Pretrained bases on the real servers (SeaweedFS S3 + PostgreSQL): ``deeptrain weights add`` registers a
checkpoint once, Ray Train workers read it from ``s3://`` and, with ``base_gradient_multiplier=0``, leave the
base bit-identical; an ``init_from=s3://…`` URI resolves and loads from the same server."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from deeptrain.sdk import Client
from deeptrain.templates import get_template
from deeptrain.training.init_from import split_sha256
from deeptrain.training.loop import build_model
from deeptrain.training.param_groups import is_head
from deeptrain.weights import resolve_init_from
from tests.conftest import import_fashion, make_settings, run_cli
from tests.test_pretrained_weights import assert_base_is, fabricate, params_for

TINY = {"image_size": 32, "num_epochs": 1, "batch_size": 20, "lrate": 0.05}
TEMPLATE = get_template("classification", "ResNext")


@pytest.fixture
def s3_client(request, tmp_path) -> Client:
    return Client(make_settings("s3", tmp_path, request))


@pytest.mark.s3
@pytest.mark.postgres
def test_an_s3_uri_resolves_to_its_sha256_and_loads_strictly(s3_client):
    uploaded = fabricate("resnext50_32x4d", seed=12)  # timm's names, with its 1000-way head
    s3_client.ctx.storage.put_bytes("uploads/resnext.safetensors", save_safetensors(uploaded))
    uri = s3_client.ctx.storage.uri_for("uploads/resnext.safetensors")
    assert uri.startswith("s3://")
    params, record = resolve_init_from(s3_client.ctx, "app", TEMPLATE, params_for(TEMPLATE, init_from=uri))
    assert record["source"] == "uri" and split_sha256(params.init_from) == (uri, record["sha256"])
    assert_base_is(build_model("classification", "ResNext", params, 10), uploaded, TEMPLATE)


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.s3
@pytest.mark.postgres
def test_weights_added_once_train_on_ray_workers_with_the_base_bit_identical(s3_client, tmp_path, ray_cluster,
                                                                              fashion_small):
    client = s3_client
    import_fashion(client, fashion_small)
    registered = fabricate("resnext50_32x4d", seed=11)
    (tmp_path / "resnext50_32x4d.safetensors").write_bytes(save_safetensors(registered))
    added = run_cli(client.settings, "weights", "add", "ResNext", str(tmp_path / "resnext50_32x4d.safetensors"),
                    "--json", check=True)
    row = json.loads(added.stdout)
    assert row["uri"].startswith("s3://") and client.weights.which("ResNext")["source"] == "registry"

    client.create_model("fashion", "clf", "classification", "ResNext", TINY)
    v = client.train("fashion", "clf", {"init_from": "imagenet", "base_gradient_multiplier": 0.0})
    assert v["status"] == "trained", v["error"]
    assert v["params"]["init_from"] == f"{row['uri']}#sha256={row['sha256']}"
    trained = load_safetensors(client.ctx.storage.get_bytes(f"{v['artifacts']}/weights.safetensors"))
    base = [k for k in trained if not is_head(k, TEMPLATE.head_prefixes) and not k.endswith("num_batches_tracked")]
    assert len(base) > 250
    for key in base:
        assert torch.equal(trained[key], registered[key]), key
