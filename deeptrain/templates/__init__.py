"""The eight built-in templates (SPEC §3). Torch-free: builders are import paths.

Head prefixes: classification heads are the backbone's classifier (``fc.``,
``classif.``); detection heads are the neck and the subnets (``fpn.``, ``head.``),
both new on top of an ImageNet backbone; embedding heads are the projection and the
concept proxies (``embedding.``). Every other parameter is the base and keeps its
backbone (timm) name, see ``deeptrain.models.tasks``.

``reference_num_params`` is the published count at 1000 classes: for detection and
embedding that of the backbone's classifier (``deeptrain.models.tasks.count_reference_params``
measures the same thing for a built template).
"""

from __future__ import annotations

from deeptrain.templates.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
    TASKS,
    Template,
    TemplateError,
    all_templates,
    architectures,
    get_template,
    register,
    templates_of_architecture,
)

__all__ = ["TASKS", "Template", "TemplateError", "all_templates", "architectures", "get_template", "register",
           "templates_of_architecture"]

# ImageNet weights of each backbone (``deeptrain weights``): timm's pretrained tag (its Hugging Face hub
# repository) and the file torchvision downloads; BN-Inception has neither (register a converted checkpoint)
_RESNEXT_W = dict(architecture="resnext50_32x4d", timm_pretrained="resnext50_32x4d.a1h_in1k",
                  torchvision_weights="resnext50_32x4d-7cdf4587.pth")
_INCEPTION_V3_W = dict(architecture="inception_v3", timm_pretrained="inception_v3.tv_in1k",
                       torchvision_weights="inception_v3_google-0cc3c7bd.pth")
_BN_INCEPTION_W = dict(architecture="bn_inception")
_INCEPTION_RESNET_V2_W = dict(architecture="inception_resnet_v2", timm_pretrained="inception_resnet_v2.tf_in1k")
_INCEPTION_V4_W = dict(architecture="inception_v4", timm_pretrained="inception_v4.tf_in1k")

# References (parameter counts at 1000 classes)
_INCEPTION_V3_REF = (
    "Szegedy et al. 2016, 'Rethinking the Inception Architecture for Computer Vision', "
    "arXiv:1512.00567 (timm inception_v3 without the auxiliary head: 23,834,568 params)"
)
_BN_INCEPTION_REF = (
    "Ioffe & Szegedy 2015, 'Batch Normalization', arXiv:1502.03167, Figure 5; "
    "11,295,240 params (≈11.3M) for the common Caffe BN-Inception port "
    "(e.g. Cadene pretrainedmodels 'bninception', convolutions with biases); "
    "this implementation drops the biases that BatchNorm makes redundant: 11,285,224"
)
_INCEPTION_RESNET_V2_REF = (
    "Szegedy et al. 2017, 'Inception-v4, Inception-ResNet and the Impact of Residual "
    "Connections on Learning', arXiv:1602.07261 (timm inception_resnet_v2: 55,843,464 params)"
)
_RESNEXT_REF = (
    "Xie et al. 2017, 'Aggregated Residual Transformations for Deep Neural Networks', "
    "arXiv:1611.05431 (ResNeXt-50 32x4d, timm/torchvision resnext50_32x4d: 25,028,904 params)"
)
_INCEPTION_V4_REF = (
    "Szegedy et al. 2017, arXiv:1602.07261, Inception-v4 (timm inception_v4: 42,679,816 params)"
)
_RETINANET_REF = (
    "head: Lin et al. 2017, 'Focal Loss for Dense Object Detection' (RetinaNet), "
    "FPN: Lin et al. 2017, arXiv:1612.03144; reference count = the backbone classifier, "
)

_DETECTION_DEFAULTS = {"image_size": 512, "batch_size": 16}

