"""The hyperparameters (SPEC §4): one schema for validation, docs and errors; no torch, no ray.

Names are the seed's, verbatim, from the CLI to the manifest. The parameters the
service adds on top of the seed's are marked ``source="service"``.

- ``resolve_params(template, model_params, overrides)``: global defaults <- the template's
  defaults <- the model's stored params <- the run's overrides, validated, with ``lrate``
  derived and recorded (``params/resolve.py``). Every caller (SDK, CLI, HTTP API, Tune)
  goes through it, once, before anything starts.
- ``HyperParams``: the resolved, frozen, JSON-serializable result, and the only place
  derived values are computed (``params/schema.py``).
- ``parse_cli_params(["batch_size=32", ...])``: CLI strings -> typed values; the schema
  itself is strict (``params/text.py``).
- ``describe_params(template)``: a table of every parameter for ``templates show``.

Every problem raises ``ParamError`` (a ``ValueError``) naming the parameter, the bad
value and the reason.
"""

from deeptrain.params.resolve import merge_layers, resolve_params
from deeptrain.params.schema import (DEFAULT_PER_ITEM_LRATE, LRATE_PARAMS, MULTIPLIER_IGNORED, HyperParams, ParamError,
                                     check_param_names, param_names)
from deeptrain.params.text import describe_params, parse_cli_params

__all__ = [
    "DEFAULT_PER_ITEM_LRATE",
    "LRATE_PARAMS",
    "MULTIPLIER_IGNORED",
    "HyperParams",
    "ParamError",
    "check_param_names",
    "describe_params",
    "merge_layers",
    "param_names",
    "parse_cli_params",
    "resolve_params",
]
