"""predict: a trained version's predictions on image files and folders, printed (and drawn with ``--save``).

A folder is predicted image by image in batches of ``BATCH`` (memory does not grow with its size), one
block per file. A detection prints one row per box: concept, score and the box in the original image's
pixels (``x0 y0 x1 y1``, the top-left corner first); a classification its top concepts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Optional

import typer
from PIL import Image
from rich.markup import escape

from deeptrain.cli.annotate import pixel_box, save_annotated
from deeptrain.cli.output import JsonOption, print_json, stderr, stdout, table
from deeptrain.errors import InvalidInput
from deeptrain.sdk import Client

BATCH = 32  # images per prediction call
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
SHOWN_CONCEPTS = 5  # a classification prints this many best concepts unless --top-k asks for another number


def image_files(paths: list[str]) -> Iterator[tuple[Path, Path]]:
    """``(file, name to save it under)`` for each path: a file as given, a folder's image files (by suffix,
    recursively, in sorted order) named by their path inside it."""
    for given in map(Path, paths):
        if not given.is_dir():
            yield given, Path(given.name)
            continue
        found = sorted(f for f in given.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise InvalidInput(f"{given}: no image files in this folder (looked for {', '.join(IMAGE_SUFFIXES)})")
        yield from ((f, f.relative_to(given)) for f in found)


def _batches(items: Iterator[tuple[Path, Path]]) -> Iterator[list[tuple[Path, Path]]]:
    batch: list[tuple[Path, Path]] = []
    for item in items:
        batch.append(item)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _row(path: Path, prediction: dict[str, Any]) -> dict[str, Any]:
    """What the command prints for one image: the SDK's prediction, and a detection's boxes in pixels."""
    row = {"image": str(path), **prediction}
    if prediction.get("regions") is not None:
        with Image.open(path) as image:  # the header only: the size the normalized boxes are fractions of
            width, height = image.size
        row.update(width=width, height=height, boxes=[
            {"concept": r["concept"], "value": r["value"], **pixel_box(r["bounding_box"], width, height)}
            for r in prediction["regions"]])
    return row


def _predict(client: Client, app: str, model: str, batch: list[tuple[Path, Path]],
             **options: Any) -> list[dict[str, Any]]:
    """Rows for a batch; where the batch fails on a bad image, each image on its own (the bad one's row is
    its ``error``), so one bad file in a folder does not stop the rest."""
    try:
        predictions = client.predict(app, model, [p for p, _ in batch], **options)
        return [_row(path, p.model_dump(mode="json")) for (path, _), p in zip(batch, predictions)]
    except InvalidInput:  # a bad image (a missing model or version fails the command at once)
        if len(batch) == 1:
            raise
    rows = []
    for item in batch:
        try:
            rows += _predict(client, app, model, [item], **options)
        except InvalidInput as exc:
            rows.append({"image": str(item[0]), "error": str(exc)})
    return rows


def render_row(row: dict[str, Any], top_k: int | None) -> None:
    """One image's block: its boxes (a table), its top concepts, its embedding's size, or its error."""
    if "error" in row:
        stderr.print("[red]error:[/] " + escape(row["error"]), soft_wrap=True)
    elif "boxes" in row:
        title = f"{row['image']} ({row['width']}x{row['height']}): {len(row['boxes'])} box(es)"
        if not row["boxes"]:
            _line(f"{title} above the score threshold")
            return
        boxes = [{**b, "score": f"{b['value']:.3f}"} for b in row["boxes"]]
        table(boxes, ["concept", "score", "x0", "y0", "x1", "y1"], escape(title))
    elif "concepts" in row:
        _line(f"{row['image']}: " + ", ".join(f"{c['id']} {c['value']:.3f}"
                                              for c in row["concepts"][: top_k or SHOWN_CONCEPTS]))
    else:
        _line(f"{row['image']}: embedding of {len(row['embedding'])} dims")


def _line(text: str) -> None:
    """One line per image, never wrapped (greppable), a path's brackets not read as markup."""
    stdout.print(text, soft_wrap=True, markup=False, highlight=False)


def predict_command(
    app: str, model: str,
    images: list[str] = typer.Argument(..., help="Image files or folders (a folder: every image in it, recursively)."),
    version: Optional[str] = typer.Option(None, help="Model version (default: the model's default/newest)."),
    threshold: Optional[float] = typer.Option(None, help="Detection score threshold (default: the version's)."),
    top_k: Optional[int] = typer.Option(None, min=1, help="Only the k best concepts."),
    save: Optional[Path] = typer.Option(None, "--save", file_okay=False,
                                        help="Write annotated copies here (boxes with concept and score; the top "
                                             "concepts under a classified image), named as the inputs."),
    json: bool = JsonOption,
):
    """Predict with a trained version: boxes in pixels (detection), top concepts (classification) or embeddings."""
    client, rows = Client(), []
    for batch in _batches(image_files(images)):
        batch_rows = _predict(client, app, model, batch, version_id=version, threshold=threshold, top_k=top_k)
        for (path, name), row in zip(batch, batch_rows):
            if save is not None and "error" not in row:
                row["saved"] = str(save_annotated(path, save / name, row))
            if not json:
                render_row(row, top_k)
        rows += batch_rows
    if all("error" in row for row in rows):  # nothing could be predicted: the first reason, as an error
        raise InvalidInput(rows[0]["error"])
    if json:
        print_json(rows)
    elif save is not None:
        _line(f"annotated images written to {save}")
