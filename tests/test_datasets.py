"""Dataset versions: schema, content hash, immutability, readers (pyarrow.dataset and Ray Data)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from deeptrain.errors import InvalidInput, NotFound
from deeptrain.services import datasets
from deeptrain.services.datasets import PARQUET_SCHEMA
from tests import imagegen


def _populate(client, app="ds", n=12):
    client.create_app(app)
    for i in range(n):
        client.add_input(
            app, imagegen.png_bytes((i * 20 % 256, 5, 5), size=(20 + i, 16)),
            concepts=["even" if i % 2 == 0 else "odd"], negatives=["three"] if i % 3 else [],
            regions=[{"concept": "box", "top_row": 0.1, "left_col": 0.2, "bottom_row": 0.6, "right_col": 0.9}] if i < 3 else [],
            split="test" if i >= 10 else None,
        )


def test_snapshot_schema_counts_and_hash(client, monkeypatch):
    monkeypatch.setattr(datasets, "ROWS_PER_FILE", 5)
    _populate(client)
    v = client.snapshot("ds")
    assert not v["existing"]
    assert [c["id"] for c in v["concepts"]] == ["box", "even", "odd", "three"]
    assert v["files"] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert v["counts"]["inputs"] == 12
    assert v["counts"]["splits"]["test"] >= 2
    assert v["counts"]["concepts"]["box"]["boxes"] == 3
    assert sum(v["counts"]["concepts"]["even"][s] for s in ("train", "validation", "test")) == 6

    table = client.open_dataset("ds", v["id"]).to_table()
    assert table.schema.equals(PARQUET_SCHEMA)
    assert table.num_rows == 12
    rows = {r["input_id"]: r for r in table.to_pylist()}
    inputs = {i["id"]: i for i in client.list_inputs("ds")}
    names = [c["id"] for c in v["concepts"]]
    for input_id, row in rows.items():
        inp = inputs[input_id]
        assert client.get_input_bytes("ds", input_id) == row["image"]
        assert (row["width"], row["height"]) == (inp["width"], inp["height"])
        assert [names[c] for c in row["concepts"]] == inp["concepts"]
        assert [names[c] for c in row["negatives"]] == inp["negatives"]
        assert len(row["boxes"]) == len(inp["regions"])
        assert row["split"] in ("train", "validation", "test")
    manifest = json.loads(client.ctx.storage.get_bytes(f"apps/ds/datasets/{v['id']}/_manifest.json"))
    assert manifest["content_hash"] == v["content_hash"]


def test_same_data_same_version_and_changes_make_new_one(client):
    _populate(client)
    first = client.snapshot("ds")
    again = client.snapshot("ds")
    assert again["existing"] and again["id"] == first["id"]
    client.add_input("ds", imagegen.png_bytes((1, 2, 3)), concepts=["odd"])
    changed = client.snapshot("ds")
    assert changed["id"] != first["id"] and not changed["existing"]
    assert [d["id"] for d in client.list_datasets("ds")] == [first["id"], changed["id"]]
    assert client.get_dataset("ds", first["id"])["counts"]["inputs"] == 12


def test_same_content_in_another_deployment_has_same_hash(client, tmp_path):
    from deeptrain.config import Settings
    from deeptrain.sdk import Client

    other = Client(Settings.from_env(env={"DEEPTRAIN_HOME": str(tmp_path / "other")}))
    _populate(client, "a")
    _populate(other, "a")
    assert client.snapshot("a")["content_hash"] == other.snapshot("a")["content_hash"]


def test_bad_snapshots(local_client):
    local_client.create_app("empty")
    with pytest.raises(InvalidInput, match="has no inputs to snapshot"):
        local_client.snapshot("empty")
    with pytest.raises(NotFound, match="dataset version 'nope' does not exist"):
        local_client.get_dataset("empty", "nope")
    with pytest.raises(InvalidInput, match="test_fraction"):
        local_client.snapshot("empty", test_fraction=1.5)


@pytest.mark.ray
def test_ray_data_reads_a_version(client, ray_cluster):
    import ray.data

    _populate(client)
    v = client.snapshot("ds")
    paths = datasets.dataset_paths(client.ctx, "ds", v["id"])
    ds = ray.data.read_parquet(paths, filesystem=client.ctx.storage.fs)
    rows = ds.take_all()
    assert len(rows) == 12
    assert {r["input_id"] for r in rows} == {i["id"] for i in client.list_inputs("ds")}
    assert isinstance(rows[0]["image"], bytes)
    assert pa.types.is_list(ds.schema().base_schema.field("boxes").type)
