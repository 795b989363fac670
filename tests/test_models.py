"""The model templates: every registered template builds, trains, predicts and has the
published parameter count. Parametrized over ``all_templates()``, so a new template is
covered automatically."""

from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from deeptrain.models.tasks import (  # noqa: E402
    count_params,
    count_reference_params,
    hflip_boxes,
    predict_with_flips,
)
from deeptrain.templates import Template, TemplateError, all_templates, get_template, register  # noqa: E402

TEMPLATES = all_templates()
IDS = [f"{t.task}-{t.name}" for t in TEMPLATES]
NUM_CLASSES = 3

EXPECTED_KEYS = {
    ("classification", "InceptionV2"),
    ("classification", "InceptionBatchNorm"),
    ("classification", "InceptionResnetV2"),
    ("classification", "ResNext"),
    ("detection", "InceptionV2"),
    ("detection", "InceptionV4"),
    ("embedding", "InceptionBatchNorm"),
    ("embedding", "ResNext"),
}

parametrize_templates = pytest.mark.parametrize("template", TEMPLATES, ids=IDS)


def _builder_attr(template: Template, name: str, of_module: bool = False):
    """An attribute of the template's builder function (or of its module), None when it has none."""
    import importlib

    module_name, _, func = template.builder.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module if of_module else getattr(module, func), name, None)


def _ids(templates: list[Template]) -> list[str]:
    return [f"{t.task}-{t.name}" for t in templates]


# the cases a behaviour applies to; the others are not generated (no parametrized case passes by returning early)
ABOVE_32 = [t for t in TEMPLATES if t.min_image_size > 32]  # 32 is the smallest image_size any template takes
ON_A_CLASSIFIER_BACKBONE = [t for t in TEMPLATES if _builder_attr(t, "reference_classifier")]
FROM_TIMM = [t for t in TEMPLATES if t.task == "classification" and _builder_attr(t, "TIMM_NAME", of_module=True)]


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(min(2, os.cpu_count() or 1))


def make_targets(task: str, batch: int, size: int, num_classes: int = NUM_CLASSES):
    if task == "classification":
        targets = torch.zeros(batch, num_classes)
        for i in range(batch):
            targets[i, i % num_classes] = 1.0
        return targets
    if task == "embedding":
        return torch.arange(batch) % num_classes
    # detection: a few boxes on the first image, none on the second
    s = float(size)
    boxes = [
        torch.tensor([[0.1 * s, 0.1 * s, 0.6 * s, 0.7 * s], [0.4 * s, 0.3 * s, 0.95 * s, 0.9 * s]]),
        torch.zeros(0, 4),
    ]
    labels = [torch.tensor([1, num_classes - 1]), torch.zeros(0, dtype=torch.long)]
    return [{"boxes": boxes[i % 2], "labels": labels[i % 2]} for i in range(batch)]


