"""Which trial scheduler a tuning run uses, decided before any trial starts, and the Tune object for it.

ASHA (early stopping on the run's metric at each evaluation) is the default. It stops a
trial only after ``grace_period`` epochs and before its last one, so it needs more epochs
than its grace period. When the caller asked for neither ASHA nor a grace period and the
run has too few epochs for it, the run uses FIFO (every trial runs to its end) and the
scheduler's ``note`` says so; an ASHA asked for by name, or by giving a grace period, that
cannot apply is refused.
"""

from __future__ import annotations

from typing import Any

from deeptrain.errors import InvalidInput

SCHEDULERS = ("asha", "fifo")
DEFAULT = "asha"


def check_scheduler_name(requested: str | None) -> None:
    """Refuse an unknown scheduler (None is the default)."""
    if requested is not None and requested not in SCHEDULERS:
        raise InvalidInput(f"unknown scheduler {requested!r}; use one of {', '.join(SCHEDULERS)}")


def choose_scheduler(requested: str | None, grace_period: int | None, reduction_factor: int, *,
                     test_freq: int, max_t: int) -> dict[str, Any]:
    """The run's scheduler spec ``{"name", "time_attr", "max_t", "grace_period", "reduction_factor"}``, with
    ``"note"`` when the default ASHA could not apply and FIFO runs instead.

    ``requested`` None: the default. ``grace_period`` None: ``test_freq`` (ASHA compares evaluations).
    ``max_t``: the most epochs a trial can train.
    """
    check_scheduler_name(requested)
    name = requested or DEFAULT
    grace = test_freq if grace_period is None else grace_period
    spec: dict[str, Any] = {"name": name, "time_attr": "epoch", "max_t": max_t, "grace_period": grace,
                            "reduction_factor": reduction_factor}
    asha_fits = 1 <= grace < max_t
    if name == "asha" and not asha_fits and (requested is not None or grace_period is not None):
        raise InvalidInput(f"--grace-period {grace} must be at least 1 and below the number of epochs ({max_t}): "
                           "ASHA stops trials before their last epoch" + ("; with one epoch use --scheduler fifo"
                                                                         if max_t == 1 else ""))
    if reduction_factor < 2:
        raise InvalidInput(f"--reduction-factor must be >= 2, got {reduction_factor}")
    if name == "asha" and not asha_fits:  # the default cannot apply: every trial runs to its end
        return {**spec, "name": "fifo",
                "note": f"ASHA needs more epochs ({max_t}) than its grace period ({grace}); ran FIFO"}
    return spec


def make_scheduler(spec: dict[str, Any]):
    """The Ray Tune scheduler of a spec ``choose_scheduler`` made."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if spec["name"] == "fifo":
        return FIFOScheduler()
    # rungs at grace_period x reduction_factor^k up to the epoch before the last, and no stop at the last
    # one: a trial that reaches its last epoch finishes on its own (Tune ends a stopped trial's driver
    # at once, so a stop there would cut short writing its artifacts)
    return ASHAScheduler(time_attr=spec["time_attr"], max_t=spec["max_t"] - 1, grace_period=spec["grace_period"],
                         reduction_factor=spec["reduction_factor"], stop_last_trials=False)
