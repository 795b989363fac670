"""Pascal VOC XML: one ``.xml`` per image with ``<object><name>`` and pixel ``<bndbox>``.

The image is ``<filename>`` beside the XML file, or in a ``JPEGImages/`` folder next to
an ``Annotations/`` folder (the VOC layout).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterable, Iterator

from deeptrain.errors import InvalidInput
from deeptrain.formats.records import (
    ExportItem,
    LINK_OUT,
    ImportRecord,
    ReaderItem,
    Region,
    Rejection,
    file_reader,
    is_inside,
    safe_join,
    write_file,
)

MAX_XML_BYTES = 4 * 1024 * 1024  # one annotation file


def _xml_files(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    yield from sorted(p for p in root.rglob("*.xml") if not any(part.startswith(".") for part in p.relative_to(root).parts))


def _image_path(xml_path: Path, filename: str) -> Path:
    path = safe_join(xml_path.parent, filename)
    if not path.exists() and xml_path.parent.name == "Annotations":
        path = safe_join(xml_path.parent.parent / "JPEGImages", filename)
    return path


def _number(obj: ET.Element, tag: str, where: str) -> float:
    text = obj.findtext(f"bndbox/{tag}")
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidInput(f"{where}: <bndbox><{tag}> is missing or not a number ({text!r})") from None


def record_from_xml(xml_path: Path) -> ImportRecord:
    size = xml_path.stat().st_size
    if size > MAX_XML_BYTES:
        raise InvalidInput(f"{size:,} bytes, over the {MAX_XML_BYTES:,}-byte limit for one annotation file")
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise InvalidInput(f"not valid XML: {exc}") from None
    filename = root.findtext("filename")
    if not filename:
        raise InvalidInput("missing <filename>")
    regions = []
    for k, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise InvalidInput(f"object {k} has no <name>")
        where = f"object {k} ({name})"
        xmin, ymin, xmax, ymax = (_number(obj, t, where) for t in ("xmin", "ymin", "xmax", "ymax"))
        regions.append(Region(name, ymin, xmin, ymax, xmax))
    return ImportRecord(
        source=str(xml_path),
        read_bytes=file_reader(_image_path(xml_path, filename)),
        regions=tuple(regions),
        pixel_boxes=True,
    )


def read(root: Path) -> Iterator[ReaderItem]:
    for xml_path in _xml_files(root):
        if root.is_dir() and not is_inside(root, xml_path):
            yield Rejection(str(xml_path), LINK_OUT)
            continue
        try:
            yield record_from_xml(xml_path)
        except InvalidInput as exc:
            yield Rejection(str(xml_path), str(exc))


def _xml(item: ExportItem) -> bytes:
    ann = ET.Element("annotation")
    ET.SubElement(ann, "folder").text = "JPEGImages"
    ET.SubElement(ann, "filename").text = item.filename
    size = ET.SubElement(ann, "size")
    for tag, value in (("width", item.width), ("height", item.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    for r in item.regions:
        obj = ET.SubElement(ann, "object")
        ET.SubElement(obj, "name").text = r.concept
        ET.SubElement(obj, "difficult").text = "0"
        box = ET.SubElement(obj, "bndbox")
        coords = (r.left_col * item.width, r.top_row * item.height, r.right_col * item.width, r.bottom_row * item.height)
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), coords):
            ET.SubElement(box, tag).text = f"{value:.10g}"
    ET.indent(ann)
    return ET.tostring(ann, encoding="utf-8", xml_declaration=True)


def write(items: Iterable[ExportItem], out: Path, concepts: list[str]) -> int:
    n = 0
    for item in items:
        write_file(out / "JPEGImages" / item.filename, item.read_bytes())
        write_file(out / "Annotations" / f"{item.input_id}.xml", _xml(item))
        n += 1
    return n
