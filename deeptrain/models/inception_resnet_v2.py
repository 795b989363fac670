"""Inception-ResNet-v2, Szegedy et al. 2017, "Inception-v4, Inception-ResNet and the
Impact of Residual Connections on Learning" (arXiv:1602.07261), as timm's
``inception_resnet_v2``; parameter names are timm's (classifier ``classif``).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from timm.models.inception_resnet_v2 import InceptionResnetV2  # noqa: E402

from deeptrain.models.tasks import ClassificationTask  # noqa: E402

__all__ = ["InceptionResnetV2Classifier", "build_classifier"]

TIMM_NAME = "inception_resnet_v2"


class InceptionResnetV2Classifier(ClassificationTask, InceptionResnetV2):
    """Classification template InceptionResnetV2: head = ``classif``."""

    def __init__(self, num_classes: int, logreg: bool = True) -> None:
        InceptionResnetV2.__init__(self, num_classes=num_classes)
        self.logreg = bool(logreg)


def build_classifier(num_classes: int, *, logreg: bool = True) -> InceptionResnetV2Classifier:
    return InceptionResnetV2Classifier(num_classes, logreg=logreg)
