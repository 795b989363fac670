"""The graph a classification or embedding version predicts with on CPU: its own ``predict``, with each batch norm
folded into the convolution before it and the convolutions run by oneDNN
(``torch.fx.experimental.optimization.optimize_for_inference``), built once per loaded version.

Why: PyTorch sends a 1x1 convolution of a batch under 16 on ONE thread to its slow non-oneDNN path, so a
single-threaded forward was 2-3x slower than half a two-threaded one, and serving could not run two forwards side
by side. The graph always takes oneDNN. Measured at 128 px, 2 images (an image and its flip), 2 cores:

    template (task)                 eager 1 thread   graph 1 thread   graph 2 threads   eager 2 threads
    ResNext (classification)        65.8 ms          36.3 ms          21.6 ms           24.6 ms
    InceptionBatchNorm              32.3 ms          22.0 ms          13.7 ms           18.6 ms

Two one-thread forwards side by side (``serve/predictor.py``'s lanes) then beat one two-thread forward, and
unlike a two-thread OpenMP team they do not stall at every barrier when another process takes a core.

The graph is then traced and frozen into TorchScript (``torch.jit.freeze``): its forward is one call into C++
that releases the GIL, where the FX graph took the GIL back at every operator, so lanes side by side and the
replica's event loop queued for it. ResNext, two lanes of one thread, an image and its flip: 16.9 -> 13.7 ms
a pass at 32 px, 40.6 -> 38.7 at 128, 151.6 -> 138.1 at 256; served at 32 px and 32 connections (model in the
gateway) 138 -> 152 images/s with the cores idle 11 % -> 5 % of the time.

The graph is checked against the eager model when it is built (two batch sizes, ``PARITY_ATOL``); a model FX cannot
trace, one on a GPU, a detector, or a graph that disagrees, predicts with the eager model (logged). Served and
offline predictions both go through ``deeptrain.inference``, so they use the same one.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

PARITY_ATOL = 1e-4  # largest difference from the eager model's output allowed (probabilities, unit embeddings)


class _Predict(nn.Module):
    """``model.predict`` as a module's forward, so that FX traces what is served."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model.predict(images)  # type: ignore[operator]


class InferenceGraph:
    """A built graph, with the ``predict`` that ``predict_with_flips`` calls."""

    def __init__(self, module: nn.Module):
        self.module = module

    def predict(self, images: Tensor) -> Tensor:
        return self.module(images)


def _frozen(graph: nn.Module, image_size: int) -> nn.Module:
    """The graph traced and frozen into TorchScript, or as it is where that fails: a TorchScript forward runs in
    C++ with the GIL released, so forwards side by side (and the replica's event loop) do not queue for the GIL
    at every operator (measured in the module's docstring)."""
    try:
        with warnings.catch_warnings():  # the tracer warns of Python values it records as constants
            warnings.simplefilter("ignore")
            example = torch.zeros(2, 3, image_size, image_size)
            return torch.jit.freeze(torch.jit.trace(graph.eval(), example, check_trace=False))
    except Exception as exc:  # noqa: BLE001 - the FX graph serves as it is
        log.warning("the inference graph stays in Python (%s: %s)", type(exc).__name__, exc)
        return graph


def inference_graph(model: nn.Module, task: str, image_size: int) -> InferenceGraph | None:
    """The graph of ``model`` (classification or embedding, eval mode, on CPU), or None where the eager model must
    predict: another task, a model on a GPU, one FX cannot trace, or a graph whose output differs."""
    from torch.fx.experimental import optimization

    if task not in ("classification", "embedding") or next(model.parameters()).device.type != "cpu":
        return None
    generator = torch.Generator().manual_seed(0)
    try:
        with torch.no_grad():
            with warnings.catch_warnings():  # its oneDNN modules are TorchScript ones, made here: they warn of it
                warnings.simplefilter("ignore", FutureWarning)
                graph = optimization.optimize_for_inference(_Predict(model).eval())
            graph = _frozen(graph, image_size)
            for batch in (1, 3):
                x = torch.randn(batch, 3, image_size, image_size, generator=generator)
                diff = float((graph(x) - model.predict(x)).abs().max())  # type: ignore[operator]
                if not diff <= PARITY_ATOL:
                    log.warning("the inference graph differs from the model by %.2g; predicting with the model", diff)
                    return None
    except Exception as exc:  # noqa: BLE001 - any model FX cannot take predicts as it is
        log.warning("no inference graph (%s: %s); predicting with the model", type(exc).__name__, exc)
        return None
    return InferenceGraph(graph)
