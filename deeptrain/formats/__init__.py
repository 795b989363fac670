"""Import/export formats. Each format is a reader (path -> records) and a writer, plus what
sets it apart from the others (what its import path must be, how its label file is read,
how a progress bar counts its candidates, how its export names concepts)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from deeptrain.errors import InvalidInput
from deeptrain.formats import coco, imagefolder, tabular, voc, yolo
from deeptrain.formats.records import ExportItem, ImportRecord, Region, Rejection, count_files


@dataclass(frozen=True)
class Format:
    name: str
    reader: Callable  # (path, read_url) -> Iterator[ImportRecord | Rejection]
    writer: Callable  # (items, out_dir, concept_names) -> int
    path_kind: str  # "dir" or "file": what the import PATH must be
    uses_urls: bool = False
    loads_whole: bool = False  # the label file is parsed whole: bounded by Settings.max_label_file_bytes
    also_file: bool = False  # a "dir" format that also imports one label file on its own (a VOC XML)
    count: Callable[[Path], int] | None = None  # a cheap count of a folder's candidates (a progress bar's total)
    exports_concept_ids: bool = False  # export concepts by id: they name folders, which must be path-safe

    def check_path(self, path: Path, max_whole_bytes: int) -> None:
        """Refuse an import PATH that is missing or of the wrong kind, or a label file read whole that is
        over ``max_whole_bytes``."""
        if not path.exists():
            raise InvalidInput(f"import path {str(path)!r} does not exist")
        if self.path_kind == "dir" and not path.is_dir() and not self.also_file:
            raise InvalidInput(f"format {self.name!r} imports a folder, but {str(path)!r} is a file")
        if self.path_kind == "file" and not path.is_file():
            raise InvalidInput(f"format {self.name!r} imports a file, but {str(path)!r} is a folder")
        size = path.stat().st_size
        if self.loads_whole and size > max_whole_bytes:
            raise InvalidInput(f"{str(path)!r} is {size:,} bytes, over the {max_whole_bytes:,}-byte limit for a "
                               f"{self.name} file, which is read whole (DEEPTRAIN_MAX_LABEL_FILE_BYTES)")


FORMATS: dict[str, Format] = {
    "imagefolder": Format("imagefolder", lambda p, _u: imagefolder.read(p), imagefolder.write, "dir",
                          count=count_files, exports_concept_ids=True),
    "csv": Format("csv", tabular.read_csv, tabular.write_csv, "file", uses_urls=True),
    "jsonl": Format("jsonl", tabular.read_jsonl, tabular.write_jsonl, "file", uses_urls=True),
    "coco": Format("coco", lambda p, _u: coco.read(p), coco.write, "file", loads_whole=True),
    "voc": Format("voc", lambda p, _u: voc.read(p), voc.write, "dir", also_file=True),
    "yolo": Format("yolo", lambda p, _u: yolo.read(p), yolo.write, "dir", count=count_files),
}


def get_format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise InvalidInput(f"unknown format {name!r}; valid formats: {', '.join(FORMATS)}") from None


__all__ = ["FORMATS", "Format", "get_format", "ExportItem", "ImportRecord", "Region", "Rejection"]
