"""Export a trained version to ONNX or ``torch.export``, checked against the served path on real images.

``onnx``: one ``.onnx`` file (opset 17) with preprocessing and post-processing inside the graph
(``deeptrain.exports.graphs``): input ``images`` uint8 [N, 3, H, W] RGB 0-255, outputs
``probabilities`` / ``embeddings`` / ``boxes`` + ``scores`` + ``labels``; ``metadata_props``
carry the concepts in output order, image size, mean/std, input layout and output names
(``metadata``). Needs ``pip install 'deeptrain[export]'`` (onnx, onnxruntime).
``torch_export``: a ``.pt2`` ExportedProgram of the same graph (``torch.export.load(path).module()``).
TorchScript (deprecated upstream) was replaced by ``torch_export``; asking for it is an error saying so.

The parity check runs both on the images given (encoded bytes: the version's test images by
default, see ``Client.export``) and reports top-1 agreement (classification), cosine (embedding),
box and count agreement after NMS (detection) and the max abs difference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from deeptrain import __version__
from deeptrain.artifacts import LoadedModel
from deeptrain.errors import InvalidInput
from deeptrain.exports import parity, writers
from deeptrain.exports.graphs import OUTPUT_NAMES, served_graph

FORMATS = ("onnx", "torch_export")
SUFFIXES = {"onnx": ".onnx", "torch_export": ".pt2"}
REPLACED = {"torchscript": "torch_export"}

__all__ = ["FORMATS", "check_target", "export_version", "metadata"]


def check_target(fmt: str, out: Path) -> None:
    """``InvalidInput`` unless ``fmt`` is a format and ``out`` a file path with its suffix."""
    if fmt in REPLACED:
        raise InvalidInput(f"format {fmt!r} was replaced by {REPLACED[fmt]!r} (TorchScript is deprecated in PyTorch): "
                           f"use --format {REPLACED[fmt]}, or onnx")
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if out.exists() and out.is_dir():
        raise InvalidInput(f"export path {out} is a folder; give a file path such as {out / ('model' + SUFFIXES[fmt])}")
    if out.suffix != SUFFIXES[fmt]:
        raise InvalidInput(f"a {fmt} export is written to a {SUFFIXES[fmt]} file, got {out.name!r}")


def metadata(loaded: LoadedModel, flips: bool, score_threshold: float,
             names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``metadata_props`` of an ONNX export (values: strings, JSON for lists and numbers);
    ``names``: concept id -> display name (default the id)."""
    m = loaded.manifest
    pre = m["preprocessing"]
    names = names or {}
    props: dict[str, Any] = {
        "deeptrain_version": __version__, "task": m["task"], "template": m["template"],
        "app_id": m.get("app_id", ""), "model_id": m.get("model_id", ""), "version_id": m.get("version_id", ""),
        "concepts": [{"id": c, "name": names.get(c, c)} for c in m["concepts"]],
        "image_size": pre["image_size"], "mean": list(pre["mean"]), "std": list(pre["std"]),
        "resize": pre.get("resize", ""), "input_name": writers.INPUT_NAME,
        "input_layout": "NCHW", "input_dtype": "uint8", "input_range": "0-255 RGB, normalized inside the graph",
        "outputs": OUTPUT_NAMES[m["task"]], "average_horizontal_flips": flips,
        "description": f"deeptrain {m['task']} version {m.get('version_id', '')} ({m['template']})",
    }
    if m["task"] == "detection":
        props.update(detection_score_threshold=score_threshold, boxes="xyxy pixels of the input image",
                     batch="1 image per run; any H, W (shorter side image_size as served)")
    return props


def export_version(loaded: LoadedModel, fmt: str, out: str | Path, images: Sequence[bytes] = (), *,
                   score_threshold: float | None = None, concept_names: Mapping[str, str] | None = None
                   ) -> dict[str, Any]:
    """Write ``loaded`` to ``out`` in ``fmt`` and check it against the served path on ``images``
    (encoded image files, at least one). ``score_threshold``: detection's, default the version's
    ``detection_score_threshold``; ``concept_names``: id -> name for the metadata. Returns the path,
    output names and the parity figures."""
    out = Path(out)
    check_target(fmt, out)
    task = loaded.manifest["task"]
    flips = loaded.params.average_horizontal_flips
    threshold = loaded.params.detection_score_threshold if score_threshold is None else float(score_threshold)
    prepared, inputs = parity.graph_inputs(loaded, images)
    graph = served_graph(loaded.model, loaded.manifest, flips, threshold)
    example = torch.from_numpy(inputs[0][None] if task == "detection" else inputs[0][None].repeat(2, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "onnx":
        writers.write_onnx(graph, example, out, task, OUTPUT_NAMES[task], metadata(loaded, flips, threshold, concept_names))
        got = writers.run_onnx(out, task, inputs)
    else:
        writers.write_torch_export(graph, example, out, task)
        got = writers.run_torch_export(out, task, inputs)
    expected = parity.served_outputs(loaded, prepared, flips, threshold)
    return {"format": fmt, "path": str(out), "outputs": len(OUTPUT_NAMES[task]), "output_names": OUTPUT_NAMES[task],
            **parity.compare(task, expected, got)}
