"""Exports (ONNX, torch.export) reproduce the served path on real images.

One template per task: classification a version trained one epoch on Fashion-MNIST and recorded as
training records it, exported through ``Client.export`` (parity on the version's test split by
default); embedding and detection freshly initialised (parity needs no training) and loaded the way
``artifacts.load_model`` loads a version (manifest + eval-mode model), checked on Fashion-MNIST
test images and on crops of a deepforest aerial image (the random-init detection head is made to
score some boxes above the threshold, so that decoding and NMS are exercised).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime  # noqa: F401  (the export extra; `make` installs it: a missing one fails, never skips)
import pytest
import torch
from PIL import Image

from deeptrain.artifacts import LoadedModel
from deeptrain.errors import InvalidInput
from deeptrain.exports import FORMATS, export_version
from deeptrain.params import HyperParams
from deeptrain.sample_data import deepforest_data_dir, load_fashion_mnist
from deeptrain.templates import get_template
from deeptrain.training.loop import task_kwargs
from deeptrain.training.preprocess import canvas_size

CASES = {  # task -> (template, image_size)
    "classification": ("InceptionBatchNorm", 32),
    "embedding": ("InceptionBatchNorm", 32),
    "detection": ("InceptionV2", 96),
}
CONCEPTS = {"embedding": ["shirt", "boot", "bag"], "detection": ["tree", "shrub"]}  # the fresh models'
FASHION_IDS = ["Ankle boot", "Bag", "Coat", "Dress", "Pullover", "Sandal", "Shirt", "Sneaker", "T-shirt-top",
               "Trouser"]


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def fashion_images() -> list[bytes]:
    images, _ = load_fashion_mnist("test")  # real data is required: a missing package fails, never skips
    return [_png(images[k]) for k in range(24)]


@pytest.fixture(scope="module")
def forest_images() -> list[bytes]:
    """Real aerial crops: squares and two oblong ones (the detection graph takes any H, W)."""
    image = Image.open(deepforest_data_dir() / "OSBS_029.png").convert("RGB")
    boxes = [(0, 0, 120, 120), (150, 40, 270, 160), (250, 250, 400, 400), (0, 200, 200, 320), (60, 0, 180, 200)]
    return [_png(np.asarray(image.crop(b))) for b in boxes]


def _loaded(task: str) -> LoadedModel:
    template_name, size = CASES[task]
    template = get_template(task, template_name)
    params = HyperParams(image_size=size, average_horizontal_flips=True, detection_score_threshold=0.3,
                         use_perclass_regression=task == "detection", embedding_dim=32)
    torch.manual_seed(0)
    model = template.build(len(CONCEPTS[task]), **task_kwargs(task, params)).eval()
    if task == "detection":  # a prior that scores some (not all) boxes above 0.3, spread apart
        with torch.no_grad():  # measured: 36 to 64 boxes above 0.3 on the five crops
            model.head.regression.bbox_reg.weight.normal_(std=0.02)
            torch.manual_seed(1)
            model.head.classification.cls_logits.weight.normal_(std=0.015)
            model.head.classification.cls_logits.bias.fill_(-2.0)
    manifest = {"app_id": "a", "model_id": "m", "version_id": "v1", "task": task, "template": template_name,
                "params": params.model_dump(mode="json"), "concepts": CONCEPTS[task],
                "preprocessing": {"image_size": size, "mean": list(template.mean), "std": list(template.std),
                                  "canvas": canvas_size(size, 1.0), "resize": "shorter side to image_size, centre crop"}}
    return LoadedModel(model, manifest)


@pytest.fixture(scope="module")
def loaded() -> dict[str, LoadedModel]:
    return {task: _loaded(task) for task in CONCEPTS}


def _images(task: str, fashion_images, forest_images) -> list[bytes]:
    return forest_images if task == "detection" else fashion_images


@pytest.fixture(scope="module")
def onnx_exports(trained, loaded, fashion_images, forest_images, tmp_path_factory) -> dict[str, tuple[dict, Path]]:
    """One ONNX export per task, checked on real images: task -> (result, path)."""
    path = tmp_path_factory.mktemp("classification") / "model.onnx"
    out = {"classification": (trained.client.export("fa", "clf", trained.version, "onnx", path), path)}
    for task in CONCEPTS:
        path = tmp_path_factory.mktemp(task) / "model.onnx"
        result = export_version(loaded[task], "onnx", path, _images(task, fashion_images, forest_images),
                                concept_names={"shirt": "Shirt", "tree": "Tree"})
        out[task] = (result, path)
    return out


@pytest.mark.parametrize("task", list(CASES))
def test_onnx_export_reproduces_the_served_outputs_on_real_images(task, onnx_exports, fashion_images, forest_images):
    result, _ = onnx_exports[task]
    # classification: the version's test split by default, 2 garments of each of the 10 classes
    assert result["images"] == (20 if task == "classification" else len(_images(task, fashion_images, forest_images)))
    if task == "classification":
        assert result["top1_agreement"] == 1.0 and result["max_abs_diff"] < 1e-4
    elif task == "embedding":
        assert result["cosine_min"] >= 0.9999 and result["max_abs_diff"] < 1e-4
    else:
        assert result["counts_equal"] and result["labels_equal"]
        assert result["detections"] >= 2 * result["images"]  # decoding and NMS had boxes to keep
        assert result["max_box_diff"] < 1e-3 and result["max_abs_diff"] < 1e-4
    assert result["output_names"] == {"classification": ["probabilities"], "embedding": ["embeddings"],
                                      "detection": ["boxes", "scores", "labels"]}[task]


@pytest.mark.parametrize("task", list(CASES))
def test_onnx_export_carries_its_metadata_and_named_tensors(task, onnx_exports, loaded, trained):
    loaded_version = trained.client.load_version("fa", "clf", trained.version)
    manifest = (loaded_version if task == "classification" else loaded[task]).manifest
    proto = onnx.load(str(onnx_exports[task][1]))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["task"] == task and props["template"] == CASES[task][0]
    assert props["version_id"] == manifest["version_id"] and props["model_id"] == manifest["model_id"]
    concepts = json.loads(props["concepts"])
    if task == "classification":  # the version's concepts in output order, named as the app names them
        assert [c["id"] for c in concepts] == loaded_version.manifest["concepts"]
        assert sorted(c["name"] for c in concepts) == FASHION_IDS
    else:
        assert [c["id"] for c in concepts] == CONCEPTS[task]
        assert [c["name"] for c in concepts] == [{"shirt": "Shirt", "tree": "Tree"}.get(c, c) for c in CONCEPTS[task]]
    assert json.loads(props["image_size"]) == CASES[task][1]
    assert json.loads(props["mean"]) == manifest["preprocessing"]["mean"]
    assert json.loads(props["std"]) == manifest["preprocessing"]["std"]
    assert props["input_dtype"] == "uint8" and props["input_layout"] == "NCHW" and props["deeptrain_version"]
    assert [i.name for i in proto.graph.input] == ["images"]
    assert [o.name for o in proto.graph.output] == json.loads(props["outputs"])
    assert proto.opset_import[0].version >= 17
    if task == "detection":
        assert json.loads(props["detection_score_threshold"]) == 0.3
        assert any(n.op_type == "NonMaxSuppression" for n in proto.graph.node)


def test_onnx_graph_runs_on_raw_pixels_as_documented(onnx_exports, fashion_images):
    """The README's snippet: decode, resize, uint8 NCHW in, probabilities out, concepts from metadata."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_exports["classification"][1]), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    size, concepts = json.loads(meta["image_size"]), json.loads(meta["concepts"])
    image = Image.open(io.BytesIO(fashion_images[0])).convert("RGB").resize((size, size))
    (probs,) = session.run(None, {"images": np.asarray(image).transpose(2, 0, 1)[None]})
    assert probs.shape == (1, len(concepts)) and np.all((probs >= 0) & (probs <= 1))


