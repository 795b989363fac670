"""TensorBoard event files of a version's epochs, kept with its artifacts under ``tensorboard/``.

Written with ``torch.utils.tensorboard.SummaryWriter`` into a temporary folder, then copied into
storage (``file://`` or ``s3://``) through ``deeptrain.storage.Storage``: one scalar per quantity and
epoch (``deeptrain.tracking.scalars``; ``global_step`` is the epoch, 1-based) and the version's
hyperparameters as a text summary. Written again from the whole history when a version is finished
again (a resumed one), so the folder never holds two runs' events.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from deeptrain.storage import Storage
from deeptrain.tracking.scalars import epoch_scalars

FOLDER = "tensorboard"


def write_event_dir(directory: Path, history: list[dict[str, Any]], params: dict[str, Any] | None = None) -> None:
    """Event files of ``history`` (and ``params`` as text) in ``directory``."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(directory))
    try:
        for epoch, values in epoch_scalars(history):
            for name, value in values.items():
                writer.add_scalar(name, value, global_step=epoch)
        if params:
            writer.add_text("params", "```\n" + json.dumps(params, indent=2, sort_keys=True, default=str) + "\n```")
    finally:
        writer.close()


def write_events(storage: Storage, prefix: str, history: list[dict[str, Any]],
                 params: dict[str, Any] | None = None) -> list[str]:
    """Write the event files of ``history`` under ``<prefix>/tensorboard/``; returns their keys."""
    folder = f"{prefix}/{FOLDER}"
    with tempfile.TemporaryDirectory(prefix="deeptrain-tb-") as tmp:
        write_event_dir(Path(tmp), history, params)
        storage.delete_prefix(folder)
        keys = []
        for path in sorted(p for p in Path(tmp).rglob("*") if p.is_file()):
            key = f"{folder}/{path.relative_to(tmp).as_posix()}"
            with path.open("rb") as source:
                storage.put_stream(key, source)
            keys.append(key)
    return keys
