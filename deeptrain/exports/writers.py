"""Writing a traced graph to a file and running the file back: ONNX (legacy TorchScript-based
exporter, opset 17, run with onnxruntime) and ``torch.export`` (``.pt2`` ExportedProgram)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from deeptrain.errors import InvalidInput

OPSET = 17
INPUT_NAME = "images"


def _onnxruntime() -> Any:
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError:
        raise InvalidInput("ONNX export needs onnx and onnxruntime: pip install 'deeptrain[export]'") from None
    return onnxruntime


def write_onnx(graph: nn.Module, example: torch.Tensor, out: Path, task: str, outputs: list[str],
               metadata: dict[str, Any]) -> None:
    _onnxruntime()
    import onnx

    if task == "detection":
        dynamic = {INPUT_NAME: {2: "height", 3: "width"}, **{name: {0: "detections"} for name in outputs}}
    else:
        dynamic = {INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in outputs}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on constants (sizes stay symbolic: see graphs)
        torch.onnx.export(graph, (example,), str(out), input_names=[INPUT_NAME], output_names=outputs,
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
    proto = onnx.load(str(out))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    proto.doc_string = metadata.get("description", "")
    onnx.save(proto, str(out))


def run_onnx(path: Path, task: str, inputs: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
    """The outputs of the ONNX file per image (a batch of all images; detection one at a time)."""
    session = _onnxruntime().InferenceSession(str(path), providers=["CPUExecutionProvider"])
    if task == "detection":
        return [session.run(None, {INPUT_NAME: x[None]}) for x in inputs]
    (batch,) = session.run(None, {INPUT_NAME: np.stack(inputs)})
    return [[row] for row in batch]


def write_torch_export(graph: nn.Module, example: torch.Tensor, out: Path, task: str) -> torch.export.ExportedProgram:
    dims = {2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO} if task == "detection" else {0: torch.export.Dim.AUTO}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.export.export(graph, (example,), dynamic_shapes={"images": dims})
    torch.export.save(program, str(out))
    return program


@torch.no_grad()
def run_torch_export(path: Path, task: str, inputs: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
    module = torch.export.load(str(path)).module()
    if task == "detection":
        return [[t.numpy() for t in module(torch.from_numpy(x[None]))] for x in inputs]
    return [[row.numpy()] for row in module(torch.from_numpy(np.stack(inputs)))]
