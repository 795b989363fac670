"""COCO JSON (``images``, ``annotations`` with pixel ``bbox`` [x, y, w, h], ``categories``).

Image files are found relative to the JSON's folder (``file_name``), or under an
``images/`` folder beside it. The JSON document itself is loaded whole (it holds only
metadata); image bytes are streamed one by one. Whole-image labels, which COCO lacks,
travel in each image's optional ``deeptrain`` object (``concepts``, ``negatives``, ``split``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Iterator

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


def _image_path(base: Path, file_name: str) -> Path:
    path = safe_join(base, file_name)
    if not path.exists() and (base / "images").is_dir():
        path = safe_join(base / "images", file_name)
    return path


def read(path: Path) -> Iterator[ReaderItem]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{path}: not a readable COCO JSON file: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise InvalidInput(f"{path}: a COCO file needs an 'images' list")
    categories = {c.get("id"): str(c.get("name")) for c in doc.get("categories") or [] if isinstance(c, dict)}
    images = {img.get("id"): img for img in doc["images"] if isinstance(img, dict)}

    boxes: dict[Any, list[tuple[int, dict]]] = defaultdict(list)
    for i, ann in enumerate(doc.get("annotations") or []):
        where = f"{path}:annotations[{i}]"
        if not isinstance(ann, dict) or ann.get("image_id") not in images:
            yield Rejection(where, f"image_id {ann.get('image_id') if isinstance(ann, dict) else None!r} is not in the images list")
            continue
        boxes[ann["image_id"]].append((i, ann))

    for j, img in enumerate(doc["images"]):
        where = f"{path}:images[{j}]"
        try:
            yield _record(path, where, img, boxes.get(img.get("id"), []), categories)
        except InvalidInput as exc:
            yield Rejection(f"{where} ({img.get('file_name') if isinstance(img, dict) else img!r})", str(exc))


def _record(path: Path, where: str, img: Any, anns: list[tuple[int, dict]], categories: dict) -> ImportRecord:
    if not isinstance(img, dict) or not isinstance(img.get("file_name"), str):
        raise InvalidInput("an image entry needs a 'file_name'")
    regions = []
    for i, ann in anns:
        if ann.get("category_id") not in categories:
            raise InvalidInput(
                f"annotations[{i}] names category_id {ann.get('category_id')!r}, which is not in the categories list"
            )
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise InvalidInput(f"annotations[{i}] has an invalid bbox {bbox!r} (want [x, y, width, height])")
        x, y, w, h = (float(v) for v in bbox)
        regions.append(Region(categories[ann["category_id"]], y, x, y + h, x + w))
    extra = img.get("deeptrain") or {}
    return ImportRecord(
        source=where,
        read_bytes=file_reader(_image_path(path.parent, img["file_name"])),
        concepts=tuple(extra.get("concepts", ())),
        negatives=tuple(extra.get("negatives", ())),
        regions=tuple(regions),
        pixel_boxes=True,
        split=extra.get("split"),
        input_id=extra.get("input_id"),
    )


def write(items: Iterable[ExportItem], out: Path, concepts: list[str]) -> int:
    cat_ids = {name: i + 1 for i, name in enumerate(concepts)}
    images, annotations = [], []
    for n, item in enumerate(items, 1):
        write_file(out / "images" / item.filename, item.read_bytes())
        extra = {k: v for k, v in (("concepts", item.concepts), ("negatives", item.negatives),
                                   ("split", item.split), ("input_id", item.input_id)) if v}
        images.append({"id": n, "file_name": item.filename, "width": item.width, "height": item.height, "deeptrain": extra})
        for r in item.regions:
            x, y = r.left_col * item.width, r.top_row * item.height
            w, h = (r.right_col - r.left_col) * item.width, (r.bottom_row - r.top_row) * item.height
            annotations.append({
                "id": len(annotations) + 1, "image_id": n, "category_id": cat_ids[r.concept],
                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0,
            })
    doc = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": name} for name, i in cat_ids.items()],
    }
    write_file(out / "annotations.json", json.dumps(doc).encode())
    return len(images)
