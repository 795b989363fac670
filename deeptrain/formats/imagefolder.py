"""Image folder: ``<root>/<concept>/<file>``; the folder name is the concept."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from deeptrain.formats.records import (ExportItem, ImportRecord, ReaderItem, Rejection, file_reader, walk_files,
                                       write_file)


def read(root: Path) -> Iterator[ReaderItem]:
    for path in walk_files(root):
        if isinstance(path, Rejection):
            yield path
            continue
        rel = path.relative_to(root)
        if len(rel.parts) != 2:
            yield Rejection(str(path), "not inside a concept folder: expected <root>/<concept>/<file>")
            continue
        yield ImportRecord(source=str(path), read_bytes=file_reader(path), concepts=(rel.parts[0],))


def write(items: Iterable[ExportItem], out: Path, concepts: list[str]) -> int:
    """One copy of each image per positive concept; unlabelled images are not written."""
    written = 0
    for item in items:
        if not item.concepts:
            continue
        data = item.read_bytes()
        for concept in item.concepts:
            write_file(out / concept / item.filename, data)
        written += 1
    return written
