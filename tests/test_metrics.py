"""Classification metrics: every figure from one decision rule, and the relations between them.

Unit tests on synthetic score matrices (cheap), then the same relations on a real model
trained on Fashion-MNIST for both heads (softmax and sigmoid/logreg).
"""

from __future__ import annotations

import pytest
import torch

from deeptrain.training.metrics import (
    classification_metrics,
    reported_metrics,
    unreported_metric,
)

CONCEPTS = ["a", "b", "c", "d"]


def _single_label(n: int, c: int, seed: int, softmax: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores that lean towards the truth (so every cell of the matrix has some mass) and one-hot targets."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.randint(0, c, (n,), generator=g)
    targets = torch.nn.functional.one_hot(truth, c).float()
    logits = torch.randn(n, c, generator=g) + 1.5 * targets
    return (logits.softmax(1) if softmax else logits.sigmoid()), targets


def assert_matrix_relations(metrics: dict, scores: torch.Tensor, targets: torch.Tensor, concepts: list[str]) -> None:
    """recall = diagonal / row sum, precision = diagonal / column sum, F1 their harmonic mean, macro = mean,
    top1 = trace / total on single-label data, and the matrix is the argmax decision of these scores."""
    single = targets.sum(1) == 1
    expected = torch.zeros(len(concepts), len(concepts), dtype=torch.long)
    for t, p in zip(targets[single].argmax(1).tolist(), scores[single].argmax(1).tolist()):
        expected[t, p] += 1
    matrix = torch.tensor(metrics["confusion_matrix"])
    assert torch.equal(matrix, expected)
    for i, name in enumerate(concepts):
        figures = metrics["per_concept"][name]
        row, col, diag = int(matrix[i].sum()), int(matrix[:, i].sum()), int(matrix[i, i])
        assert figures["recall"] == pytest.approx(diag / row)
        assert figures["precision"] == pytest.approx(diag / col if col else 0.0)
        assert figures["f1"] == pytest.approx(2 * diag / (row + col))
    for name in ("precision", "recall", "f1"):
        values = [metrics["per_concept"][c][name] for c in concepts]
        assert metrics[f"macro_{name}"] == pytest.approx(sum(values) / len(values))
    if bool(single.all()):
        assert metrics["top1"] == pytest.approx(float(matrix.trace()) / float(matrix.sum()))


@pytest.mark.parametrize("logreg", [False, True], ids=["softmax", "logreg"])
def test_precision_recall_f1_and_top1_are_read_off_the_confusion_matrix(logreg):
    scores, targets = _single_label(300, 4, seed=1, softmax=not logreg)
    metrics = classification_metrics(scores, targets, CONCEPTS, logreg=logreg)
    assert_matrix_relations(metrics, scores, targets, CONCEPTS)
    assert 0.3 < metrics["top1"] < 1.0  # the synthetic scores are neither chance nor perfect


def test_top_k_is_left_out_when_k_is_not_below_the_number_of_concepts():
    for c, has_top5 in ((2, False), (4, False), (5, False), (6, True), (10, True)):
        scores, targets = _single_label(50, c, seed=c)
        metrics = classification_metrics(scores, targets, [f"c{i}" for i in range(c)], logreg=False)
        assert "top1" in metrics
        assert ("top5" in metrics) is has_top5, (c, sorted(metrics))
        assert ("top5" in reported_metrics("classification", c)) is has_top5
    assert reported_metrics("classification", 4) == ("top1", "macro_precision", "macro_recall", "macro_f1")


def test_asking_for_a_metric_a_model_does_not_report_names_what_it_does():
    assert unreported_metric("classification", "top5", 10) is None
    assert unreported_metric("classification", "top1") is None
    message = unreported_metric("classification", "top5", 4)
    assert "not reported by a model of 4 concepts" in message and "use one of top1, macro_precision" in message
    assert "is not one that classification reports; use one of top1, top5" in unreported_metric("classification",
                                                                                                 "map")


def test_logreg_thresholded_figures_are_named_and_counted_at_0_5_over_every_image():
    scores, targets = _single_label(200, 4, seed=2, softmax=False)
    targets[:20] = 0  # negatives: no concept
    targets[20:40, 0] = targets[20:40, 1] = 1  # two concepts each
    metrics = classification_metrics(scores, targets, CONCEPTS, logreg=True)
    multilabel = metrics["multilabel"]
    assert multilabel["threshold"] == 0.5 and multilabel["num_images"] == 200
    decided = scores > 0.5
    for i, name in enumerate(CONCEPTS):
        positive = targets[:, i] == 1
        tp = int((decided[:, i] & positive).sum())
        assert multilabel["per_concept"][name]["precision"] == pytest.approx(tp / int(decided[:, i].sum()))
        assert multilabel["per_concept"][name]["recall"] == pytest.approx(tp / int(positive.sum()))
    # the argmax figures count only the single-label images; the matrix relations still hold
    assert metrics["num_single_label"] == 160 == sum(map(sum, metrics["confusion_matrix"]))
    assert_matrix_relations(metrics, scores, targets, CONCEPTS)
    # top1 counts every image with a concept: a two-concept image is a hit when its best concept is either
    labelled = targets.sum(1) > 0
    hits = targets[labelled].gather(1, scores[labelled].argmax(1, keepdim=True)).sum()
    assert metrics["top1"] == pytest.approx(float(hits) / int(labelled.sum()))
    assert set(metrics["per_concept"]["a"]) == {"precision", "recall", "f1", "ap", "auc"}


def test_softmax_reports_no_thresholded_or_auc_figures():
    scores, targets = _single_label(100, 4, seed=3)
    metrics = classification_metrics(scores, targets, CONCEPTS, logreg=False)
    assert "multilabel" not in metrics and "macro_auc" not in metrics
    assert set(metrics["per_concept"]["a"]) == {"precision", "recall", "f1", "ap"}


def test_a_concept_without_test_images_has_no_recall_and_stays_out_of_the_macro_means():
    scores, targets = _single_label(120, 4, seed=4)
    keep = targets[:, 3] == 0
    scores, targets = scores[keep], targets[keep]  # concept d is never true (it may still be predicted)
    metrics = classification_metrics(scores, targets, CONCEPTS, logreg=False)
    d = metrics["per_concept"]["d"]
    assert d["recall"] is None and d["ap"] is None
    present = [metrics["per_concept"][c]["recall"] for c in CONCEPTS[:3]]
    assert metrics["macro_recall"] == pytest.approx(sum(present) / 3)
    assert sum(metrics["confusion_matrix"][3]) == 0


# --- the same relations on a real model: ResNext trained on 4 Fashion-MNIST classes ----------------

FASHION = {0: "t-shirt", 1: "trouser", 5: "sandal", 8: "bag"}


def _fashion_rows(split: str, per_class: int):
    import io

    import pyarrow as pa
    from PIL import Image

    from deeptrain.sample_data import load_fashion_mnist

    images, labels = load_fashion_mnist(split)
    rows, concepts, taken = [], [], dict.fromkeys(FASHION, 0)
    for image, label in zip(images, labels.tolist()):
        if label in taken and taken[label] < per_class:
            taken[label] += 1
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, format="PNG")
            rows.append(buf.getvalue())
            concepts.append([list(FASHION).index(label)])
    n = len(rows)
    return pa.table({"image": rows, "width": [28] * n, "height": [28] * n, "concepts": concepts,
                     "boxes": [[] for _ in range(n)]})


