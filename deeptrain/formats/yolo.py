"""YOLO txt: beside each image a ``.txt`` with ``class cx cy w h`` lines (normalized), class
names in ``classes.txt`` (one per line) or ``data.yaml`` (``names``). Images may sit with
their labels or in ``images/`` with labels in ``labels/`` (the Ultralytics layout).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import yaml

from deeptrain.errors import InvalidInput
from deeptrain.formats.imagefolder import _walk_files
from deeptrain.images import IMAGE_SUFFIXES
from deeptrain.formats.records import (
    ExportItem,
    ImportRecord,
    ReaderItem,
    Region,
    Rejection,
    file_reader,
    write_file,
)


def _class_names(root: Path) -> list[str]:
    if (root / "classes.txt").is_file():
        return [line.strip() for line in (root / "classes.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    if (root / "data.yaml").is_file():
        names = (yaml.safe_load((root / "data.yaml").read_text(encoding="utf-8")) or {}).get("names")
        if isinstance(names, dict):
            return [str(names[k]) for k in sorted(names)]
        if isinstance(names, list):
            return [str(n) for n in names]
    raise InvalidInput(f"{root}: YOLO folder needs classes.txt or data.yaml with 'names'")


def _label_path(root: Path, image: Path) -> Path:
    beside = image.with_suffix(".txt")
    rel = image.relative_to(root)
    if rel.parts[0] == "images":
        return root.joinpath("labels", *rel.parts[1:]).with_suffix(".txt")
    return beside


def _regions(label_file: Path, names: list[str]) -> tuple[Region, ...]:
    regions = []
    for n, line in enumerate(label_file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            cls, cx, cy, w, h = int(parts[0]), *(float(v) for v in parts[1:5])
            if len(parts) != 5:
                raise ValueError
        except (ValueError, IndexError):
            raise InvalidInput(f"{label_file.name} line {n}: expected 'class cx cy w h', got {line.strip()!r}") from None
        if not 0 <= cls < len(names):
            raise InvalidInput(f"{label_file.name} line {n}: class {cls} is not in the class list ({len(names)} classes)")
        regions.append(Region(names[cls], cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2))
    return tuple(regions)


def read(root: Path) -> Iterator[ReaderItem]:
    names = _class_names(root)
    for path in _walk_files(root):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            if path.suffix.lower() not in (".txt", ".yaml", ".yml"):
                yield Rejection(str(path), f"not an image file (suffix {path.suffix!r})")
            continue
        label = _label_path(root, path)
        try:
            regions = _regions(label, names) if label.is_file() else ()
        except InvalidInput as exc:
            yield Rejection(str(path), str(exc))
            continue
        yield ImportRecord(source=str(path), read_bytes=file_reader(path), regions=regions)


def write(items: Iterable[ExportItem], out: Path, concepts: list[str]) -> int:
    index = {name: i for i, name in enumerate(concepts)}
    write_file(out / "classes.txt", "".join(f"{c}\n" for c in concepts).encode())
    n = 0
    for item in items:
        write_file(out / "images" / item.filename, item.read_bytes())
        lines = []
        for r in item.regions:
            cx, cy = (r.left_col + r.right_col) / 2, (r.top_row + r.bottom_row) / 2
            w, h = r.right_col - r.left_col, r.bottom_row - r.top_row
            lines.append(f"{index[r.concept]} {cx:.10g} {cy:.10g} {w:.10g} {h:.10g}\n")
        write_file(out / "labels" / f"{item.input_id}.txt", "".join(lines).encode())
        n += 1
    return n