register(
    Template(
        task="classification",
        name="InceptionV2",
        builder="deeptrain.models.inception_v2:build_classifier",
        **_INCEPTION_V3_W,
        head_prefixes=("fc.",),
        min_image_size=80,
        description="Factorized Inception (the network timm calls inception_v3), auxiliary head off.",
        reference=_INCEPTION_V3_REF,
        reference_num_params=23_834_568,
        mean=INCEPTION_MEAN,
        std=INCEPTION_STD,
    )
)
register(
    Template(
        task="classification",
        name="InceptionBatchNorm",
        builder="deeptrain.models.bn_inception:build_classifier",
        **_BN_INCEPTION_W,
        head_prefixes=("fc.",),
        min_image_size=32,
        description="BN-Inception (Inception with batch normalization), written from the paper.",
        reference=_BN_INCEPTION_REF,
        reference_num_params=11_295_240,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
)
register(
    Template(
        task="classification",
        name="InceptionResnetV2",
        builder="deeptrain.models.inception_resnet_v2:build_classifier",
        **_INCEPTION_RESNET_V2_W,
        head_prefixes=("classif.",),
        min_image_size=80,
        description="Inception-ResNet-v2 (timm inception_resnet_v2).",
        reference=_INCEPTION_RESNET_V2_REF,
        reference_num_params=55_843_464,
        mean=INCEPTION_MEAN,
        std=INCEPTION_STD,
    )
)
register(
    Template(
        task="classification",
        name="ResNext",
        builder="deeptrain.models.resnext:build_classifier",
        **_RESNEXT_W,
        head_prefixes=("fc.",),
        min_image_size=32,
        description="ResNeXt-50 32x4d (timm resnext50_32x4d).",
        reference=_RESNEXT_REF,
        reference_num_params=25_028_904,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
)
register(
    Template(
        task="detection",
        name="InceptionV2",
        builder="deeptrain.models.detection:build_inception_v2_detector",
        **_INCEPTION_V3_W,
        head_prefixes=("fpn.", "head."),
        min_image_size=80,
        description="InceptionV2 (timm inception_v3) stride-8/16/32 features + FPN (P3-P7) + RetinaNet-style head.",
        reference=_RETINANET_REF + _INCEPTION_V3_REF,
        reference_num_params=23_834_568,
        mean=INCEPTION_MEAN,
        std=INCEPTION_STD,
        defaults=_DETECTION_DEFAULTS,
    )
)
register(
    Template(
        task="detection",
        name="InceptionV4",
        builder="deeptrain.models.detection:build_inception_v4_detector",
        **_INCEPTION_V4_W,
        head_prefixes=("fpn.", "head."),
        min_image_size=80,
        description="Inception-v4 (timm inception_v4) stride-8/16/32 features + FPN (P3-P7) + RetinaNet-style head.",
        reference=_RETINANET_REF + _INCEPTION_V4_REF,
        reference_num_params=42_679_816,
        mean=INCEPTION_MEAN,
        std=INCEPTION_STD,
        defaults=_DETECTION_DEFAULTS,
    )
)
register(
    Template(
        task="embedding",
        name="InceptionBatchNorm",
        builder="deeptrain.models.bn_inception:build_embedding",
        **_BN_INCEPTION_W,
        head_prefixes=("embedding.",),
        min_image_size=32,
        description="BN-Inception -> global average pool -> linear to embedding_dim -> L2 normalize; "
        "trained with a cosine-margin softmax over concept proxies.",
        reference=_BN_INCEPTION_REF,
        reference_num_params=11_295_240,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
)
register(
    Template(
        task="embedding",
        name="ResNext",
        builder="deeptrain.models.resnext:build_embedding",
        **_RESNEXT_W,
        head_prefixes=("embedding.",),
        min_image_size=32,
        description="ResNeXt-50 32x4d -> global average pool -> linear to embedding_dim -> L2 normalize; "
        "trained with a cosine-margin softmax over concept proxies.",
        reference=_RESNEXT_REF,
        reference_num_params=25_028_904,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
)
