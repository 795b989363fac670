"""What format readers yield and exporters consume: plain records, no I/O policy."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Union

from deeptrain.errors import InvalidInput


@dataclass(frozen=True)
class Region:
    """A box with a concept. Normalized Clarifai convention unless the record says pixels."""

    concept: str
    top_row: float
    left_col: float
    bottom_row: float
    right_col: float


@dataclass
class ImportRecord:
    """One candidate input.

    source: how the report names it (a file path, or ``labels.csv:12``).
    read_bytes: loads the image bytes; called in a worker thread.
    pixel_boxes: regions are in pixels of the image and get normalized once its real
        size is known (VOC, COCO); otherwise they are already normalized.
    """

    source: str
    read_bytes: Callable[[], bytes]
    concepts: tuple[str, ...] = ()
    negatives: tuple[str, ...] = ()
    regions: tuple[Region, ...] = ()
    pixel_boxes: bool = False
    split: str | None = None
    input_id: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class Rejection:
    """A file or entry refused before any image was read."""

    file: str
    reason: str


ReaderItem = Union[ImportRecord, Rejection]
Reader = Callable[[Path], Iterator[ReaderItem]]


@dataclass
class ExportItem:
    """One stored input with its labels, as exporters write it (concepts by display name)."""

    input_id: str
    extension: str
    width: int
    height: int
    read_bytes: Callable[[], bytes]
    concepts: list[str] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)
    regions: list[Region] = field(default_factory=list)
    split: str | None = None
    metadata: dict[str, Any] | None = None

    @property
    def filename(self) -> str:
        return f"{self.input_id}.{self.extension}"


Writer = Callable[[Iterable[ExportItem], Path, list[str]], int]


def safe_join(base: Path, relative: str) -> Path:
    """``base / relative``, refusing absolute paths and anything that escapes ``base``."""
    if not relative or os.path.isabs(relative) or relative.startswith(("/", "\\")):
        raise InvalidInput(f"path {relative!r} must be relative to {base}")
    if ".." in Path(relative.replace("\\", "/")).parts:
        raise InvalidInput(f"path {relative!r} contains '..' (path traversal is not allowed)")
    path = (base / relative).resolve()
    if not path.is_relative_to(base.resolve()):
        raise InvalidInput(f"path {relative!r} resolves outside {base}")
    return path


def file_reader(path: Path) -> Callable[[], bytes]:
    return path.read_bytes


def write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
