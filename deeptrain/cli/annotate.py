"""Annotated copies of predicted images (``deeptrain predict --save DIR``): boxes drawn with their concept
and score (detection), or a caption band under the image with its top concepts (classification, embedding)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from PIL import Image, ImageDraw

from deeptrain.images import decode_checked

PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#fabed4",
           "#469990"]  # one colour per concept, in the order the concepts first appear


def pixel_box(box: dict[str, float], width: int, height: int) -> dict[str, int]:
    """A normalized ``top_row, left_col, bottom_row, right_col`` box in pixels of a ``width`` x ``height``
    image: ``x0, y0, x1, y1`` (x0, y0 the top-left corner)."""
    return {"x0": round(box["left_col"] * width), "y0": round(box["top_row"] * height),
            "x1": round(box["right_col"] * width), "y1": round(box["bottom_row"] * height)}


def draw_boxes(image: Image.Image, boxes: Sequence[dict[str, Any]]) -> Image.Image:
    """``image`` with each box (``concept``, ``value``, pixel ``x0 y0 x1 y1``) drawn and labelled."""
    import torch
    from torchvision.transforms.functional import pil_to_tensor, to_pil_image
    from torchvision.utils import draw_bounding_boxes

    if not boxes:
        return image
    colours = {c: PALETTE[k % len(PALETTE)] for k, c in enumerate(dict.fromkeys(b["concept"] for b in boxes))}
    xyxy = torch.tensor([[b["x0"], b["y0"], b["x1"], b["y1"]] for b in boxes], dtype=torch.float)
    drawn = draw_bounding_boxes(pil_to_tensor(image), xyxy, labels=[f"{b['concept']} {b['value']:.2f}" for b in boxes],
                                colors=[colours[b["concept"]] for b in boxes], width=max(1, min(image.size) // 200))
    return to_pil_image(drawn)


def add_caption(image: Image.Image, text: str) -> Image.Image:
    """``image`` above a white band holding ``text`` (widened to the text where the image is narrower)."""
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), text)
    pad = 4
    out = Image.new("RGB", (max(image.width, right - left + 2 * pad), image.height + bottom - top + 2 * pad), "white")
    out.paste(image, (0, 0))
    ImageDraw.Draw(out).text((pad - left, image.height + pad - top), text, fill="black")
    return out


def save_annotated(source: Path, target: Path, row: dict[str, Any]) -> Path:
    """Write ``source`` annotated with its prediction ``row`` (as the predict command prints it) to ``target``."""
    image = decode_checked(source.read_bytes())
    if "boxes" in row:
        image = draw_boxes(image, row["boxes"])
    elif "concepts" in row:
        image = add_caption(image, ", ".join(f"{c['id']} {c['value']:.2f}" for c in row["concepts"][:3]))
    else:
        image = add_caption(image, f"embedding of {len(row['embedding'])} dims")
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target)
    return target