@pytest.fixture(scope="module")
def fashion_tables():
    return _fashion_rows("train", 60), _fashion_rows("test", 15)


@pytest.mark.parametrize("logreg", [False, True], ids=["softmax", "logreg"])
def test_a_trained_model_reports_metrics_that_agree_with_its_confusion_matrix(tmp_path, fashion_tables, logreg):
    from deeptrain.params import resolve_params
    from deeptrain.storage import Storage
    from deeptrain.templates import get_template
    from deeptrain.training.local import LocalData, LocalHost
    from deeptrain.training.loop import TrainSpec, run_training
    from deeptrain.training.preprocess import Preprocessor
    from deeptrain.training.report import write_report

    concepts = list(FASHION.values())
    params = resolve_params(get_template("classification", "ResNext"),
                            {"image_size": 32, "batch_size": 16, "num_epochs": 3, "init_epochs": 2, "step_epochs": 1,
                             "lrate": 0.05, "seed": 1, "logreg": logreg})
    pre = Preprocessor(task="classification", image_size=32, canvas=32, class_map=[0, 1, 2, 3], num_classes=4)
    host = LocalHost()
    result = run_training(TrainSpec(task="classification", template="ResNext", params=params, concept_ids=concepts,
                                    steps_per_epoch=15),
                          LocalData(*fashion_tables, pre, batch_size=16, seed=1), host)
    metrics, raw = result["metrics"], host.checkpoints[-1]["eval"]  # the test evaluation and its scores

    assert metrics["num_test"] == metrics["num_single_label"] == 60
    assert "top5" not in metrics  # 4 concepts: top-5 is always 1
    if not logreg:  # trained: above chance (0.25); the sigmoid head learns slower on this small budget
        assert metrics["top1"] > 0.35, metrics
    assert sum(1 for column in zip(*metrics["confusion_matrix"]) if sum(column)) >= 2  # not one concept for all
    assert_matrix_relations(metrics, raw["scores"], raw["targets"], concepts)
    assert ("multilabel" in metrics) is logreg and ("macro_auc" in metrics) is logreg
    if logreg:  # the thresholded figures: the same scores, each concept decided at 0.5
        decided, positive = raw["scores"] > 0.5, raw["targets"] == 1
        recall = (decided & positive).sum(0) / positive.sum(0)
        figures = metrics["multilabel"]["per_concept"]
        assert [figures[c]["recall"] for c in concepts] == pytest.approx(recall.tolist())

    report = write_report(Storage(str(tmp_path)), "v", "classification", concepts, result["history"], raw)
    assert report["metrics"]["confusion_matrix"] == metrics["confusion_matrix"]
    assert report["plots"] == ["confusion_matrix.png", "loss_lr.png", "pr_curves.png"]