def build(template: Template, num_classes: int = NUM_CLASSES, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return template.build(num_classes, **kwargs)


# ---------------------------------------------------------------- registry


def test_registry_has_the_eight_templates():
    assert {t.key for t in TEMPLATES} == EXPECTED_KEYS


def test_templates_import_without_torch():
    code = "import sys, deeptrain.templates as t; assert len(t.all_templates()) == 8; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_registry_refuses_duplicates():
    existing = get_template("classification", "ResNext")
    with pytest.raises(TemplateError, match="already registered"):
        register(existing)
    assert all_templates() == TEMPLATES


def test_unknown_template_names_closest_match():
    with pytest.raises(TemplateError, match="did you mean 'ResNext'"):
        get_template("classification", "ResNeXt")
    with pytest.raises(TemplateError, match="did you mean 'InceptionV4'"):
        get_template("detection", "InceptionV3")
    with pytest.raises(TemplateError, match="did you mean 'detection'"):
        get_template("detections", "InceptionV2")


@parametrize_templates
def test_template_metadata(template: Template):
    assert template.min_image_size % 16 == 0 and template.min_image_size >= 32
    assert template.reference and template.reference_num_params > 0
    assert template.head_prefixes and all(p.endswith(".") for p in template.head_prefixes)
    module, _, func = template.builder.partition(":")
    assert module.startswith("deeptrain.models.") and func


# ---------------------------------------------------------------- build / forward / backward


@parametrize_templates
def test_forward_backward_predict_at_min_size(template: Template):
    model = build(template)
    size = template.min_image_size
    torch.manual_seed(1)
    images = torch.randn(2, 3, size, size)
    targets = make_targets(template.task, 2, size)
    assert model.task == template.task

    model.train()
    losses = model.compute_loss(images, targets)
    assert "loss" in losses and losses["loss"].dim() == 0 and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)

    model.eval()
    with torch.no_grad():
        out = model(images)
    if template.task == "classification":
        assert out.shape == (2, NUM_CLASSES)
        probs = model.predict(images)
        assert probs.shape == (2, NUM_CLASSES) and ((probs >= 0) & (probs <= 1)).all()
    elif template.task == "embedding":
        assert out.shape == (2, 256)
        assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)
        emb = model.predict(images)
        assert emb.shape == (2, 256) and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    else:
        a = out["anchors"].shape[0]
        assert sum(out["num_anchors_per_level"]) == a
        assert out["cls_logits"].shape == (2, a, NUM_CLASSES)
        assert out["bbox_regression"].shape == (2, a, 1, 4)
        model.score_thresh = 0.0  # untrained scores sit at the 0.01 prior: keep them all
        dets = model.predict(images)
        assert isinstance(dets, list) and len(dets) == 2
        for d in dets:
            k = d["boxes"].shape[0]
            assert 0 < k <= model.detections_per_img
            assert d["boxes"].shape == (k, 4) and d["scores"].shape == (k,) and d["labels"].shape == (k,)
            assert d["labels"].dtype == torch.long and ((d["labels"] >= 0) & (d["labels"] < NUM_CLASSES)).all()
            assert (d["boxes"] >= 0).all() and (d["boxes"] <= size).all()
            assert (d["scores"][:-1] >= d["scores"][1:]).all()


@pytest.mark.parametrize("template", ABOVE_32, ids=_ids(ABOVE_32))
def test_min_image_size_is_the_smallest(template: Template):
    model = build(template).eval()
    smaller = template.min_image_size - 16
    with pytest.raises(RuntimeError), torch.no_grad():
        model(torch.randn(1, 3, smaller, smaller))


@parametrize_templates
def test_head_prefixes_split_head_and_base(template: Template):
    model = build(template)
    names = [n for n, _ in model.named_parameters()]
    head = [n for n in names if n.startswith(template.head_prefixes)]
    assert head, f"{template.head_prefixes} match no parameter"
    assert len(head) < len(names), f"{template.head_prefixes} match every parameter"
    for prefix in template.head_prefixes:
        assert any(n.startswith(prefix) for n in names), prefix


@pytest.mark.parametrize("template", ON_A_CLASSIFIER_BACKBONE, ids=_ids(ON_A_CLASSIFIER_BACKBONE))
def test_base_keeps_backbone_names(template: Template):
    """The base parameters of a detection or embedding model carry the names and shapes of its backbone's
    classifier, so a timm state_dict or a model of another task loads into the base."""
    import importlib

    model = build(template)
    ref_path = _builder_attr(template, "reference_classifier")
    ref_module, _, ref_func = ref_path.partition(":")
    reference = getattr(importlib.import_module(ref_module), ref_func)(num_classes=1000)
    ref_shapes = {n: p.shape for n, p in reference.named_parameters()}
    base = {n: p.shape for n, p in model.named_parameters() if not n.startswith(template.head_prefixes)}
    assert base and all(ref_shapes.get(n) == s for n, s in base.items())
    missing = model.load_state_dict(
        {k: v for k, v in reference.state_dict().items() if k in model.state_dict()}, strict=False
    ).missing_keys
    assert all(k.startswith(template.head_prefixes) for k in missing), missing


@pytest.mark.parametrize("template", FROM_TIMM, ids=lambda t: t.name)  # BN-Inception is written here, not timm's
def test_classifier_state_dict_matches_timm(template: Template):
    import timm

    timm_name = _builder_attr(template, "TIMM_NAME", of_module=True)
    ours = build(template, num_classes=1000).state_dict()
    theirs = timm.create_model(timm_name, pretrained=False, num_classes=1000).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


@parametrize_templates
def test_unknown_builder_kwarg_is_an_error(template: Template):
    with pytest.raises(TypeError):
        template.build(NUM_CLASSES, no_such_option=1)


# ---------------------------------------------------------------- overfit


