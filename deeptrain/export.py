"""Export a trained version to ONNX or TorchScript, with a parity check against PyTorch.

The exported graph is the version's served output for a batch of preprocessed images:
probabilities (classification) or unit embeddings (embedding). Detection exports the
raw head outputs; anchor decoding and NMS stay in Python (torchvision ops).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from deeptrain.artifacts import LoadedModel
from deeptrain.errors import InvalidInput

FORMATS = ("onnx", "torchscript")


class _Served(nn.Module):
    def __init__(self, model: nn.Module, task: str):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, images: torch.Tensor) -> Any:
        out = self.model(images)
        if self.task == "classification":
            return torch.sigmoid(out) if getattr(self.model, "logreg", True) else torch.softmax(out, dim=1)
        return out


def _flat(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in _flat(out[k])]
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in _flat(item)]
    return []


def export_version(loaded: LoadedModel, fmt: str, out: str | Path) -> dict[str, Any]:
    """Write the export to ``out``; returns its path and the max abs difference to PyTorch."""
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    task = loaded.manifest["task"]
    size = loaded.manifest["preprocessing"]["image_size"]
    module = _Served(loaded.model, task).eval()
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = _flat(module(example))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "torchscript":
        with torch.no_grad():
            traced = torch.jit.trace(module, example, strict=False)
        traced.save(str(out))
        with torch.no_grad():
            got = _flat(torch.jit.load(str(out))(example))
    else:
        import onnxruntime

        torch.onnx.export(module, (example,), str(out), input_names=["images"], dynamo=False,
                          dynamic_axes={"images": {0: "batch"}}, opset_version=17)
        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = [torch.from_numpy(a) for a in session.run(None, {"images": example.numpy()})]
    diff = max(float((a - b).abs().max()) for a, b in zip(expected, got))
    return {"format": fmt, "path": str(out), "max_abs_diff": diff, "outputs": len(got)}
