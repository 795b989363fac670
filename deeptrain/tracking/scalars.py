"""The numbers a version's run is tracked by, from its history (``training/loop.py``'s epoch records).

One name per quantity, the same in TensorBoard and MLflow: ``train/loss``, ``train/lr``,
``train/images_per_s``, ``train/seconds`` every epoch; ``validation/<metric>`` on the epochs the
loop evaluated; ``test/<metric>`` once, at the epoch of the final test evaluation. Only scalars are
kept (a confusion matrix is a plot, not a curve); nested per-concept values are flattened
(``test/per_concept/<concept>/ap``). Names hold only what MLflow accepts (``recall@1`` is
``recall_at_1``).
"""

from __future__ import annotations

import re
from typing import Any, Iterator

TRAIN_FIELDS = {"train_loss": "train/loss", "lr": "train/lr", "images_per_s": "train/images_per_s",
                "seconds": "train/seconds"}
_UNSAFE = re.compile(r"[^\w.\- /:]")


def metric_name(*parts: str) -> str:
    """``parts`` joined by ``/``, with ``@`` as ``_at_`` and any other character MLflow refuses as ``_``."""
    return _UNSAFE.sub("_", "/".join(str(p).replace("@", "_at_") for p in parts))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # NaN is dropped


def flat_scalars(values: dict[str, Any], *prefix: str) -> Iterator[tuple[str, float]]:
    """(name, value) of every number in ``values``, nested dicts flattened; the ``epoch`` stamp left out."""
    for key, value in values.items():
        if key == "epoch" and not prefix[1:]:
            continue
        if isinstance(value, dict):
            yield from flat_scalars(value, *prefix, str(key))
        elif _is_number(value):
            yield metric_name(*prefix, str(key)), float(value)


def epoch_scalars(history: list[dict[str, Any]]) -> list[tuple[int, dict[str, float]]]:
    """``[(epoch, {name: value})]`` for every epoch of ``history``: training, validation and test numbers."""
    rows = []
    for record in history:
        values = {name: float(record[key]) for key, name in TRAIN_FIELDS.items() if _is_number(record.get(key))}
        values.update(flat_scalars(record.get("metrics") or {}, "validation"))
        values.update(flat_scalars(record.get("test") or {}, "test"))
        rows.append((int(record["epoch"]), values))
    return rows


def flat_params(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested parameters as ``{"a.b": "value"}`` strings (what MLflow stores; None is ``None``)."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flat_params(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat
