"""Export then re-import gives back the same inputs and labels, for every format."""

from __future__ import annotations

import pytest

from deeptrain.formats import FORMATS
from deeptrain.sample_data import deepforest_data_dir
from tests import imagegen

# what each format can carry
CARRIES = {
    "imagefolder": {"concepts", "split"},  # split folders on top when every input has a split
    "csv": {"concepts", "negatives", "split", "metadata"},
    "jsonl": {"concepts", "negatives", "regions", "split", "metadata"},
    "coco": {"concepts", "negatives", "regions", "split"},
    "voc": {"regions"},
    "yolo": {"regions", "split"},  # images/<split>/ when every input has a split
}


def labels(client, app: str, fields: set[str]) -> dict[str, dict]:
    out = {}
    for inp in client.list_inputs(app):
        entry = {k: inp[k] for k in fields if k != "regions"}
        for k in ("concepts", "negatives"):
            if k in entry:
                entry[k] = sorted(entry[k])
        if "regions" in fields:
            entry["regions"] = sorted(
                (r["concept"], *(round(r[k], 6) for k in ("top_row", "left_col", "bottom_row", "right_col")))
                for r in inp["regions"]
            )
        out[inp["sha256"]] = entry
    return out


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_round_trip(client, tmp_path, fmt):
    assert set(CARRIES) == set(FORMATS)
    client.create_app("src")
    for i in range(4):
        regions = [{"concept": "Tree", "top_row": 0.1 * i, "left_col": 0.05, "bottom_row": 0.5 + 0.1 * i, "right_col": 0.7},
                   {"concept": "Car", "top_row": 0.2, "left_col": 0.3, "bottom_row": 0.3, "right_col": 0.9}][: 1 + i % 2]
        client.add_input(
            "src", imagegen.png_bytes((i, 50, 100), size=(40 + i, 30)),
            # an image folder holds one concept per image (a multi-label image is exported to each folder)
            concepts=["cat"] if fmt in ("voc", "yolo", "imagefolder") or i % 2 else ["dog", "cat"],
            negatives=[] if i % 2 else ["bird"], regions=regions, split=["train", "test"][i % 2],
            metadata={"i": i},
        )
    exported = client.export_inputs("src", tmp_path / "out", fmt)
    assert exported["exported"] == 4
    client.create_app("dst")
    path = {"csv": "labels.csv", "jsonl": "labels.jsonl", "coco": "annotations.json"}.get(fmt)
    report = client.import_inputs("dst", tmp_path / "out" / path if path else tmp_path / "out", format=fmt)
    assert (report["imported"], report["rejected"]) == (4, [])
    fields = CARRIES[fmt]
    assert labels(client, "dst", fields) == labels(client, "src", fields)


def test_deepforest_voc_round_trip_keeps_every_box(local_client, tmp_path):
    local_client.create_app("trees")
    local_client.import_inputs("trees", deepforest_data_dir(), format="voc")
    for fmt, path in (("voc", ""), ("coco", "annotations.json"), ("yolo", ""), ("jsonl", "labels.jsonl")):
        local_client.export_inputs("trees", tmp_path / fmt, fmt)
        local_client.create_app(f"trees-{fmt}")
        report = local_client.import_inputs(f"trees-{fmt}", tmp_path / fmt / path, format=fmt)
        assert (report["imported"], report["rejected"]) == (4, [])
        assert labels(local_client, f"trees-{fmt}", {"regions"}) == labels(local_client, "trees", {"regions"}), fmt
