"""CSV and JSON Lines: one row per image, ``path`` (relative to the file) or ``url`` (an
object in the service's storage), plus labels.

CSV columns: ``path``|``url``, ``concepts`` and ``negatives`` (``;``-separated names),
optional ``split``, ``input_id``, ``metadata`` (a JSON object). JSONL objects use the same
keys with lists for ``concepts``/``negatives`` and may carry ``regions``: a list of
``{"concept", "top_row", "left_col", "bottom_row", "right_col"}`` (normalized).

Both stream: memory does not grow with the number of rows, and one line may hold at most
``MAX_LINE_CHARS`` characters (a longer JSONL row is rejected, a longer CSV line stops the
import with its line number: a CSV row can span lines, so there is no safe place to resume).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TextIO

from deeptrain.errors import InvalidInput
from deeptrain.formats.records import (
    ExportItem,
    ImportRecord,
    ReaderItem,
    Region,
    Rejection,
    file_reader,
    safe_join,
    write_file,
)

UrlReader = Callable[[str], bytes]
_BOX_KEYS = ("top_row", "left_col", "bottom_row", "right_col")
MAX_LINE_CHARS = 1024 * 1024


def _bounded_lines(f: TextIO, name: str, skip_long: bool) -> Iterator[tuple[int, str | None]]:
    """(line number, line) of a text file, none over ``MAX_LINE_CHARS``: a longer one is read past without being
    held whole and comes as (number, None) when ``skip_long``, else ends the file with an ``InvalidInput``."""
    n = 0
    try:
        while line := f.readline(MAX_LINE_CHARS + 1):
            n += 1
            if len(line) > MAX_LINE_CHARS and not line.endswith("\n"):
                if not skip_long:
                    raise InvalidInput(f"{name} line {n} is over {MAX_LINE_CHARS:,} characters")
                while (rest := f.readline(MAX_LINE_CHARS)) and not rest.endswith("\n"):
                    pass
                yield n, None
                continue
            yield n, line
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{name} is not UTF-8 text (after line {n}): {exc}") from None


def _names(value: Any, field: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(";") if v.strip())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(v.strip() for v in value if v.strip())
    raise InvalidInput(f"{field!r} must be a list of concept names, got {value!r}")


def _regions(value: Any) -> tuple[Region, ...]:
    if value in (None, ""):
        return ()
    if not isinstance(value, list):
        raise InvalidInput(f"'regions' must be a list, got {type(value).__name__}")
    regions = []
    for i, r in enumerate(value):
        if not isinstance(r, dict) or "concept" not in r or any(k not in r for k in _BOX_KEYS):
            raise InvalidInput(f"regions[{i}] needs 'concept' and {', '.join(_BOX_KEYS)}")
        try:
            regions.append(Region(str(r["concept"]), *(float(r[k]) for k in _BOX_KEYS)))
        except (TypeError, ValueError):
            raise InvalidInput(f"regions[{i}] has a non-numeric coordinate: {r!r}") from None
    return tuple(regions)


def _record(row: dict[str, Any], where: str, base: Path, read_url: UrlReader | None) -> ImportRecord:
    path, url = row.get("path"), row.get("url")
    if bool(path) == bool(url):
        raise InvalidInput("give exactly one of 'path' or 'url'")
    if path:
        reader = file_reader(safe_join(base, str(path)))
    else:
        if read_url is None:
            raise InvalidInput("'url' rows need the service's storage")
        reader = lambda _max_bytes, u=str(url): read_url(u)  # noqa: E731 - stored inputs passed the limit
    metadata = row.get("metadata")
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata) if metadata.strip() else None
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"'metadata' is not valid JSON: {exc}") from None
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidInput("'metadata' must be a JSON object")
    return ImportRecord(
        source=where,
        read_bytes=reader,
        concepts=_names(row.get("concepts"), "concepts"),
        negatives=_names(row.get("negatives"), "negatives"),
        regions=_regions(row.get("regions")),
        split=row.get("split") or None,
        input_id=row.get("input_id") or None,
        metadata=metadata,
    )


def _rows_to_records(rows: Iterator[tuple[str, Any]], base: Path, read_url: UrlReader | None) -> Iterator[ReaderItem]:
    for where, row in rows:
        if isinstance(row, Rejection):
            yield row
            continue
        try:
            yield _record(row, where, base, read_url)
        except InvalidInput as exc:
            yield Rejection(where, str(exc))


def read_csv(path: Path, read_url: UrlReader | None = None) -> Iterator[ReaderItem]:
    def rows() -> Iterator[tuple[str, Any]]:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(line for _, line in _bounded_lines(f, path.name, skip_long=False))
            try:
                if not reader.fieldnames or not ({"path", "url"} & set(reader.fieldnames)):
                    raise InvalidInput(f"{path}: CSV header must have a 'path' or 'url' column, got {reader.fieldnames}")
                for row in reader:
                    yield f"{path}:{reader.line_num}", row
            except (csv.Error, UnicodeDecodeError) as exc:
                raise InvalidInput(f"{path}: not a readable CSV file (line {reader.line_num}): {exc}") from None

    return _rows_to_records(rows(), path.parent, read_url)


def read_jsonl(path: Path, read_url: UrlReader | None = None) -> Iterator[ReaderItem]:
    def rows() -> Iterator[tuple[str, Any]]:
        with path.open(encoding="utf-8") as f:
            for n, line in _bounded_lines(f, path.name, skip_long=True):
                where = f"{path}:{n}"
                if line is None:
                    yield where, Rejection(where, f"line is over {MAX_LINE_CHARS:,} characters")
                    continue
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield where, Rejection(where, f"invalid JSON: {exc}")
                    continue
                yield where, row if isinstance(row, dict) else Rejection(where, "each line must be a JSON object")

    return _rows_to_records(rows(), path.parent, read_url)


def _export_rows(items: Iterable[ExportItem], out: Path) -> Iterator[dict[str, Any]]:
    for item in items:
        rel = f"images/{item.filename}"
        write_file(out / rel, item.read_bytes())
        yield {
            "path": rel,
            "input_id": item.input_id,
            "concepts": item.concepts,
            "negatives": item.negatives,
            "regions": [
                {"concept": r.concept, **{k: getattr(r, k) for k in _BOX_KEYS}} for r in item.regions
            ],
            "split": item.split,
            "metadata": item.metadata,
        }


def write_csv(items: Iterable[ExportItem], out: Path, concepts: list[str]) -> int:
    """CSV has no box columns: regions are exported by the JSONL/COCO/VOC/YOLO writers."""
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    with (out / "labels.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["path", "input_id", "concepts", "negatives", "split", "metadata"])
        writer.writeheader()
        for row in _export_rows(items, out):
            writer.writerow({
                **{k: row[k] for k in ("path", "input_id", "split")},
                "concepts": ";".join(row["concepts"]),
                "negatives": ";".join(row["negatives"]),
                "metadata": json.dumps(row["metadata"]) if row["metadata"] else "",
            })
            n += 1
    return n


def write_jsonl(items: Iterable[ExportItem], out: Path, concepts: list[str]) -> int:
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    with (out / "labels.jsonl").open("w", encoding="utf-8") as f:
        for row in _export_rows(items, out):
            f.write(json.dumps({k: v for k, v in row.items() if v not in (None, [])}) + "\n")
            n += 1
    return n
