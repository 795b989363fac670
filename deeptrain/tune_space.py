"""Search spaces for tuning: CLI strings -> Ray Tune domains, checked against the hyperparameter schema.

A space maps hyperparameter names (the seed's, verbatim) to ``ray.tune`` sampling domains.
On the command line each entry is ``name=kind:args``:

    lrate=loguniform:1e-4:1e-1          float, log-uniform in [1e-4, 1e-1)
    base_gradient_multiplier=uniform:0:0.01
    batch_size=choice:32,64,128         any parameter; values parsed with the parameter's type
    image_size=qrandint:32:128:16       integer multiples of 16 in [32, 128]
    num_epochs=randint:2:6              integer in [2, 6) (upper bound exclusive, as ray.tune.randint)
    seed=lograndint:1:1000              integer, log-uniform in [1, 1000)

``check_space`` refuses, before any trial starts, an unknown name (with the closest
match), a parameter that sets a trial's resources, an empty range, and any value the
domain can produce that the schema rejects (bounds for floats; every value for integer
and categorical domains), so a trial never fails on a sampled value.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any, Callable, Mapping

from deeptrain.params import (MULTIPLIER_IGNORED, HyperParams, ParamError, check_param_names, parse_cli_params,
                              resolve_params)

if TYPE_CHECKING:  # pragma: no cover
    from ray.tune.search.sample import Domain

    from deeptrain.templates import Template

KINDS = ("uniform", "loguniform", "choice", "randint", "qrandint", "lograndint")
# parameters that decide what a trial reserves on the cluster: fixed for the whole run
NOT_TUNABLE = {"num_workers": "set it with --workers (it decides each trial's resources)",
               "use_gpu": "set it with --param use_gpu=... (it decides each trial's resources)"}
MAX_ENUMERATED = 5000  # integer domains up to this many values have every value checked


def _number(name: str, text: str, integer: bool) -> int | float:
    try:
        return int(text) if integer else float(text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ParamError(name, text, f"expected {kind} in the search space, got {text!r}") from None


def parse_space_item(item: str) -> tuple[str, "Domain"]:
    """``"lrate=loguniform:1e-4:1e-1"`` -> ``("lrate", tune.loguniform(1e-4, 1e-1))``."""
    from ray import tune

    name, sep, spec = str(item).partition("=")
    name = name.strip()
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    if not sep or not name or not rest:
        raise ParamError(None, item, f"expected name=kind:args, got {item!r}",
                         message=f"invalid search space {item!r}: expected name=kind:args, "
                                 "e.g. lrate=loguniform:1e-4:1e-1 or batch_size=choice:32,64,128")
    check_param_names([name])
    if kind == "choice":
        values = [parse_cli_params([f"{name}={v.strip()}"])[name] for v in rest.split(",") if v.strip()]
        if not values:
            raise ParamError(name, spec, "choice needs at least one value")
        return name, tune.choice(values)
    makers: dict[str, tuple[Callable[..., Any], int, bool]] = {
        "uniform": (tune.uniform, 2, False), "loguniform": (tune.loguniform, 2, False),
        "randint": (tune.randint, 2, True), "lograndint": (tune.lograndint, 2, True),
        "qrandint": (tune.qrandint, 3, True),
    }
    if kind not in makers:
        raise ParamError(name, spec, f"unknown search space kind {kind!r}; use one of {', '.join(KINDS)}")
    make, arity, integer = makers[kind]
    args = rest.split(":")
    if len(args) != arity:
        shape = ":".join(["lower", "upper", "q"][:arity])
        raise ParamError(name, spec, f"{kind} takes {arity} numbers ({kind}:{shape}), got {rest!r}")
    numbers = [_number(name, a.strip(), integer) for a in args]
    if numbers[0] >= numbers[1]:
        raise ParamError(name, spec, f"empty range: the lower bound {args[0]} is not below the upper bound {args[1]}")
    try:
        return name, make(*numbers)
    except (ValueError, AssertionError) as exc:  # e.g. loguniform with a bound <= 0
        raise ParamError(name, spec, f"{kind}:{rest} is not a valid range: {exc}") from None


def parse_space(items: list[str]) -> dict[str, "Domain"]:
    """Several ``--space`` options; a name given twice is an error."""
    space: dict[str, Domain] = {}
    for item in items:
        name, domain = parse_space_item(item)
        if name in space:
            raise ParamError(name, item, "given twice in the search space")
        space[name] = domain
    return space


def describe_domain(domain: "Domain") -> str:
    """A domain as the CLI writes it (``loguniform:0.0001:0.1``), for records and reports."""
    from ray.tune.search.sample import Categorical, Float, Integer, LogUniform, Quantized

    if isinstance(domain, Categorical):
        return "choice:" + ",".join(str(c) for c in domain.categories)
    sampler = domain.get_sampler()
    if isinstance(domain, Integer) and isinstance(sampler, Quantized):
        return f"qrandint:{domain.lower}:{domain.upper}:{sampler.q}"
    log = isinstance(sampler, LogUniform)
    if isinstance(domain, Float):
        return f"{'loguniform' if log else 'uniform'}:{domain.lower:g}:{domain.upper:g}"
    return f"{'lograndint' if log else 'randint'}:{domain.lower}:{domain.upper}"


def _integer_values(domain) -> list[int]:
    """Every value an integer domain can sample, or just its two ends when there are too many."""
    from ray.tune.search.sample import Quantized

    sampler = domain.get_sampler()
    q = sampler.q if isinstance(sampler, Quantized) else 1
    first = math.ceil(domain.lower / q) * q
    last = (math.floor(domain.upper / q) * q) if q != 1 else domain.upper - 1
    if last < first:
        raise ParamError(None, None, f"no multiple of {q} between {domain.lower} and {domain.upper}")
    count = (last - first) // q + 1
    return list(range(first, last + 1, q)) if count <= MAX_ENUMERATED else [first, last]


def domain_values(name: str, domain: Any) -> list[Any]:
    """The values of ``domain`` to check against the schema: categories, integer values, float bounds."""
    from ray.tune.search.sample import Categorical, Float, Integer

    if isinstance(domain, Categorical):
        return list(domain.categories)
    if isinstance(domain, Integer):
        try:
            return _integer_values(domain)
        except ParamError as exc:
            raise ParamError(name, describe_domain(domain), exc.reason) from None
    if isinstance(domain, Float):
        if not (math.isfinite(domain.lower) and math.isfinite(domain.upper)):
            raise ParamError(name, describe_domain(domain), "the range must have finite bounds")
        if HyperParams.model_fields[name].annotation is int:
            raise ParamError(name, describe_domain(domain),
                             f"{name} is an integer parameter: use randint, qrandint, lograndint or choice")
        return [float(domain.lower), float(domain.upper)]
    raise ParamError(name, domain, "expected a ray.tune search space (tune.uniform, tune.loguniform, tune.choice, "
                                   "tune.randint, tune.qrandint, tune.lograndint); fixed values go in params")


def check_space(template: "Template", base: Mapping[str, Any], space: Mapping[str, Any],
                num_workers: int, model_params: Mapping[str, Any] | None = None) -> dict[str, list[Any]]:
    """Refuse a space some of whose values the schema rejects; returns the values checked per name.

    ``base`` is what every trial of the run shares (its fixed params), on top of the model's
    ``model_params`` (a layer below: a rate in the run replaces the model's). Each value is
    checked with the others at their base value, then all the first values together (so
    that e.g. ``lrate`` and ``per_item_lrate`` both in the space is caught).
    """
    if not space:
        raise ParamError(None, None, "the search space is empty: give at least one --space name=kind:args")
    check_param_names(space)
    checked: dict[str, list[Any]] = {}
    with warnings.catch_warnings():  # the multiplier's warning once below, not once per value
        warnings.simplefilter("ignore", UserWarning)
        for name, domain in space.items():
            values = domain_values(name, domain)
            if name in NOT_TUNABLE:
                raise ParamError(name, describe_domain(domain), f"cannot be tuned: {NOT_TUNABLE[name]}")
            for value in values:
                try:
                    resolve_params(template, model_params, {**base, name: value}, num_workers=num_workers)
                except ParamError as exc:
                    where = f"the search space {name}={describe_domain(domain)} can sample {value!r}, which is invalid"
                    raise ParamError(exc.param, exc.value, f"{where}: {exc}", message=f"{where}: {exc}") from None
            checked[name] = values
        try:
            first = resolve_params(template, model_params, {**base, **{n: v[0] for n, v in checked.items()}},
                                   num_workers=num_workers)
        except ParamError as exc:
            raise ParamError(exc.param, exc.value, f"the search space's parameters conflict: {exc}",
                             message=f"the search space's parameters conflict: {exc}") from None
    if "base_gradient_multiplier" in space and first.from_scratch:
        warnings.warn(f"{MULTIPLIER_IGNORED}, in every trial", UserWarning, stacklevel=2)
    return checked
