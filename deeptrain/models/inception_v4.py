"""Inception-v4, Szegedy et al. 2017 (arXiv:1602.07261), as timm's ``inception_v4``.

Used as a detection backbone (``deeptrain.models.detection``); the classifier here
is the 1000-class reference for the parameter count and the benchmark.
Parameter names are timm's (``features.N...``, classifier ``last_linear``).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from timm.models.inception_v4 import InceptionV4  # noqa: E402

from deeptrain.models.tasks import ClassificationTask  # noqa: E402

__all__ = ["InceptionV4Classifier", "build_classifier"]

TIMM_NAME = "inception_v4"


class InceptionV4Classifier(ClassificationTask, InceptionV4):
    """Inception-v4 classifier: head = ``last_linear``."""

    def __init__(self, num_classes: int, logreg: bool = True) -> None:
        InceptionV4.__init__(self, num_classes=num_classes)
        self.logreg = bool(logreg)


def build_classifier(num_classes: int, *, logreg: bool = True) -> InceptionV4Classifier:
    return InceptionV4Classifier(num_classes, logreg=logreg)