@parametrize_templates
def test_overfits_a_tiny_batch(template: Template):
    model = build(template).train()
    size = template.min_image_size
    torch.manual_seed(2)
    images = torch.randn(2, 3, size, size)
    targets = make_targets(template.task, 2, size)
    if template.task == "detection":
        targets[1] = {"boxes": torch.tensor([[0.2 * size, 0.05 * size, 0.9 * size, 0.5 * size]]),
                      "labels": torch.tensor([0])}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        loss = model.compute_loss(images, targets)["loss"]
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert min(losses[-5:]) < 0.7 * losses[0], losses


# ---------------------------------------------------------------- parameter counts


@parametrize_templates
def test_parameter_count_matches_reference(template: Template):
    measured = count_reference_params(template)
    assert abs(measured - template.reference_num_params) <= 0.01 * template.reference_num_params, (
        f"{template.task}/{template.name}: {measured:,} vs reference {template.reference_num_params:,}"
    )


def test_pinned_parameter_counts():
    expected = {
        ("classification", "InceptionV2"): 23_834_568,
        ("classification", "InceptionBatchNorm"): 11_285_224,
        ("classification", "InceptionResnetV2"): 55_843_464,
        ("classification", "ResNext"): 25_028_904,
    }
    for key, n in expected.items():
        assert count_params(get_template(*key).build(1000)) == n, key


# ---------------------------------------------------------------- flips


