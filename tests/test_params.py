"""The hyperparameter schema: defaults, derivation, strict types and specific errors."""

from __future__ import annotations

import json
import warnings

import pytest

from deeptrain.params import (
    DEFAULT_PER_ITEM_LRATE,
    HyperParams,
    ParamError,
    describe_params,
    param_names,
    parse_cli_params,
    resolve_params,
)
from deeptrain.errors import InvalidInput
from deeptrain.templates.registry import Template


def _template(min_image_size: int = 32, defaults: dict | None = None, task: str = "classification") -> Template:
    # a throwaway template, never registered
    return Template(task=task, name="Tiny", builder="tests:nothing", head_prefixes=("fc.",),
                    min_image_size=min_image_size, description="test", reference="test",
                    reference_num_params=0, defaults=defaults or {})


CLS = _template()
MIN80 = _template(min_image_size=80)
DET = _template(defaults={"image_size": 512, "batch_size": 16}, task="detection")


def _error(overrides, template=CLS, **kw) -> str:
    with pytest.raises(ParamError) as info:
        resolve_params(template, overrides, **kw)
    assert isinstance(info.value, ValueError)
    return str(info.value)


def test_defaults_and_derived_lrate():
    p = resolve_params(CLS, {})
    assert (p.batch_size, p.image_size, p.init_epochs, p.step_epochs, p.num_epochs) == (64, 256, 25, 7, 65)
    assert p.per_item_lrate == DEFAULT_PER_ITEM_LRATE
    assert p.lrate == pytest.approx(7.8125e-5 * 64) == pytest.approx(0.005)
    assert (p.lrate_step_factor, p.momentum, p.weight_decay, p.embedding_dim) == (0.5, 0.9, 1e-4, 256)
    assert (p.init_from, p.seed, p.num_workers, p.use_gpu, p.precision, p.test_fraction, p.warmup_steps) == (
        None, 0, 1, None, "fp32", 0.1, 0)
    assert p.average_horizontal_flips is True and p.logreg is True and p.use_perclass_regression is False


def test_per_128_lrate_and_explicit_lrate():
    p = resolve_params(CLS, {"per_128_lrate": 0.1})
    assert p.lrate == pytest.approx(0.05) and p.per_item_lrate is None and p.lrate_source() == "per_128_lrate"
    p = resolve_params(CLS, {"per_item_lrate": 1e-3, "batch_size": 32})
    assert p.lrate == pytest.approx(0.032)
    p = resolve_params(CLS, {"lrate": 0.2})
    assert p.lrate == 0.2 and p.per_item_lrate is None and p.lrate_source() == "lrate"


def test_template_defaults_and_overrides():
    p = resolve_params(DET, {})
    assert p.image_size == 512 and p.batch_size == 16 and p.lrate == pytest.approx(7.8125e-5 * 16)
    p = resolve_params(DET, {"image_size": 320})
    assert p.image_size == 320
    # a user's learning rate replaces one from the template's defaults
    p = resolve_params(_template(defaults={"per_128_lrate": 0.2}), {"lrate": 0.01})
    assert p.lrate == 0.01 and p.per_128_lrate is None


def test_json_round_trip():
    p = resolve_params(DET, {"per_128_lrate": 0.1, "init_from": "file:///tmp/w.safetensors", "use_gpu": True,
                             "precision": "bf16", "base_gradient_multiplier": 0.0})
    data = p.model_dump(mode="json")
    json.dumps(data)
    assert HyperParams.model_validate(data) == p
    assert HyperParams.model_validate_json(p.model_dump_json()) == p


def test_real_templates_resolve():
    from deeptrain.templates import all_templates

    for t in all_templates():
        p = resolve_params(t, {})
        assert p.image_size >= t.min_image_size
        assert len(describe_params(t)) == len(param_names())


def test_unknown_name_shows_closest_match_and_valid_names():
    msg = _error({"lrat": 0.1})
    assert "'lrat'" in msg and "did you mean 'lrate'" in msg and "batch_size" in msg and "valid parameters" in msg
    msg = _error({"batchsize": 8})
    assert "did you mean 'batch_size'" in msg


@pytest.mark.parametrize("value", ["abc", True, 1.5, "64"])
def test_wrong_type_for_int(value):
    msg = _error({"batch_size": value})
    assert "batch_size" in msg and repr(value) in msg and "expected an integer" in msg


def test_wrong_type_for_bool_and_float():
    msg = _error({"logreg": "maybe"})
    assert "logreg" in msg and "'maybe'" in msg and "true or false" in msg
    msg = _error({"lrate": "fast"})
    assert "lrate" in msg and "'fast'" in msg and "number" in msg
    msg = _error({"momentum": True})
    assert "momentum" in msg and "number" in msg


