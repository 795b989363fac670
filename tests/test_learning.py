"""Learning on real images (slow; CI runs them): the trained models must beat model-free baselines.

Fashion-MNIST from Debian's dataset-fashion-mnist, image_size 32, evaluated on the test split
once after the last epoch: 2,000 of the official test images (200 per class) and 500
validation images (official training images 1,000-1,049 of each class, imported with split
"validation" so nothing is carved out of the training images). Classification trains on
the first 500 training images of each class (5,000); the embedding on the first 1,000 of
each class (10,000) with 5,000 items per epoch, so it costs what 5,000 images would.

Raw pixels already classify Fashion-MNIST well (1-nearest-neighbour about 0.82 top-1,
cosine Recall@1 about 0.78), so fixed thresholds prove little. Each test computes, in the
same run and on the same images, the model-free baselines of ``tests.baselines`` (pixel
1-NN and a ridge classifier on pixels fitted to all the training images; pixel-cosine
retrieval) and asserts the trained model beats the best of them by the margins the project
sets: classification top-1 by ``TOP1_MARGIN`` (0.03), embedding Recall@1 and search
precision@10 by ``RECALL1_MARGIN`` and ``PRECISION10_MARGIN`` (0.05).

The shuffled-label control must fail; it trains one epoch, not the full budget: with the
labels permuted across the images nothing it learns transfers to the test split, so its
test accuracy stays at chance however long it trains, while what it guards against (test
images or labels leaking into training, an evaluation that ignores the model) shows after
one epoch as well.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeptrain.ids import slugify
from deeptrain.sample_data import (
    FASHION_MNIST_CLASSES,
    class_folder_name,
    load_fashion_mnist,
    write_fashion_mnist_folder,
)
from tests import baselines

# a full run takes several minutes on 2 busy cores; the suite-wide 900 s limit is too tight
pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.timeout(1800)]

TRAIN_PER_CLASS, EMBEDDING_TRAIN_PER_CLASS, VALIDATION_PER_CLASS, TEST_PER_CLASS = 500, 1000, 50, 200
VALIDATION_SKIP = EMBEDDING_TRAIN_PER_CLASS  # validation images follow every training folder's images
# Budgets (Ray-free loop on these images, 1 thread, one run each; fresh-clone figures through Ray Train in the README):
# softmax: lrate 0.1 for 7 epochs reached top-1 0.846-0.851 (unstable: loss 3.15 in epoch 1), 0.02 with a one-epoch
#   warm-up for 10 epochs 0.870 (0.02 for 7 epochs 0.850, 0.05 0.828, batch 32 0.846);
# sigmoid: lrate 0.1 for 7 epochs 0.861 (10 epochs 0.862; 0.02 for 10 epochs 0.829: BCE needs the larger step);
# embedding (ResNext): 5,000 images, 10 epochs at 0.02: Recall@1 0.8375 (cosine margin 0.3: 0.838); 10,000 images
#   at 5,000 items per epoch, 10 epochs at 0.05: 0.863. More distinct images, not more passes, is what it lacked.
SCHEDULE_7 = {"image_size": 32, "batch_size": 64, "num_epochs": 7, "init_epochs": 4, "step_epochs": 1, "test_freq": 7}
SCHEDULE_10 = {**SCHEDULE_7, "num_epochs": 10, "init_epochs": 6, "test_freq": 10, "warmup_steps": 78}  # 78 = an epoch
CLASSIFICATION_BUDGET = {True: {**SCHEDULE_7, "lrate": 0.1, "logreg": True},
                         False: {**SCHEDULE_10, "lrate": 0.02, "logreg": False}}
EMBEDDING_BUDGET = {**SCHEDULE_10, "lrate": 0.05, "num_items_per_epoch": 10 * TRAIN_PER_CLASS}
# the embedding template: ResNext. InceptionBatchNorm under the same loss and budget underfits at image_size 32
# (5 epochs: train loss 1.14 against ResNext's 0.73, Recall@1 0.75-0.77 against 0.82, below pixels + 0.05)
EMBEDDING_TEMPLATE = "ResNext"
CONTROL_EPOCHS = 1
TOP1_MARGIN = 0.03  # classification top-1 over the best pixel classifier
RECALL1_MARGIN = 0.05  # embedding Recall@1 over pixel-cosine Recall@1
PRECISION10_MARGIN = 0.05  # visual search precision@10 over pixel-cosine search


def _write_validation(out: Path, skip: int, per_class: int) -> None:
    """Official training images ``skip`` .. ``skip + per_class`` of each class (disjoint from the training folder)."""
    images, labels = load_fashion_mnist("train")
    for c, name in enumerate(FASHION_MNIST_CLASSES):
        folder = out / class_folder_name(name)
        folder.mkdir(parents=True)
        for i in np.flatnonzero(labels == c)[skip : skip + per_class]:
            Image.fromarray(images[i], mode="L").save(folder / f"train-{i:05d}.png")


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    root = tmp_path_factory.mktemp("fashion-learning")
    write_fashion_mnist_folder(root / "train", "train", per_class=TRAIN_PER_CLASS)
    write_fashion_mnist_folder(root / "train-embedding", "train", per_class=EMBEDDING_TRAIN_PER_CLASS)
    _write_validation(root / "validation", VALIDATION_SKIP, VALIDATION_PER_CLASS)
    write_fashion_mnist_folder(root / "test", "test", per_class=TEST_PER_CLASS)
    return root


def _shuffled(train: Path) -> Path:
    """The same images, their labels permuted across the training images (an image folder beside ``train``)."""
    out = train.with_name(train.name + "-shuffled")
    files = sorted(train.rglob("*.png"))
    labels = np.random.default_rng(0).permutation([f.parent.name for f in files])
    for f, label in zip(files, labels):
        (out / label).mkdir(parents=True, exist_ok=True)
        (out / label / f.name).hardlink_to(f)
    moved = sum(f.parent.name != label for f, label in zip(files, labels))
    assert moved > 0.8 * len(files), moved  # most images changed label (chance of keeping one: 1/10)
    return out


@pytest.fixture(scope="module")
def pixel_classifiers(fashion) -> dict[str, float]:
    """Test top-1 of the model-free classifiers fitted to the training folder's pixels (this run)."""
    found = baselines.classification_baselines(fashion / "train", fashion / "test")
    print("model-free classification baselines (top-1): " + ", ".join(f"{k} {v:.4f}" for k, v in found.items()))
    return found