@pytest.mark.parametrize(
    "template", [t for t in TEMPLATES if t.task != "detection"], ids=lambda t: f"{t.task}-{t.name}"
)
def test_predict_with_flips_averages(template: Template):
    model = build(template).eval()
    size = template.min_image_size
    torch.manual_seed(3)
    images = torch.randn(2, 3, size, size)
    plain, mirrored = model.predict(images), model.predict(images.flip(-1))
    assert torch.equal(predict_with_flips(model, template.task, images, False), plain)
    averaged = predict_with_flips(model, template.task, images, True)
    expected = (plain + mirrored) / 2
    if template.task == "embedding":
        expected = torch.nn.functional.normalize(expected, dim=1)
        assert torch.allclose(averaged.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(averaged, expected, atol=1e-6)


class BrightPatchDetector(nn.Module):
    """Finds the bright patch of channel 0; label 0 when it is in the left half, 1 when
    in the right half (so the plain and the mirrored pass give distinct detections)."""

    task = "detection"
    nms_thresh = 0.5
    detections_per_img = 100

    def predict(self, images):
        out = []
        for img in images:
            ys, xs = torch.where(img[0] > 0.5)
            box = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
            right = bool((box[0] + box[2]) / 2 > img.shape[-1] / 2)
            out.append(
                {
                    "boxes": box[None],
                    "scores": torch.tensor([0.6 if right else 0.9]),
                    "labels": torch.tensor([int(right)]),
                }
            )
        return out


def test_predict_with_flips_unflips_detection_boxes():
    images = torch.zeros(1, 3, 48, 64)
    images[0, 0, 10:30, 4:20] = 1.0  # patch x in [4, 20), y in [10, 30)
    model = BrightPatchDetector()
    (mirrored,) = model.predict(images.flip(-1))
    assert mirrored["boxes"].tolist() == [[44.0, 10.0, 60.0, 30.0]]

    (merged,) = predict_with_flips(model, "detection", images, True)
    # both passes survive (different labels); the mirrored one is back at the patch
    assert merged["labels"].tolist() == [0, 1]
    assert merged["scores"].tolist() == pytest.approx([0.9, 0.6])
    assert merged["boxes"].tolist() == [[4.0, 10.0, 20.0, 30.0]] * 2

    (single,) = predict_with_flips(model, "detection", images, False)
    assert single["boxes"].tolist() == [[4.0, 10.0, 20.0, 30.0]]


def test_predict_with_flips_merges_duplicates_with_nms():
    class SymmetricDetector(BrightPatchDetector):
        def predict(self, images):
            out = super().predict(images)
            for d in out:
                d["labels"] = torch.zeros_like(d["labels"])
            return out

    images = torch.zeros(1, 3, 48, 64)
    images[0, 0, 10:30, 4:20] = 1.0
    (merged,) = predict_with_flips(SymmetricDetector(), "detection", images, True)
    assert merged["boxes"].tolist() == [[4.0, 10.0, 20.0, 30.0]]
    assert merged["scores"].tolist() == pytest.approx([0.9])


def test_hflip_boxes_round_trip():
    boxes = torch.tensor([[1.0, 2.0, 10.0, 20.0], [30.0, 0.0, 64.0, 5.0]])
    flipped = hflip_boxes(boxes, 64)
    assert flipped.tolist() == [[54.0, 2.0, 63.0, 20.0], [0.0, 0.0, 34.0, 5.0]]
    assert torch.equal(hflip_boxes(flipped, 64), boxes)


@pytest.mark.parametrize("template", [t for t in TEMPLATES if t.task == "detection"], ids=lambda t: t.name)
def test_real_detector_predict_with_flips(template: Template):
    model = build(template).eval()
    model.score_thresh = 0.0
    size = template.min_image_size
    images = torch.randn(2, 3, size, size)
    dets = predict_with_flips(model, "detection", images, True)
    assert len(dets) == 2
    for d in dets:
        k = d["boxes"].shape[0]
        assert 0 < k <= model.detections_per_img and d["scores"].shape == (k,) and d["labels"].shape == (k,)


# ---------------------------------------------------------------- detection head


@pytest.mark.parametrize("template", [t for t in TEMPLATES if t.task == "detection"], ids=lambda t: t.name)
def test_feature_offsets_are_the_receptive_field_centres(template: Template):
    """Cell i of the stride-s tap is centred at FEATURE_OFFSETS + s * i: an unpadded
    (valid) network drops the remainder at the bottom/right, so its map gains a cell
    exactly at the input size where the grid is symmetric, 2 * offset + s * (m - 1)."""
    from deeptrain.models.detection import FEATURE_OFFSETS, FEATURE_TAPS, LEVEL_STRIDES

    model = build(template, num_classes=1).eval()
    for tap, stride, offset in zip(FEATURE_TAPS, LEVEL_STRIDES, FEATURE_OFFSETS):
        cells = 1 + next(m for m in range(1, 8) if 2 * offset + stride * m >= template.min_image_size)
        size = 2 * offset + stride * (cells - 1)
        assert size == int(size)
        for s, expected in ((int(size), cells), (int(size) - 1, cells - 1)):
            with torch.no_grad():
                (feat,) = model.forward_intermediates(torch.zeros(1, 3, s, s), indices=[tap], stop_early=True,
                                                      intermediates_only=True)
            assert feat.shape[-1] == expected, (tap, s)


@pytest.mark.parametrize("template", [t for t in TEMPLATES if t.task == "detection"], ids=lambda t: t.name)
def test_anchors_sit_on_the_feature_cells_and_scale_with_the_stride(template: Template):
    """Each level's anchors: 9 per cell, centred at offset + stride * (x, y), the square
    one of the middle scale about 4 x stride x 2**(1/3) px wide, at any image size."""
    from deeptrain.models.detection import FEATURE_OFFSETS, LEVEL_STRIDES

    model = build(template, num_classes=2).eval()
    for size in (template.min_image_size, 160):
        with torch.no_grad():
            out = model(torch.zeros(1, 3, size, size))
        levels = out["anchors"].split(out["num_anchors_per_level"])
        for level, stride, offset in zip(levels, LEVEL_STRIDES, FEATURE_OFFSETS):
            side = round((level.shape[0] / 9) ** 0.5)
            centres = ((level[:, :2] + level[:, 2:]) / 2).view(side, side, 9, 2)
            grid = torch.arange(side, dtype=torch.float32) * stride + offset
            assert torch.allclose(centres[0, :, 4, 0], grid, atol=0.5)  # x along the first row
            assert torch.allclose(centres[:, 0, 4, 1], grid, atol=0.5)  # y down the first column
            widths = level[:, 2] - level[:, 0]
            assert abs(float(widths.view(side, side, 9)[0, 0, 4]) - 4 * stride * 2 ** (1 / 3)) <= 1


def test_detection_loss_is_normalized_by_a_moving_average_of_the_foreground_anchors():
    """One box or none in a batch must not divide the background loss by ~1 anchor:
    the divisor is an EMA (0.9) of the foreground count, set by the first training
    batch, updated only in training, and part of the state_dict (resume continues it)."""
    from torchvision.ops import box_iou

    template = get_template("detection", "InceptionV2")
    model = build(template, num_classes=1).train()
    size = template.min_image_size
    images = torch.randn(2, 3, size, size)
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 50.0, 52.0]]), "labels": torch.tensor([0])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    assert float(model.head.loss_normalizer) == 0.0 and "head.loss_normalizer" in model.state_dict()
    with torch.no_grad():
        anchors = model(images)["anchors"]
    num_fg = int((model.matcher(box_iou(targets[0]["boxes"], anchors)) >= 0).sum())
    assert num_fg > 1
    model.compute_loss(images, targets)
    assert float(model.head.loss_normalizer) == num_fg
    model.compute_loss(images, [targets[1], targets[1]])  # no box at all: counts as 1
    assert float(model.head.loss_normalizer) == pytest.approx(0.9 * num_fg + 0.1)
    before = float(model.head.loss_normalizer)
    model.eval()
    model.compute_loss(images, targets)
    assert float(model.head.loss_normalizer) == before