@pytest.mark.parametrize(("overrides", "fragments"), [
    ({"batch_size": 0}, ["batch_size=0", ">= 1", "1..4096"]),
    ({"batch_size": 5000}, ["batch_size=5000", "<= 4096"]),
    ({"detection_score_threshold": 1.5}, ["detection_score_threshold=1.5", "<= 1"]),
    ({"detection_score_threshold": -0.1}, ["detection_score_threshold=-0.1", ">= 0"]),
    ({"image_size": 1040}, ["image_size=1040", "<= 1024"]),
    ({"image_size": 40}, ["image_size=40", "multiple of 16"]),
    ({"image_size": 16}, ["image_size=16", ">= 32"]),
    ({"num_epochs": 0}, ["num_epochs=0", ">= 1"]),
    ({"base_gradient_multiplier": -1.0}, ["base_gradient_multiplier=-1.0", ">= 0"]),
    ({"lrate": 0.0}, ["lrate=0.0", "> 0"]),
    ({"lrate": float("inf")}, ["lrate=inf", "finite"]),
    ({"test_fraction": 1.0}, ["test_fraction=1.0", "< 1"]),
    ({"precision": "fp8"}, ["precision='fp8'", "'fp32'", "'bf16'", "'fp16'"]),
    ({"init_from": ""}, ["init_from=''", "empty"]),
    ({"warmup_steps": -1}, ["warmup_steps=-1", ">= 0"]),
    ({"warmup_steps": 2.5}, ["warmup_steps=2.5", "integer"]),
])
def test_out_of_range(overrides, fragments):
    msg = _error(overrides)
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)


def test_error_attributes_and_several_problems():
    with pytest.raises(ParamError) as info:
        resolve_params(CLS, {"batch_size": 0, "image_size": 40})
    err = info.value
    assert (err.param, err.value) == ("batch_size", 0)
    assert {p for p, _, _ in err.problems} == {"batch_size", "image_size"}
    assert "batch_size=0" in str(err) and "image_size=40" in str(err)


def test_two_learning_rates():
    msg = _error({"lrate": 0.1, "per_item_lrate": 0.001})
    assert "lrate" in msg and "per_item_lrate" in msg and "at most one" in msg
    msg = _error({"per_128_lrate": 0.1, "per_item_lrate": 0.001})
    assert "per_128_lrate" in msg and "per_item_lrate" in msg
    # None means "not given"
    assert resolve_params(CLS, {"lrate": 0.1, "per_item_lrate": None}).lrate == 0.1


def test_image_size_below_template_minimum():
    msg = _error({"image_size": 64}, template=MIN80)
    assert "image_size=64" in msg and "80" in msg and "Tiny" in msg
    assert resolve_params(MIN80, {"image_size": 80}).image_size == 80


def test_batch_size_divisible_by_workers():
    msg = _error({"batch_size": 65, "num_workers": 2})
    assert "batch_size 65 is not divisible by 2 workers" in msg
    msg = _error({"batch_size": 65}, num_workers=2)
    assert "batch_size 65 is not divisible by 2 workers" in msg
    assert resolve_params(CLS, {"batch_size": 64, "num_workers": 4}).batch_size == 64


def test_base_gradient_multiplier_without_init_from_warns():
    with pytest.warns(UserWarning, match="ignored without init_from"):
        p = resolve_params(CLS, {"base_gradient_multiplier": 0.0})
    assert p.base_gradient_multiplier == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve_params(CLS, {"base_gradient_multiplier": 0.0, "init_from": "w.pt"})
        resolve_params(CLS, {})


def test_inconsistent_recorded_lrate_is_refused():
    data = resolve_params(CLS, {}).model_dump(mode="json")
    data["batch_size"] = 32  # lrate still says 64 x per_item_lrate
    with pytest.raises(Exception, match="does not match per_item_lrate"):
        HyperParams.model_validate(data)


def test_parse_cli_params():
    got = parse_cli_params(["batch_size=32", "logreg=No", "average_horizontal_flips=TRUE", "use_gpu=auto",
                            "init_from=s3://b/w.safetensors", "lrate=1e-3", "precision=bf16",
                            "use_perclass_regression=1"])
    assert got == {"batch_size": 32, "logreg": False, "average_horizontal_flips": True, "use_gpu": None,
                   "init_from": "s3://b/w.safetensors", "lrate": 1e-3, "precision": "bf16",
                   "use_perclass_regression": True}
    assert resolve_params(CLS, got).lrate == 1e-3