@pytest.mark.parametrize("task", ["classification", pytest.param("embedding", marks=pytest.mark.slow)])
def test_torch_export_round_trip_matches_the_served_outputs(task, trained, loaded, fashion_images, tmp_path):
    model = trained.client.load_version("fa", "clf", trained.version) if task == "classification" else loaded[task]
    out = tmp_path / "model.pt2"
    result = export_version(model, "torch_export", out, fashion_images[:8])
    assert result["format"] == "torch_export" and out.exists()
    assert result["max_abs_diff"] < 1e-5 and result.get("top1_agreement", 1.0) == 1.0
    program = torch.export.load(str(out)).module()
    x = torch.zeros(3, 3, 32, 32, dtype=torch.uint8)  # another batch size than the example's
    assert program(x).shape[0] == 3


@pytest.mark.slow
def test_torch_export_detection_round_trip(loaded, forest_images, tmp_path):
    square = forest_images[:3]  # same size: the program's H, W ranges are those torch.export derives
    result = export_version(loaded["detection"], "torch_export", tmp_path / "det.pt2", square)
    assert result["counts_equal"] and result["labels_equal"] and result["max_box_diff"] < 1e-3


def test_torchscript_is_refused_naming_its_replacement(loaded, fashion_images, tmp_path):
    with pytest.raises(InvalidInput, match="replaced by 'torch_export'"):
        export_version(loaded["embedding"], "torchscript", tmp_path / "model.pt", fashion_images[:1])
    assert "torchscript" not in FORMATS