def _app(client, fashion, shuffle_labels: bool = False, train: str = "train") -> str:
    client.create_app("fashion")
    folder = _shuffled(fashion / train) if shuffle_labels else fashion / train
    client.import_inputs("fashion", folder, format="imagefolder", split="train")
    client.import_inputs("fashion", fashion / "validation", format="imagefolder", split="validation")
    client.import_inputs("fashion", fashion / "test", format="imagefolder", split="test")
    return "fashion"


# the default head (sigmoid, ``logreg`` true) in every `make test`; the softmax head's learning run is `make
# test-extended` (6 min more would take `make test` past its hour on CI; softmax is trained in make test by
# tests/test_metrics.py, which checks it beats chance and that its figures agree with its confusion matrix)
@pytest.mark.parametrize("logreg", [True, pytest.param(False, marks=pytest.mark.extended)], ids=["sigmoid", "softmax"])
def test_resnext_beats_pixel_classifiers_on_top1(local_client, ray_cluster, fashion, pixel_classifiers, logreg):
    app = _app(local_client, fashion)
    local_client.create_model(app, "clf", "classification", "ResNext", CLASSIFICATION_BUDGET[logreg])
    v = local_client.train(app, "clf", workers=1)
    assert v["status"] == "trained", v["error"]
    assert v["metrics"]["num_test"] == 10 * TEST_PER_CLASS
    best = max(pixel_classifiers.values())
    print(f"logreg={logreg}: top1={v['metrics']['top1']:.4f} top5={v['metrics']['top5']:.4f}; "
          f"best model-free {best:.4f}, needed {best + TOP1_MARGIN:.4f}")
    assert v["metrics"]["top1"] >= best + TOP1_MARGIN


def test_shuffled_labels_stay_near_chance(local_client, ray_cluster, fashion):
    app = _app(local_client, fashion, shuffle_labels=True)
    local_client.create_model(app, "clf", "classification", "ResNext",
                              {**CLASSIFICATION_BUDGET[True], "num_epochs": CONTROL_EPOCHS})
    v = local_client.train(app, "clf", workers=1)
    assert v["status"] == "trained", v["error"]
    print(f"shuffled labels: top1={v['metrics']['top1']:.4f}")
    assert v["metrics"]["top1"] < 0.3  # chance is 0.1


def test_embedding_beats_pixel_retrieval_on_recall_at_1_and_search(local_client, ray_cluster, fashion):
    pixel_recall = baselines.pixel_recall_at_1(fashion / "test")
    pixel_precision = baselines.pixel_search_precision_at_10([fashion / "train-embedding", fashion / "validation"],
                                                             fashion / "test")
    print(f"model-free retrieval baselines: pixel-cosine recall@1 {pixel_recall:.4f}, "
          f"search precision@10 {pixel_precision:.4f}")
    app = _app(local_client, fashion, train="train-embedding")
    local_client.create_model(app, "emb", "embedding", EMBEDDING_TEMPLATE, EMBEDDING_BUDGET)
    v = local_client.train(app, "emb", workers=1)
    assert v["status"] == "trained", v["error"]
    print(f"{EMBEDDING_TEMPLATE} embedding: recall@1={v['metrics']['recall@1']:.4f} map@r={v['metrics']['map@r']:.4f}; "
          f"needed {pixel_recall + RECALL1_MARGIN:.4f}")
    assert sorted(v["concepts"]) == sorted(slugify(class_folder_name(c)) for c in FASHION_MNIST_CLASSES)
    assert v["metrics"]["recall@1"] >= pixel_recall + RECALL1_MARGIN

    # visual search with this version: every input indexed, each held-out test image a query (itself excluded)
    local_client.build_search_index(app, "emb")
    queries = [i for i in local_client.list_inputs(app) if i["split"] == "test"]
    precision = np.mean([sum(q["concepts"][0] in h["concepts"] for h in local_client.search(app, input_id=q["id"]))
                         / 10 for q in queries])
    print(f"search: mean precision@10 over {len(queries)} held-out queries = {precision:.4f}; "
          f"needed {pixel_precision + PRECISION10_MARGIN:.4f}")
    assert precision >= pixel_precision + PRECISION10_MARGIN