@pytest.mark.parametrize(("items", "fragments"), [
    (["logreg=maybe"], ["logreg", "'maybe'", "bool"]),
    (["batch_size=abc"], ["batch_size", "'abc'", "int"]),
    (["batch_size=3.5"], ["batch_size", "'3.5'", "int"]),
    (["lrate=fast"], ["lrate", "'fast'", "float"]),
    (["lrat=0.1"], ["'lrat'", "did you mean 'lrate'"]),
    (["batch_size"], ["'batch_size'", "name=value"]),
    (["batch_size=1", "batch_size=2"], ["batch_size", "twice"]),
])
def test_parse_cli_params_errors(items, fragments):
    with pytest.raises(ParamError) as info:
        parse_cli_params(items)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_describe_params():
    rows = {r["name"]: r for r in describe_params(DET)}
    assert set(rows) == set(param_names())
    assert rows["image_size"]["default"] == 512 and rows["image_size"]["template_default"]
    assert "multiple of 16" in rows["image_size"]["range"]
    assert rows["lrate"]["default"] == pytest.approx(7.8125e-5 * 16) and rows["lrate"]["type"] == "float"
    assert rows["batch_size"]["type"] == "int" and rows["batch_size"]["range"] == "1..4096"
    assert rows["precision"]["type"] == "'fp32' | 'bf16' | 'fp16'"
    seed_names = {"average_horizontal_flips", "base_gradient_multiplier", "batch_size", "detection_score_threshold",
                  "image_size", "init_epochs", "logreg", "lrate", "num_epochs", "num_items_per_epoch",
                  "per_128_lrate", "per_item_lrate", "step_epochs", "test_freq", "use_perclass_regression"}
    assert {n for n, r in rows.items() if r["source"] == "seed"} == seed_names
    for name, row in rows.items():
        assert row["description"], name
        if row["source"] == "service":
            assert "added by the service" in row["description"], name
    assert "freezes" in rows["base_gradient_multiplier"]["description"]
    assert describe_params(CLS)[0]["name"] == "average_horizontal_flips"


def test_schema_imports_neither_torch_nor_ray():
    import subprocess
    import sys

    code = ("import sys, deeptrain.params; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'ray')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_stored_json_numbers_validate():
    # params read back from a database may carry ints for floats
    p = HyperParams.model_validate({"lrate": 1, "base_gradient_multiplier": 0, "momentum": 0})
    assert p.lrate == 1.0 and isinstance(p.lrate, float) and p.base_gradient_multiplier == 0.0


# --- layers: template defaults <- the model's stored params <- the run's overrides -------------

def test_a_runs_lrate_replaces_the_models_per_128_lrate():
    # the model was created with per_128_lrate; this run gives lrate: the run's layer wins
    p = resolve_params(CLS, {"per_128_lrate": 0.1}, {"lrate": 0.05})
    assert p.lrate == 0.05 and p.per_128_lrate is None and p.lrate_source() == "lrate"
    p = resolve_params(CLS, {"lrate": 0.05, "batch_size": 32}, {"per_item_lrate": 1e-3})
    assert p.lrate == pytest.approx(0.032) and p.lrate_source() == "per_item_lrate"
    p = resolve_params(CLS, {"per_128_lrate": 0.1}, {"batch_size": 32})  # no rate in the run: the model's stays
    assert p.lrate == pytest.approx(0.025) and p.lrate_source() == "per_128_lrate"


def test_two_learning_rates_within_one_layer_are_refused_naming_both():
    with pytest.raises(ParamError) as info:
        resolve_params(CLS, {"lrate": 0.05}, {"lrate": 0.1, "per_128_lrate": 0.2})
    msg = str(info.value)
    assert "lrate and per_128_lrate were both given" in msg and "per_128_lrate=0.2" in msg
    assert "were both given" in _error({"per_item_lrate": 1e-3, "per_128_lrate": 0.1})


def test_a_layer_that_is_not_a_mapping_is_a_type_error():
    with pytest.raises(TypeError, match="mapping"):
        resolve_params(CLS, {}, 4)


def test_resolved_params_are_frozen_and_derive_the_base_rate_in_one_place():
    p = resolve_params(CLS, {"base_gradient_multiplier": 0.01, "init_from": "w.pt", "lrate": 0.1})
    with pytest.raises(Exception, match="frozen"):
        p.lrate = 1.0
    assert p.pretrained_base and p.base_lr_scale == 0.01 and not p.base_frozen
    assert resolve_params(CLS, {"base_gradient_multiplier": 0.0, "init_from": "w.pt"}).base_frozen
    with pytest.warns(UserWarning, match="ignored without init_from"):
        q = resolve_params(CLS, {"base_gradient_multiplier": 0.0})
    assert not q.pretrained_base and q.base_lr_scale == 1.0 and not q.base_frozen
    assert resolve_params(CLS, {"batch_size": 8, "num_items_per_epoch": 20}).steps_per_epoch(1000) == 2
    with pytest.raises(InvalidInput, match="larger than the 4 training items"):
        resolve_params(CLS, {"batch_size": 8}).steps_per_epoch(4)