@pytest.mark.parametrize("fmt, name, match", [
    ("tflite", "model.tflite", "unknown export format 'tflite'"),
    ("onnx", "model.pt2", "written to a .onnx file"),
    ("torch_export", "model.onnx", "written to a .pt2 file"),
    ("onnx", "folder", "is a folder"),
])
def test_a_bad_format_or_path_is_refused_before_any_work(fmt, name, match, loaded, fashion_images, tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(InvalidInput, match=match):
        export_version(loaded["embedding"], fmt, tmp_path / name, fashion_images[:1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]


def test_parity_needs_real_images(loaded, tmp_path):
    with pytest.raises(InvalidInput, match="at least one image"):
        export_version(loaded["embedding"], "onnx", tmp_path / "model.onnx", [])
    with pytest.raises(InvalidInput, match="parity image 0"):
        export_version(loaded["embedding"], "onnx", tmp_path / "model.onnx", [b"not an image"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fashion_images):
    """A classification version trained one epoch in process on 40 garments and recorded as training
    records it (weights, manifest, status trained); its dataset has a test split."""
    import pyarrow.compute as pc

    from deeptrain.config import Settings
    from deeptrain.jobs.train import finish_version, queue_version
    from deeptrain.sample_data import write_fashion_mnist_folder
    from deeptrain.sdk import Client
    from deeptrain.services import datasets as dataset_service
    from deeptrain.services import models as model_service
    from deeptrain.training.local import LocalData, LocalHost
    from deeptrain.training.loop import TrainSpec, run_training
    from deeptrain.training.preprocess import Preprocessor

    root = tmp_path_factory.mktemp("trained")
    settings = Settings.from_env(env={"DEEPTRAIN_HOME": str(root / "home")})
    client = Client(settings)
    client.create_app("fa")
    for split in ("train", "test"):
        write_fashion_mnist_folder(root / split, split, per_class=2)
        client.import_inputs("fa", root / split, format="imagefolder", split=split)
    client.create_model("fa", "clf", "classification", "InceptionBatchNorm",
                        {"image_size": 32, "batch_size": 8, "num_epochs": 1})
    ctx = client.ctx
    dataset_id = dataset_service.snapshot(ctx, "fa")["id"]
    version, plan = queue_version(ctx, "fa", "clf", dataset_version_id=dataset_id)
    table = dataset_service.open_dataset(ctx, "fa", dataset_id).to_table()
    columns = ["image", "width", "height", "concepts", "boxes"]
    split = {s: table.filter(pc.field("split") == s).select(columns) for s in ("train", "test")}
    pre = Preprocessor(task="classification", image_size=32, canvas=plan.canvas, class_map=plan.class_map,
                       num_classes=len(plan.concepts))
    host = LocalHost()
    run_training(TrainSpec(task="classification", template="InceptionBatchNorm", params=plan.params,
                           concept_ids=plan.concepts, steps_per_epoch=plan.steps_per_epoch),
                 LocalData(split["train"], split["test"], pre, batch_size=8, seed=0), host)
    model_service.update_version(ctx, "fa", "clf", version["id"], status="training")
    finish_version(ctx, "fa", "clf", version["id"], plan, host.checkpoints[-1], "trained")
    return SimpleNamespace(settings=settings, client=client, version=version["id"], root=root)


@pytest.mark.slow
def test_cli_export_takes_an_images_folder(trained, tmp_path):
    from tests.conftest import run_cli

    out = tmp_path / "clf.onnx"
    proc = run_cli(trained.settings, "models", "export", "fa", "clf", trained.version, "-f", "onnx", "-o", str(out),
                   "--images", str(trained.root / "train"), "--max-images", "5", "--json", check=True)
    result = json.loads(proc.stdout)
    assert result["images"] == 5 and result["top1_agreement"] == 1.0 and out.exists()


def test_client_export_refuses_torchscript_before_reading_the_version(trained, tmp_path):
    with pytest.raises(InvalidInput, match="replaced by 'torch_export'"):
        trained.client.export("fa", "clf", "no-such-version", "torchscript", tmp_path / "m.pt")
