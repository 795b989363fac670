"""ResNeXt-50 32x4d, Xie et al. 2017, "Aggregated Residual Transformations for Deep
Neural Networks" (arXiv:1611.05431), as timm's ``resnext50_32x4d``.

The models subclass timm's ``ResNet`` with the ``resnext50_32x4d`` arguments, so
parameter names are timm's (= torchvision's): ``conv1``, ``layer1``..``layer4``, ``fc``.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from timm.models.resnet import Bottleneck, ResNet  # noqa: E402

from deeptrain.models.tasks import (  # noqa: E402
    ClassificationTask,
    EmbeddingHead,
    EmbeddingTask,
    reference_classifier,
)

__all__ = ["ResNeXtClassifier", "ResNeXtEmbedding", "build_classifier", "build_embedding"]

TIMM_NAME = "resnext50_32x4d"
# timm's resnext50_32x4d entry point
RESNEXT50_32X4D = dict(block=Bottleneck, layers=(3, 4, 6, 3), cardinality=32, base_width=4)


class ResNeXtClassifier(ClassificationTask, ResNet):
    """Classification template ResNext: head = ``fc``."""

    def __init__(self, num_classes: int, logreg: bool = True) -> None:
        ResNet.__init__(self, num_classes=num_classes, **RESNEXT50_32X4D)
        self.logreg = bool(logreg)


class ResNeXtEmbedding(EmbeddingTask, ResNet):
    """Embedding template ResNext: head = ``embedding`` (projection + proxies)."""

    def __init__(self, num_classes: int, embedding_dim: int = 256) -> None:
        ResNet.__init__(self, num_classes=0, **RESNEXT50_32X4D)
        self.embedding = EmbeddingHead(self.num_features, embedding_dim, num_classes)


def build_classifier(num_classes: int, *, logreg: bool = True) -> ResNeXtClassifier:
    return ResNeXtClassifier(num_classes, logreg=logreg)


@reference_classifier("deeptrain.models.resnext:build_classifier")
def build_embedding(num_classes: int, *, embedding_dim: int = 256) -> ResNeXtEmbedding:
    return ResNeXtEmbedding(num_classes, embedding_dim=embedding_dim)
