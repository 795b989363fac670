"""deeptrain/inference_graph.py: every classification and embedding template predicts through a graph equal to its
model; a detector, a model FX cannot trace and a graph that disagrees predict with the model itself."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from deeptrain.artifacts import LoadedModel
from deeptrain.inference import predict_model, runs_on_one_thread
from deeptrain.inference_graph import PARITY_ATOL, InferenceGraph, inference_graph
from deeptrain.params import HyperParams
from deeptrain.templates import all_templates
from deeptrain.training.loop import task_kwargs

GRAPHED = [t for t in all_templates() if t.task in ("classification", "embedding")]
DETECTORS = [t for t in all_templates() if t.task == "detection"]


def _built(template, size: int) -> nn.Module:
    torch.manual_seed(0)
    return template.build(3, **task_kwargs(template.task, HyperParams())).eval()


@pytest.mark.parametrize("template", GRAPHED, ids=lambda t: f"{t.task}-{t.name}")
def test_each_classifier_and_embedder_predicts_through_a_graph_equal_to_its_model(template):
    size = template.min_image_size
    model = _built(template, size)
    graph = inference_graph(model, template.task, size)
    assert isinstance(graph, InferenceGraph)
    # frozen TorchScript: one call into C++ that lets go of the GIL for the whole forward
    assert isinstance(graph.module, torch.jit.ScriptModule)
    with torch.no_grad():
        for batch in (2, 5):  # other batch sizes than the ones it was checked on
            x = torch.randn(batch, 3, size, size)
            assert (graph.predict(x) - model.predict(x)).abs().max() <= PARITY_ATOL


@pytest.mark.parametrize("template", DETECTORS, ids=lambda t: t.name)
def test_a_detector_predicts_with_its_model(template):
    model = _built(template, template.min_image_size)
    loaded = LoadedModel(model, {"task": "detection", "preprocessing": {"image_size": template.min_image_size}})
    assert predict_model(loaded) is model and not runs_on_one_thread(loaded)


class _Branchy(nn.Module):
    """A classifier whose forward branches on its input's values: FX cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        y = self.conv(x).mean((2, 3))
        return y if y.sum() > 0 else -y

    def predict(self, x):
        return torch.softmax(self(x), dim=1)


def test_a_model_fx_cannot_trace_predicts_with_itself_and_says_so(caplog):
    model = _Branchy().eval()
    loaded = LoadedModel(model, {"task": "classification", "preprocessing": {"image_size": 8}})
    with caplog.at_level(logging.WARNING, logger="deeptrain.inference_graph"):
        assert predict_model(loaded) is model
    assert "no inference graph" in caplog.text
    assert predict_model(loaded) is model and not runs_on_one_thread(loaded)  # decided once, kept


def test_a_graph_that_disagrees_with_its_model_is_not_used(monkeypatch, caplog):
    from torch.fx.experimental import optimization

    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    model.predict = model.forward  # type: ignore[method-assign]
    real = optimization.optimize_for_inference

    def off_by_a_little(module, *args, **kwargs):  # a miscompiled graph is a fault this test cannot cause
        graph = real(module, *args, **kwargs)
        return lambda x: graph(x) + 10 * PARITY_ATOL

    monkeypatch.setattr(optimization, "optimize_for_inference", off_by_a_little)
    with caplog.at_level(logging.WARNING, logger="deeptrain.inference_graph"):
        assert inference_graph(model, "classification", 8) is None
    assert "differs from the model" in caplog.text
