"""What format readers yield and exporters consume: plain records, no I/O policy."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Union

from deeptrain.errors import InvalidInput
from deeptrain.images import read_file_limited


@dataclass(frozen=True)
class Region:
    """A box with a concept. Normalized Clarifai convention unless the record says pixels."""

    concept: str
    top_row: float
    left_col: float
    bottom_row: float
    right_col: float


SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {"val": "validation", "valid": "validation"}  # accepted wherever a split is given, stored canonical


def canonical_split(split: str | None) -> str | None:
    """``split`` as stored: one of ``SPLITS`` ("val" means "validation"); None stays None (the snapshot assigns
    one); anything else is refused with the accepted names."""
    if split is None:
        return None
    name = SPLIT_ALIASES.get(split.strip().lower(), split.strip().lower())
    if name not in SPLITS:
        raise InvalidInput(f"split {split!r} is not one of {', '.join(SPLITS)} (or val)")
    return name


SPLIT_FOLDERS = {"train": "train", "validation": "val", "test": "test"}  # how exports name split folders


def split_folder(name: str) -> str | None:
    """The split a folder called ``name`` stands for (train, val, validation, valid, test), or None."""
    key = name.lower()
    key = SPLIT_ALIASES.get(key, key)
    return key if key in SPLITS else None


def split_layout(root: Path) -> bool:
    """Whether the folder's visible top-level folders are all split folders (``train/``, ``val/``, ``test/``):
    its inputs then keep the split of the folder they are in."""
    folders = [e.name for e in os.scandir(root) if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")]
    return bool(folders) and all(split_folder(f) for f in folders)


def export_split_folders(items: list["ExportItem"]) -> bool:
    """An export keeps splits as top folders when every item it writes carries one (else the flat layout)."""
    return bool(items) and all(i.split in SPLIT_FOLDERS for i in items)


BOX_EPS = 1e-6  # how far outside the image a box edge may lie (rounding) before it is refused


def normalize_box(region: Region, width: int | None = None, height: int | None = None) -> Region:
    """Normalize a pixel box (when width/height are given) and check it lies inside the image."""
    top, left, bottom, right = region.top_row, region.left_col, region.bottom_row, region.right_col
    if width is not None and height is not None:
        top, bottom, left, right = top / height, bottom / height, left / width, right / width
    if not (bottom > top and right > left):
        raise InvalidInput(
            f"box for {region.concept!r} is inverted or empty "
            f"(top_row={top:.4g}, left_col={left:.4g}, bottom_row={bottom:.4g}, right_col={right:.4g})"
        )
    if min(top, left) < -BOX_EPS or max(bottom, right) > 1 + BOX_EPS:
        raise InvalidInput(
            f"box for {region.concept!r} lies outside the image "
            f"(normalized top_row={top:.4g}, left_col={left:.4g}, bottom_row={bottom:.4g}, right_col={right:.4g})"
        )
    clamp = lambda v: min(max(v, 0.0), 1.0)  # noqa: E731
    return Region(region.concept, clamp(top), clamp(left), clamp(bottom), clamp(right))


@dataclass
class ImportRecord:
    """One candidate input.

    source: how the report names it (a file path, or ``labels.csv:12``).
    read_bytes: loads the image bytes, given the byte limit (refused by its size before
        reading where the size is known); called in a worker thread.
    pixel_boxes: regions are in pixels of the image and get normalized once its real
        size is known (VOC, COCO); otherwise they are already normalized.
    """

    source: str
    read_bytes: Callable[[int], bytes]
    concepts: tuple[str, ...] = ()
    negatives: tuple[str, ...] = ()
    regions: tuple[Region, ...] = ()
    pixel_boxes: bool = False
    split: str | None = None
    input_id: str | None = None
    metadata: dict[str, Any] | None = None



def read_record_bytes(record: "ImportRecord", max_bytes: int) -> bytes:
    """A record's image bytes (at most ``max_bytes``); a file that cannot be read is the caller's InvalidInput."""
    try:
        return record.read_bytes(max_bytes)
    except FileNotFoundError as exc:
        raise InvalidInput(f"file not found: {exc.filename or exc}") from None
    except IsADirectoryError as exc:
        raise InvalidInput(f"is a directory, not an image file: {exc.filename}") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read the file: {exc}") from None

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


def file_reader(path: Path) -> Callable[[int], bytes]:
    return lambda max_bytes: read_file_limited(path, max_bytes)


LINK_OUT = "a symbolic link to something outside the import folder (not followed)"


def is_inside(root: Path, path: Path) -> bool:
    """Whether ``path``, with every symbolic link resolved, lies inside ``root`` (resolved too)."""
    return path.resolve().is_relative_to(root.resolve())


def walk_files(root: Path, top: Path | None = None) -> Iterator[Path | Rejection]:
    """Files under ``root`` in sorted order, streaming one directory at a time; hidden entries skipped.

    Linked folders are not entered; a link to a file outside ``root`` is a ``Rejection``
    (an import reads only what is inside the folder it was given).
    """
    top = root.resolve() if top is None else top
    entries = sorted(os.scandir(root), key=lambda e: e.name)
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from walk_files(Path(entry.path), top)
        elif entry.is_symlink() and not is_inside(top, Path(entry.path)):
            yield Rejection(entry.path, LINK_OUT)
        elif entry.is_file():
            yield Path(entry.path)


def count_files(root: Path) -> int:
    """The files ``walk_files`` finds (a cheap total for a progress bar)."""
    return sum(1 for _ in walk_files(root))


def write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
