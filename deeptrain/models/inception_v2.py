"""InceptionV2: the factorized Inception of Szegedy et al. 2016, "Rethinking the
Inception Architecture for Computer Vision" (arXiv:1512.00567), which timm calls
``inception_v3``; the auxiliary head is off.

The models subclass timm's ``InceptionV3``, so parameter names are timm's
(``Conv2d_1a_3x3.conv.weight`` ... ``fc.weight``). The detection model on this
backbone lives in ``deeptrain.models.detection``.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from timm.models.inception_v3 import InceptionV3  # noqa: E402

from deeptrain.models.tasks import ClassificationTask  # noqa: E402

__all__ = ["InceptionV2Classifier", "build_classifier"]

TIMM_NAME = "inception_v3"


class InceptionV2Classifier(ClassificationTask, InceptionV3):
    """Classification template InceptionV2: head = ``fc``."""

    def __init__(self, num_classes: int, logreg: bool = True) -> None:
        InceptionV3.__init__(self, num_classes=num_classes, aux_logits=False)
        self.logreg = bool(logreg)


def build_classifier(num_classes: int, *, logreg: bool = True) -> InceptionV2Classifier:
    return InceptionV2Classifier(num_classes, logreg=logreg)
