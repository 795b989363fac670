"""The Python SDK: the same service layer the CLI and the HTTP API use.

    from deeptrain import sdk
    client = sdk.Client()                       # settings from DEEPTRAIN_* variables
    client.create_app("fashion")
    report = client.import_inputs("fashion", "images/", format="imagefolder")
    version = client.snapshot("fashion")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import pyarrow.dataset as pads

from deeptrain.config import Settings
from deeptrain.formats import ImportRecord, Region
from deeptrain.services import apps, concepts, datasets, inputs
from deeptrain.services.context import Context
from deeptrain.services.inputs import ProgressFn


class Client:
    def __init__(self, settings: Settings | None = None, **overrides: Any):
        self.settings = settings or Settings.from_env(**overrides)
        self.ctx = Context.from_settings(self.settings)

    # --- apps ----------------------------------------------------------------------
    def create_app(self, app_id: str, name: str | None = None) -> dict[str, Any]:
        return apps.create_app(self.ctx, app_id, name)

    def list_apps(self) -> list[dict[str, Any]]:
        return apps.list_apps(self.ctx)

    def get_app(self, app_id: str) -> dict[str, Any]:
        return apps.get_app(self.ctx, app_id)

    def delete_app(self, app_id: str) -> dict[str, Any]:
        return apps.delete_app(self.ctx, app_id)

    # --- concepts ------------------------------------------------------------------
    def create_concept(self, app_id: str, concept_id: str, name: str | None = None) -> dict[str, Any]:
        return concepts.create_concept(self.ctx, app_id, concept_id, name)

    def list_concepts(self, app_id: str) -> list[dict[str, Any]]:
        return concepts.list_concepts(self.ctx, app_id)

    def delete_concept(self, app_id: str, concept_id: str, force: bool = False) -> dict[str, Any]:
        return concepts.delete_concept(self.ctx, app_id, concept_id, force)

    # --- inputs --------------------------------------------------------------------
    def import_inputs(
        self, app_id: str, path: str | Path, format: str, split: str | None = None,
        on_progress: ProgressFn | None = None,
    ) -> dict[str, Any]:
        return inputs.import_path(self.ctx, app_id, path, format, split=split, on_progress=on_progress).as_dict()

    def add_input(
        self, app_id: str, image: bytes | str | Path, *, concepts: Iterable[str] = (),
        negatives: Iterable[str] = (), regions: Iterable[Mapping[str, Any]] = (), split: str | None = None,
        input_id: str | None = None, metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Add one image (bytes or a file path) with labels; regions use normalized boxes."""
        data = image if isinstance(image, bytes) else Path(image).read_bytes()
        record = ImportRecord(
            source=input_id or (str(image) if not isinstance(image, bytes) else "<bytes>"),
            read_bytes=lambda: data, concepts=tuple(concepts), negatives=tuple(negatives),
            regions=tuple(Region(r["concept"], r["top_row"], r["left_col"], r["bottom_row"], r["right_col"])
                          for r in regions),
            split=split, input_id=input_id, metadata=metadata,
        )
        return inputs.import_records(self.ctx, app_id, [record]).as_dict()

    def list_inputs(self, app_id: str, limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
        return inputs.list_inputs(self.ctx, app_id, limit, offset)

    def get_input_bytes(self, app_id: str, input_id: str) -> bytes:
        return inputs.get_input_bytes(self.ctx, app_id, input_id)

    def delete_input(self, app_id: str, input_id: str) -> dict[str, Any]:
        return inputs.delete_input(self.ctx, app_id, input_id)

    def export_inputs(self, app_id: str, out_dir: str | Path, format: str) -> dict[str, Any]:
        return inputs.export_inputs(self.ctx, app_id, out_dir, format)

    # --- dataset versions ----------------------------------------------------------
    def snapshot(self, app_id: str, test_fraction: float = 0.1,
                 on_progress: ProgressFn | None = None) -> dict[str, Any]:
        return datasets.snapshot(self.ctx, app_id, test_fraction=test_fraction, on_progress=on_progress)

    def list_datasets(self, app_id: str) -> list[dict[str, Any]]:
        return datasets.list_datasets(self.ctx, app_id)

    def get_dataset(self, app_id: str, version_id: str) -> dict[str, Any]:
        return datasets.get_dataset(self.ctx, app_id, version_id)

    def open_dataset(self, app_id: str, version_id: str) -> pads.Dataset:
        return datasets.open_dataset(self.ctx, app_id, version_id)