@pytest.mark.parametrize("template", [t for t in TEMPLATES if t.task == "detection"], ids=lambda t: t.name)
def test_perclass_regression_channels(template: Template):
    k = 5
    shared = build(template, num_classes=k, use_perclass_regression=False)
    perclass = build(template, num_classes=k, use_perclass_regression=True)
    a = shared.anchor_generator.num_anchors_per_location()[0]
    assert a == 9
    assert shared.head.regression.bbox_reg.out_channels == a * 4
    assert perclass.head.regression.bbox_reg.out_channels == a * 4 * k
    assert shared.head.classification.cls_logits.out_channels == a * k
    size = template.min_image_size
    images = torch.randn(1, 3, size, size)
    with torch.no_grad():
        assert shared.eval()(images)["bbox_regression"].shape[2:] == (1, 4)
        assert perclass.eval()(images)["bbox_regression"].shape[2:] == (k, 4)


def test_perclass_regression_trains_the_gt_class_set_only():
    template = get_template("detection", "InceptionV2")
    k = 4
    model = build(template, num_classes=k, use_perclass_regression=True).train()
    size = template.min_image_size
    targets = [
        {"boxes": torch.tensor([[8.0, 8.0, 60.0, 70.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]  # batch 2: BatchNorm in training needs more than one value per channel at 1x1 maps
    model.compute_loss(torch.randn(2, 3, size, size), targets)["loss_box"].backward()
    grad = model.head.regression.bbox_reg.weight.grad  # [A*K*4, C, 3, 3], channel = (a, class, coord)
    per_class = grad.view(9, k, 4, -1).abs().sum(dim=(0, 2, 3))
    assert per_class[2] > 0
    assert torch.count_nonzero(per_class) == 1


def test_regression_selection_uses_the_given_class():
    template = get_template("detection", "InceptionV2")
    model = build(template, num_classes=3, use_perclass_regression=True)
    regression = torch.arange(2 * 3 * 4, dtype=torch.float).view(2, 3, 4)
    picked = model._select_regression(regression, torch.tensor([2, 0]))
    assert torch.equal(picked, torch.stack([regression[0, 2], regression[1, 0]]))
    model.use_perclass_regression = False
    assert torch.equal(model._select_regression(regression[:, :1], torch.tensor([2, 0])), regression[:, 0])


def test_detection_rejects_bad_labels_and_box_loss_choice():
    template = get_template("detection", "InceptionV2")
    model = build(template)
    size = template.min_image_size
    with pytest.raises(ValueError, match="labels"):
        model.compute_loss(
            torch.randn(1, 3, size, size),
            [{"boxes": torch.tensor([[1.0, 1.0, 20.0, 20.0]]), "labels": torch.tensor([NUM_CLASSES])}],
        )
    with pytest.raises(ValueError, match="box_loss"):
        template.build(NUM_CLASSES, box_loss="l2")
    giou = template.build(NUM_CLASSES, box_loss="giou").train()
    loss = giou.compute_loss(torch.randn(2, 3, size, size), make_targets("detection", 2, size))
    assert torch.isfinite(loss["loss"]) and loss["loss_box"] > 0


def test_softmax_classification_uses_argmax_of_multi_hot():
    template = get_template("classification", "InceptionBatchNorm")
    model = build(template, logreg=False).eval()
    images = torch.randn(2, 3, 32, 32)
    targets = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    loss = model.compute_loss(images, targets)["loss"]
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model(images), torch.tensor([1, 2]))
    assert torch.allclose(loss, expected)
    assert torch.allclose(model.predict(images).sum(dim=1), torch.ones(2))
