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
