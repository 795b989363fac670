"""Image folder: ``<root>/<concept>/<file>``; the folder name is the concept. With split folders on top
(``<root>/train|val|test/<concept>/<file>``, each top folder a split) every input keeps its folder's split;
an export whose inputs all carry a split writes that layout."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

from deeptrain.formats.records import (SPLIT_FOLDERS, ExportItem, ImportRecord, ReaderItem, Rejection,
                                       export_split_folders, file_reader, split_folder, split_layout, walk_files,
                                       write_file)


def read(root: Path) -> Iterator[ReaderItem]:
    by_split = split_layout(root)
    expected = "<root>/<split>/<concept>/<file>" if by_split else "<root>/<concept>/<file>"
    base = str(root)  # walk_files joins each name to the folder it scanned: every path starts with "<root>/"
    prefix = len(base) if base.endswith(os.sep) else len(base) + 1
    for path in walk_files(root):
        if isinstance(path, Rejection):
            yield path
            continue
        parts = str(path)[prefix:].split(os.sep)  # path.relative_to(root).parts, without pathlib's parsing
        if len(parts) != (3 if by_split else 2):
            yield Rejection(str(path), f"not inside a concept folder: expected {expected}")
            continue
        split = split_folder(parts[0]) if by_split else None
        yield ImportRecord(source=str(path), read_bytes=file_reader(path), concepts=(parts[-2],), split=split)


def write(items: Iterable[ExportItem], out: Path, concepts: list[str]) -> int:
    """One copy of each image per positive concept; unlabelled images are not written. When every image
    written carries a split, they go under ``train/``, ``val/`` and ``test/``."""
    labelled = [item for item in items if item.concepts]
    by_split = export_split_folders(labelled)
    for item in labelled:
        data = item.read_bytes()
        base = out / SPLIT_FOLDERS[item.split] if by_split else out  # type: ignore[index]
        for concept in item.concepts:
            write_file(base / concept / item.filename, data)
    return len(labelled)
