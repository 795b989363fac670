"""Real data at full size: the 60,000 Fashion-MNIST training images through the image-folder importer."""

from __future__ import annotations

import pytest

from deeptrain.ids import slugify
from deeptrain.sample_data import FASHION_MNIST_CLASSES, write_fashion_mnist_folder


@pytest.mark.slow
def test_full_fashion_mnist_train_set(local_client, tmp_path):
    folder = tmp_path / "fmnist"
    assert write_fashion_mnist_folder(folder, "train") == 60_000
    local_client.create_app("fashion")
    report = local_client.import_inputs("fashion", folder, format="imagefolder", split="train")
    assert (report["imported"], report["rejected"]) == (60_000, [])
    assert report["duplicates"] == 0
    version = local_client.snapshot("fashion")
    counts = version["counts"]
    # no validation inputs imported: a tenth of train (by content hash, at most 6,000) is carved into validation
    carved = version["validation"]
    assert carved["source"] == "carved from train by content hash" and 5_700 < carved["count"] <= 6_000, carved
    assert counts["inputs"] == 60_000
    assert counts["splits"] == {"train": 60_000 - carved["count"], "validation": carved["count"], "test": 0}
    assert {c["name"] for c in version["concepts"]} == {n.replace("/", "-") for n in FASHION_MNIST_CLASSES}
    for concept in version["concepts"]:
        per = counts["concepts"][concept["id"]]
        assert per["train"] + per["validation"] == 6000 and per["validation"] > 450, concept
    assert [c["id"] for c in version["concepts"]] == sorted(slugify(n) for n in FASHION_MNIST_CLASSES)
    assert len(version["files"]) == 30  # ~2000 rows per file
