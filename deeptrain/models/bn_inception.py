"""BN-Inception (Ioffe & Szegedy 2015), written here from the paper.

Layout: Figure 5 of "Batch Normalization: Accelerating Deep Network Training by
Reducing Internal Covariate Shift" (arXiv:1502.03167), i.e. GoogLeNet with the
5x5 convolutions replaced by two stacked 3x3 ("double 3x3") convolutions, average or
max pooling in the pool branch as the table lists, stride-2 modules 3c and 4e (no
1x1 branch, max pooling passed through), batch normalization after every
convolution, and no dropout.

Two places where the table's "output size" column does not add up are resolved by
the per-branch widths, which the table also lists and which every implementation
follows: 4c and 4d output 160+160+160+128 = 608 and 96+192+192+128 = 608 channels
(the table says 576), and 4e outputs 192+256+608 = 1056 (the table says 1024).

Spatial layout: every convolution is padded to keep its size, the two stem poolings
use ``ceil_mode=True`` like the original Caffe network and the pools inside the
modules are padded, so 224 px gives the paper's 112/56/28/14/7 grids; the network runs at any input of 32 px or more (a 32 px
image reaches modules 5a/5b at 1x1).

Parameter names: ``conv1``, ``conv2_reduce``, ``conv2``, ``inception_3a`` ...
``inception_5b`` and the classifier ``fc`` (the head).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from deeptrain.models.tasks import ClassificationTask, EmbeddingHead, EmbeddingTask, reference_classifier

__all__ = ["BNInception", "build_classifier", "build_embedding"]

BN_EPS = 1e-5


class ConvBN(nn.Sequential):
    """Convolution (no bias) -> BatchNorm -> ReLU."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_chs, eps=BN_EPS),
            nn.ReLU(inplace=True),
        )


class InceptionModule(nn.Module):
    """One row of Figure 5.

    n1x1: width of the 1x1 branch (0 = no such branch, the stride-2 modules);
    n3x3red/n3x3: the 3x3 branch; nd3x3red/nd3x3: the double-3x3 branch;
    pool: "avg" or "max"; pool_proj: width of the 1x1 projection after the pooling
    (0 = pass the pooled input through, the stride-2 modules).
    """

    def __init__(
        self,
        in_chs: int,
        n1x1: int,
        n3x3red: int,
        n3x3: int,
        nd3x3red: int,
        nd3x3: int,
        pool: str,
        pool_proj: int,
        stride: int = 1,
    ) -> None:
        super().__init__()
        if stride == 2 and (n1x1 or pool_proj):
            raise ValueError("stride-2 modules have no 1x1 branch and pass the pooled input through")
        self.branch1x1 = ConvBN(in_chs, n1x1, 1) if n1x1 else None
        self.branch3x3 = nn.Sequential(ConvBN(in_chs, n3x3red, 1), ConvBN(n3x3red, n3x3, 3, stride))
        self.branch3x3dbl = nn.Sequential(
            ConvBN(in_chs, nd3x3red, 1),
            ConvBN(nd3x3red, nd3x3, 3),
            ConvBN(nd3x3, nd3x3, 3, stride),
        )
        # 3x3 pooling padded by 1 (floor mode) keeps the pooled map the same size as the
        # padded stride-s convolutions of the other branches for any input size.
        if pool == "avg":
            pool_layer: nn.Module = nn.AvgPool2d(3, stride, padding=1, count_include_pad=True)
        elif pool == "max":
            pool_layer = nn.MaxPool2d(3, stride, padding=1)
        else:
            raise ValueError(f"pool must be 'avg' or 'max', not {pool!r}")
        self.branch_pool = nn.Sequential(pool_layer, ConvBN(in_chs, pool_proj, 1)) if pool_proj else pool_layer
        self.out_chs = n1x1 + n3x3 + nd3x3 + (pool_proj or in_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [] if self.branch1x1 is None else [self.branch1x1(x)]
        outs += [self.branch3x3(x), self.branch3x3dbl(x), self.branch_pool(x)]
        return torch.cat(outs, 1)


# Figure 5: name, #1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3, pool, pool proj, stride
_FIGURE_5 = (
    ("3a", 64, 64, 64, 64, 96, "avg", 32, 1),
    ("3b", 64, 64, 96, 64, 96, "avg", 64, 1),
    ("3c", 0, 128, 160, 64, 96, "max", 0, 2),
    ("4a", 224, 64, 96, 96, 128, "avg", 128, 1),
    ("4b", 192, 96, 128, 96, 128, "avg", 128, 1),
    ("4c", 160, 128, 160, 128, 160, "avg", 128, 1),
    ("4d", 96, 128, 192, 160, 192, "avg", 128, 1),
    ("4e", 0, 128, 192, 192, 256, "max", 0, 2),
    ("5a", 352, 192, 320, 160, 224, "avg", 128, 1),
    ("5b", 352, 192, 320, 192, 224, "max", 128, 1),
)


class BNInception(nn.Module):
    """BN-Inception; ``num_classes=0`` leaves the classifier out (``fc`` = Identity).

    ``forward_features`` gives the 1024-channel stride-32 map, ``forward_head`` the
    global average pool (``pre_logits=True``) or the logits, like timm models.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = ConvBN(in_chans, 64, 7, stride=2)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2_reduce = ConvBN(64, 64, 1)
        self.conv2 = ConvBN(64, 192, 3)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        chs = 192
        for name, *widths in _FIGURE_5:
            module = InceptionModule(chs, *widths)
            self.add_module(f"inception_{name}", module)
            chs = module.out_chs
        self.num_features = chs  # 1024
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc: nn.Module = nn.Linear(chs, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(self.conv2_reduce(x)))
        for name, *_ in _FIGURE_5:
            x = getattr(self, f"inception_{name}")(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x).flatten(1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class BNInceptionClassifier(ClassificationTask, BNInception):
    """Classification template InceptionBatchNorm: head = ``fc``."""

    def __init__(self, num_classes: int, logreg: bool = True) -> None:
        BNInception.__init__(self, num_classes=num_classes)
        self.logreg = bool(logreg)


class BNInceptionEmbedding(EmbeddingTask, BNInception):
    """Embedding template InceptionBatchNorm: head = ``embedding`` (projection + proxies)."""

    def __init__(self, num_classes: int, embedding_dim: int = 256) -> None:
        BNInception.__init__(self, num_classes=0)
        self.embedding = EmbeddingHead(self.num_features, embedding_dim, num_classes)


def build_classifier(num_classes: int, *, logreg: bool = True) -> BNInceptionClassifier:
    return BNInceptionClassifier(num_classes, logreg=logreg)


@reference_classifier("deeptrain.models.bn_inception:build_classifier")
def build_embedding(num_classes: int, *, embedding_dim: int = 256) -> BNInceptionEmbedding:
    return BNInceptionEmbedding(num_classes, embedding_dim=embedding_dim)


def build_bn_inception(num_classes: int = 1000, **kwargs: Any) -> BNInception:
    """The bare network (used by the reference parameter count and the benchmark)."""
    return BNInception(num_classes=num_classes, **kwargs)
