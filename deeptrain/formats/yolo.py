"""YOLO txt: beside each image a ``.txt`` with ``class cx cy w h`` lines (normalized), class
names in ``classes.txt`` (one per line) or ``data.yaml`` (``names``). Images may sit with
their labels or in ``images/`` with labels in ``labels/`` (the Ultralytics layout). Split folders keep
their split: ``images/train|val|test/…`` (labels in ``labels/<split>/…``) or ``train|valid|test/images/…``
(labels in ``<split>/labels/…``); an export whose inputs all carry a split writes ``images/<split>/``.

Hostile folders: ``classes.txt``, ``data.yaml`` and label files are at most
``MAX_TEXT_BYTES`` each and must lie inside the folder (links out are refused);
``data.yaml`` may not use YAML anchors/aliases (whose expansion can be exponential).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import yaml

from deeptrain.errors import InvalidInput
from deeptrain.formats.records import (
    ExportItem,
    ImportRecord,
    SPLIT_FOLDERS,
    ReaderItem,
    Region,
    Rejection,
    export_split_folders,
    file_reader,
    is_inside,
    split_folder,
    walk_files,
    write_file,
)
from deeptrain.images import IMAGE_SUFFIXES

MAX_TEXT_BYTES = 4 * 1024 * 1024  # classes.txt, data.yaml, one label file


class _NoAliasLoader(yaml.SafeLoader):
    """``yaml.safe_load`` without anchors and aliases."""

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"aliases are not allowed (line {event.start_mark.line + 1})")
        return super().compose_node(parent, index)


def _read_text(root: Path, path: Path) -> str:
    """A small text file of the folder: inside it, at most ``MAX_TEXT_BYTES``."""
    if not is_inside(root, path):
        raise InvalidInput(f"{path.name} is a link to a file outside the import folder (not followed)")
    size = path.stat().st_size
    if size > MAX_TEXT_BYTES:
        raise InvalidInput(f"{path.name} is {size:,} bytes, over the {MAX_TEXT_BYTES:,}-byte limit for a label file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path.name} is not UTF-8 text: {exc}") from None


def _yaml_names(root: Path) -> list[str] | None:
    try:
        doc = yaml.load(_read_text(root, root / "data.yaml"), Loader=_NoAliasLoader)  # noqa: S506 - safe, no aliases
    except yaml.YAMLError as exc:
        raise InvalidInput(f"data.yaml is not valid YAML: {exc}") from None
    names = doc.get("names") if isinstance(doc, dict) else None
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names, key=str)]
    if isinstance(names, list) and all(isinstance(n, (str, int, float)) for n in names):
        return [str(n) for n in names]
    return None


def _class_names(root: Path) -> list[str]:
    if (root / "classes.txt").is_file():
        return [line.strip() for line in _read_text(root, root / "classes.txt").splitlines() if line.strip()]
    if (root / "data.yaml").is_file():
        names = _yaml_names(root)
        if names is not None:
            return names
    raise InvalidInput(f"{root}: YOLO folder needs classes.txt or data.yaml with 'names' (a list of class names)")


def _label_path(root: Path, image: Path) -> Path:
    beside = image.with_suffix(".txt")
    parts = image.relative_to(root).parts
    if parts[0] == "images":
        return root.joinpath("labels", *parts[1:]).with_suffix(".txt")
    if len(parts) > 2 and parts[1] == "images" and split_folder(parts[0]):  # <split>/images/… (Roboflow)
        return root.joinpath(parts[0], "labels", *parts[2:]).with_suffix(".txt")
    return beside


def _split(root: Path, image: Path) -> str | None:
    """The split of an image under ``images/<split>/`` or ``<split>/images/``; None elsewhere."""
    parts = image.relative_to(root).parts
    if len(parts) > 2 and parts[0] == "images":
        return split_folder(parts[1])
    if len(parts) > 2 and parts[1] == "images":
        return split_folder(parts[0])
    return None


def _regions(root: Path, label_file: Path, names: list[str]) -> tuple[Region, ...]:
    regions = []
    for n, line in enumerate(_read_text(root, label_file).splitlines(), 1):
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
    for path in walk_files(root):
        if isinstance(path, Rejection):
            yield path
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            if path.suffix.lower() not in (".txt", ".yaml", ".yml"):
                yield Rejection(str(path), f"not an image file (suffix {path.suffix!r})")
            continue
        label = _label_path(root, path)
        try:
            regions = _regions(root, label, names) if label.is_file() else ()
        except InvalidInput as exc:
            yield Rejection(str(path), str(exc))
            continue
        yield ImportRecord(source=str(path), read_bytes=file_reader(path), regions=regions, split=_split(root, path))


def write(items: Iterable[ExportItem], out: Path, concepts: list[str]) -> int:
    index = {name: i for i, name in enumerate(concepts)}
    write_file(out / "classes.txt", "".join(f"{c}\n" for c in concepts).encode())
    items = list(items)
    by_split = export_split_folders(items)
    n = 0
    for item in items:
        sub = (SPLIT_FOLDERS[item.split],) if by_split else ()  # type: ignore[index]
        write_file(out.joinpath("images", *sub, item.filename), item.read_bytes())
        lines = []
        for r in item.regions:
            cx, cy = (r.left_col + r.right_col) / 2, (r.top_row + r.bottom_row) / 2
            w, h = r.right_col - r.left_col, r.bottom_row - r.top_row
            lines.append(f"{index[r.concept]} {cx:.10g} {cy:.10g} {w:.10g} {h:.10g}\n")
        write_file(out.joinpath("labels", *sub, f"{item.input_id}.txt"), "".join(lines).encode())
        n += 1
    return n
