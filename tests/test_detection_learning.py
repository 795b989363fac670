"""Detection learns where the trees are (slow; CI runs it): deepforest's aerial images.

Training tiles come from one image (2019_YELL_2_528000_4978000_image_crop2), test
tiles from another (2019_YELL_2_541000_4977000_image_crop), both cut into 100 px
tiles. The recipe, all through the product (importers, ``client.train`` on Ray Train):

1. a classification InceptionV2 (the detector's backbone) learns tree vs background
   on 80 px patches cut from the training image around its boxes and away from them;
2. the detection InceptionV2 starts its base from that version (``init_from`` = the
   version's artifacts) and trains on the training tiles.

The control is the same run with every training tile's boxes moved to another tile:
the boxes keep their sizes and counts, so a model that only learns box-size priors
(or a pipeline that loses the alignment of boxes and pixels) scores like it; in these
dense canopies tree-sized boxes anywhere reach an AP50 of about 0.05.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch

from deeptrain.config import Settings
from deeptrain.formats import ExportItem, Region, voc
from deeptrain.sample_data import write_deepforest_patches, write_deepforest_tiles
from deeptrain.sdk import Client

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.timeout(1800)]

TRAIN_IMAGES = ["2019_YELL_2_528000_4978000_image_crop2"]
TEST_IMAGES = ["2019_YELL_2_541000_4977000_image_crop"]
TILE = 100
BASE = {"image_size": 80, "batch_size": 32, "lrate": 0.02, "num_epochs": 4, "init_epochs": 3, "step_epochs": 1,
        "test_freq": 4}
DETECT = {"image_size": 96, "batch_size": 8, "lrate": 0.01, "warmup_steps": 50, "num_epochs": 6, "init_epochs": 4,
          "step_epochs": 1, "base_gradient_multiplier": 1.0, "test_freq": 6}
AP50_THRESHOLD = 0.15


@pytest.fixture(scope="module")
def forest(tmp_path_factory):
    root = tmp_path_factory.mktemp("forest")
    write_deepforest_tiles(root / "train", TRAIN_IMAGES, tile=TILE)
    write_deepforest_tiles(root / "test", TEST_IMAGES, tile=TILE)
    write_deepforest_patches(root / "patches", TRAIN_IMAGES)
    _move_boxes(root / "train", root / "moved")
    return root


def _move_boxes(src, dst, seed: int = 0) -> None:
    """A copy of a VOC tile folder whose tiles carry the boxes of other tiles (a permutation)."""
    records = [voc.record_from_xml(p) for p in sorted((src / "Annotations").glob("*.xml"))]
    moved = np.random.default_rng(seed).permutation(len(records))
    items = []
    for record, other in zip(records, moved):
        data = record.read_bytes()
        regions = [Region(r.concept, r.top_row / TILE, r.left_col / TILE, r.bottom_row / TILE, r.right_col / TILE)
                   for r in records[other].regions]
        name = record.source.rsplit("/", 1)[-1].removesuffix(".xml")
        items.append(ExportItem(name, "png", TILE, TILE, lambda d=data: d, regions=regions))
    voc.write(items, dst, ["Tree"])


@pytest.fixture(scope="module")
def client(tmp_path_factory, ray_cluster) -> Client:
    return Client(Settings.from_env(env={"DEEPTRAIN_HOME": str(tmp_path_factory.mktemp("forest-home") / "home")}))


@pytest.fixture(scope="module")
def base(client, forest) -> str:
    """init_from for the detectors: a tree/background classifier's artifacts."""
    client.create_app("patches")
    client.import_inputs("patches", forest / "patches", format="imagefolder")
    client.create_model("patches", "trees", "classification", "InceptionV2", BASE)
    v = client.train("patches", "trees", workers=1)
    assert v["status"] == "trained", v["error"]
    print(f"base classifier: top1={v['metrics']['top1']:.3f} on {v['metrics']['num_test']} held-out patches")
    return client.ctx.storage.uri_for(v["artifacts"])


def _train_detector(client, forest, base: str, app: str, train_folder: str) -> dict:
    client.create_app(app)
    client.import_inputs(app, forest / train_folder, format="voc", split="train")
    client.import_inputs(app, forest / "test", format="voc", split="test")
    client.create_model(app, "trees", "detection", "InceptionV2", {**DETECT, "init_from": base})
    v = client.train(app, "trees", workers=1)
    assert v["status"] == "trained", v["error"]
    return v


def _untrained_ap50(client, app: str, version: dict, init_from: str | None) -> float:
    """AP50 of the detector before any step (fresh head; base from ``init_from`` or random)
    on the version's test split, evaluated by the training loop's own ``evaluate``."""
    import pyarrow.compute as pc

    from deeptrain.params import HyperParams
    from deeptrain.templates import get_template
    from deeptrain.training.local import LocalData
    from deeptrain.training.loop import build_model, evaluate
    from deeptrain.training.preprocess import Preprocessor

    params = HyperParams.model_validate({**version["params"], "init_from": init_from})
    table = client.open_dataset(app, version["dataset_version_id"]).to_table()
    test = table.filter(pc.equal(table["split"], "test"))
    pre = Preprocessor(task="detection", image_size=params.image_size, canvas=params.image_size, class_map=[0],
                       num_classes=1, max_boxes=max(len(b) for b in test.column("boxes").to_pylist()))
    torch.manual_seed(params.seed)
    model, _ = build_model("detection", "InceptionV2", params, 1)
    metrics, _ = evaluate(model, get_template("detection", "InceptionV2"),
                          LocalData(test, test, pre, batch_size=64).test_batches(), params, version["concepts"],
                          torch.device("cpu"))
    return metrics["ap50"]


def test_detector_finds_the_trees_of_another_image(client, forest, base):
    v = _train_detector(client, forest, base, "forest", "train")
    m = v["metrics"]
    assert m["num_test"] == 120
    untrained = _untrained_ap50(client, "forest", v, None)
    untrained_base = _untrained_ap50(client, "forest", v, base)
    print(f"detection: ap50={m['ap50']:.3f} map={m['map']:.3f}; untrained ap50={untrained:.3f} "
          f"(with the classifier base {untrained_base:.3f})")
    assert untrained < AP50_THRESHOLD and untrained_base < AP50_THRESHOLD
    assert m["ap50"] >= AP50_THRESHOLD


def test_moved_boxes_fail_the_threshold(client, forest, base):
    v = _train_detector(client, forest, base, "forest-moved", "moved")
    print(f"moved boxes: ap50={v['metrics']['ap50']:.3f} map={v['metrics']['map']:.3f}")
    assert v["metrics"]["ap50"] < AP50_THRESHOLD
