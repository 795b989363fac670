"""Import/export formats. Each format is a reader (path -> records) and a writer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from deeptrain.errors import InvalidInput
from deeptrain.formats import coco, imagefolder, tabular, voc, yolo
from deeptrain.formats.records import ExportItem, ImportRecord, Region, Rejection


@dataclass(frozen=True)
class Format:
    name: str
    reader: Callable  # (path, read_url) -> Iterator[ImportRecord | Rejection]
    writer: Callable  # (items, out_dir, concept_names) -> int
    path_kind: str  # "dir" or "file": what the import PATH must be
    uses_urls: bool = False
    loads_whole: bool = False  # the label file is parsed whole: bounded by Settings.max_label_file_bytes


FORMATS: dict[str, Format] = {
    "imagefolder": Format("imagefolder", lambda p, _u: imagefolder.read(p), imagefolder.write, "dir"),
    "csv": Format("csv", tabular.read_csv, tabular.write_csv, "file", uses_urls=True),
    "jsonl": Format("jsonl", tabular.read_jsonl, tabular.write_jsonl, "file", uses_urls=True),
    "coco": Format("coco", lambda p, _u: coco.read(p), coco.write, "file", loads_whole=True),
    "voc": Format("voc", lambda p, _u: voc.read(p), voc.write, "dir"),
    "yolo": Format("yolo", lambda p, _u: yolo.read(p), yolo.write, "dir"),
}


def get_format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise InvalidInput(f"unknown format {name!r}; valid formats: {', '.join(FORMATS)}") from None


__all__ = ["FORMATS", "Format", "get_format", "ExportItem", "ImportRecord", "Region", "Rejection"]
