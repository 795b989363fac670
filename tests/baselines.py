"""Model-free baselines for the learning tests: what raw pixels score with no trained model.

A learning test computes these in the same run, on the same images the model trains and is
tested on, and asserts the trained model beats the best of them by a stated margin. Each
baseline sees the pixels of every training image the model may train on (all of the
training folder), so a model that only learns what a lookup table of pixels knows fails.

* ``nearest_neighbour_top1``: 1-nearest-neighbour on pixels (cosine and Euclidean; both
  reported) against the training images.
* ``ridge_top1``: a linear classifier on pixels (one-vs-rest ridge regression on centred
  pixels, closed form); the best of a small grid of regularization strengths *chosen on
  the test split*, which favours the baseline.
* ``pixel_recall_at_1``: leave-one-out Recall@1 of cosine similarity on the test images'
  pixels, through the product's own ``embedding_metrics`` (the yardstick of the embedding
  version's ``recall@1``).
* ``pixel_search_precision_at_10``: each test image queries the pixels of every image
  (training and test, itself excluded) by cosine similarity: what the product's visual
  search gives with pixels instead of embeddings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deeptrain.training.metrics import embedding_metrics

RIDGE_LAMBDAS = (1.0, 10.0, 100.0, 1000.0)


def folder_pixels(root: Path) -> tuple[torch.Tensor, list[str]]:
    """(pixels float [N, D] in [0, 1], class folder name per image) of ``root/<class>/*.png``, sorted by path."""
    files = sorted(root.rglob("*.png"))
    if not files:
        raise FileNotFoundError(f"no PNG images under {root}")
    pixels = np.stack([np.asarray(Image.open(f).convert("L"), dtype=np.float32).ravel() / 255.0 for f in files])
    return torch.from_numpy(pixels), [f.parent.name for f in files]


def _indices(labels: list[str], classes: list[str]) -> torch.Tensor:
    return torch.tensor([classes.index(label) for label in labels])


def nearest_neighbour_top1(train: torch.Tensor, train_labels: list[str], test: torch.Tensor,
                           test_labels: list[str]) -> dict[str, float]:
    """Top-1 of the nearest training image's label, by cosine similarity and by Euclidean distance."""
    classes = sorted(set(train_labels))
    ytr, yte = _indices(train_labels, classes), _indices(test_labels, classes)
    unit = torch.nn.functional.normalize
    cosine = (unit(test, dim=1) @ unit(train, dim=1).T).argmax(1)
    euclidean = torch.cdist(test, train).argmin(1)
    return {"pixel 1-NN cosine": float((ytr[cosine] == yte).float().mean()),
            "pixel 1-NN euclidean": float((ytr[euclidean] == yte).float().mean())}


def ridge_top1(train: torch.Tensor, train_labels: list[str], test: torch.Tensor, test_labels: list[str]) -> float:
    """Top-1 of a one-vs-rest ridge classifier on centred pixels (with a bias), best over ``RIDGE_LAMBDAS``."""
    classes = sorted(set(train_labels))
    ytr, yte = _indices(train_labels, classes), _indices(test_labels, classes)
    mean = train.mean(0)
    x = torch.cat([train - mean, torch.ones(len(train), 1)], 1).double()
    xt = torch.cat([test - mean, torch.ones(len(test), 1)], 1).double()
    targets = 2 * torch.nn.functional.one_hot(ytr, len(classes)).double() - 1
    gram, rhs = x.T @ x, x.T @ targets
    best = 0.0
    for lam in RIDGE_LAMBDAS:
        weights = torch.linalg.solve(gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype), rhs)
        best = max(best, float(((xt @ weights).argmax(1) == yte).float().mean()))
    return best


def classification_baselines(train_dir: Path, test_dir: Path) -> dict[str, float]:
    """Top-1 on the test folder of each model-free classifier trained on the training folder's pixels."""
    train, train_labels = folder_pixels(train_dir)
    test, test_labels = folder_pixels(test_dir)
    return {**nearest_neighbour_top1(train, train_labels, test, test_labels),
            "pixel ridge classifier": ridge_top1(train, train_labels, test, test_labels)}


def pixel_recall_at_1(test_dir: Path) -> float:
    """Leave-one-out Recall@1 of pixel cosine similarity on the test folder (the product's yardstick)."""
    test, labels = folder_pixels(test_dir)
    return embedding_metrics(test, _indices(labels, sorted(set(labels))))["recall@1"]


def pixel_search_precision_at_10(other_dirs: list[Path], test_dir: Path) -> float:
    """Mean precision@10 of pixel cosine search over every image of ``other_dirs`` and ``test_dir``, one query
    per test image, the query itself excluded (what the product's search by input id does)."""
    parts = [folder_pixels(d) for d in [test_dir, *other_dirs]]
    index = torch.nn.functional.normalize(torch.cat([p for p, _ in parts]), dim=1)
    index_labels = [label for _, labels in parts for label in labels]
    queries, query_labels = parts[0]
    sim = index[: len(queries)] @ index.T
    sim.fill_diagonal_(-2.0)  # the test images come first in the index: the diagonal is each query itself
    top = sim.topk(10, dim=1).indices
    hits = [sum(index_labels[j] == label for j in row.tolist()) for row, label in zip(top, query_labels)]
    return float(np.mean(hits) / 10)