@pytest.mark.parametrize("evaluated", ["test", "validation"])
def test_the_report_names_the_split_its_figures_are_from(tmp_path, evaluated):
    """A trial Tune's scheduler ended early has only validation evaluations: its report says so."""
    import json

    from deeptrain.storage import Storage
    from deeptrain.training.report import write_report

    scores, targets = _single_label(40, 4, seed=3)
    metrics = classification_metrics(scores, targets, CONCEPTS, logreg=False)
    epoch = {"epoch": 1, "train_loss": 1.0, "lr": 0.1, "images_per_s": 10.0, "seconds": 1.0,
             "metrics": {"epoch": 1, **metrics}, "test": {"epoch": 1, **metrics} if evaluated == "test" else {}}
    storage = Storage(str(tmp_path))
    report = write_report(storage, "v", "classification", CONCEPTS, [epoch], None)
    assert report["split"] == evaluated
    assert json.loads(storage.get_bytes("v/report.json"))["split"] == evaluated
    assert "confusion_matrix.png" in report["plots"]


def test_top1_breaks_ties_as_the_confusion_matrix_does():
    """Averaged flips can score two concepts exactly alike; top-1 and the matrix must pick the same one."""
    scores = torch.tensor([[0.5, 0.0, 0.0, 0.5], [0.0, 0.5, 0.5, 0.0], [0.0, 0.0, 1.0, 0.0], [0.5, 0.0, 0.0, 0.5]])
    targets = torch.eye(4)[[3, 1, 2, 0]]
    metrics = classification_metrics(scores, targets, CONCEPTS, logreg=False)
    assert_matrix_relations(metrics, scores, targets, CONCEPTS)
    assert metrics["top1"] == pytest.approx(0.75)
