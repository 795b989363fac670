"""The query parameters of the inputs listing and counts (deeptrain extensions): ``concept_id``, ``split``,
``labelled`` and ``thumbnail``, checked here so a bad value is a 400 that names the parameter and what it
takes (not FastAPI's "invalid request body"). An empty value (``?split=``, what a form's "any" choice sends)
filters nothing.

Thumbnails of a page are made in one bounded pool (``THUMBNAIL_WORKERS`` at a time, so at most that many
stored images are held and decoded at once) and only for a page of at most ``MAX_THUMBNAIL_PAGE`` inputs.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from fastapi import Query

from deeptrain.errors import DeeptrainError, InvalidInput
from deeptrain.formats.records import SPLITS
from deeptrain.images_thumbnail import data_url, thumbnail_png
from deeptrain.services.input_reads import InputFilter

log = logging.getLogger("deeptrain.serve")

LIST_THUMBNAIL = (16, 256)  # ?thumbnail= of the listing
IMAGE_SIZE = (16, 1024)  # ?size= of one input's image
MAX_THUMBNAIL_PAGE = 200  # per_page with thumbnails
THUMBNAIL_WORKERS = 4
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}
_pool = ThreadPoolExecutor(max_workers=THUMBNAIL_WORKERS, thread_name_prefix="thumbnail")


def bounded_int(name: str, text: str | None, bounds: tuple[int, int]) -> int | None:
    """``text`` as an int within ``bounds`` (inclusive); absent or empty: None."""
    if text is None or not text.strip():
        return None
    low, high = bounds
    try:
        value = int(text.strip())
    except ValueError:
        raise InvalidInput(f"invalid {name}={text!r}: expected an integer from {low} to {high}") from None
    if not low <= value <= high:
        raise InvalidInput(f"invalid {name}={value}: expected an integer from {low} to {high}")
    return value


def _labelled(text: str | None) -> bool | None:
    if text is None or not text.strip():
        return None
    low = text.strip().lower()
    if low in _TRUE | _FALSE:
        return low in _TRUE
    raise InvalidInput(f"invalid labelled={text!r}: expected true or false")


def _split(text: str | None) -> str | None:
    if text is None or not text.strip():
        return None
    low = text.strip().lower()
    if low not in (*SPLITS, "none"):
        raise InvalidInput(f"invalid split={text!r}: expected one of {', '.join((*SPLITS, 'none'))} "
                           "(none: inputs without a split)")
    return low


def input_filter(
    concept_id: str | None = Query(None, max_length=256, description="only inputs with a positive label or a box "
                                                                     "of this concept"),
    split: str | None = Query(None, max_length=32, description="train, validation, test or none (no split)"),
    labelled: str | None = Query(None, max_length=16, description="true: inputs with a positive label or a box; "
                                                                  "false: inputs with none"),
) -> InputFilter:
    """The filters of a listing or a count (a FastAPI dependency)."""
    concept = concept_id.strip() if concept_id and concept_id.strip() else None
    return InputFilter(concept_id=concept, split=_split(split), labelled=_labelled(labelled))


def thumbnail_query(thumbnail: str | None = Query(None, max_length=16, description="add a PNG data URL of "
                    f"longest side N ({LIST_THUMBNAIL[0]}..{LIST_THUMBNAIL[1]}) to each input")) -> int | None:
    return bounded_int("thumbnail", thumbnail, LIST_THUMBNAIL)


def thumbnails(read: Callable[[str], bytes], keys: list[str | None], size: int,
               max_pixels: int) -> list[str | None]:
    """Data URLs of the stored images ``keys`` (one page), made in the pool; one that cannot be read or decoded
    (or an input deleted meanwhile: no key) is None, and the rest of the page still shows."""
    def one(key: str | None) -> str | None:
        if key is None:
            return None
        try:
            return data_url(thumbnail_png(read(key), size, max_pixels))
        except DeeptrainError as exc:
            log.warning("no thumbnail for a stored image: %s", exc)
            return None

    return list(_pool.map(one, keys))


def with_thumbnails(rendered: list[dict[str, Any]], urls: list[str | None]) -> list[dict[str, Any]]:
    return [{**item, "thumbnail": url} for item, url in zip(rendered, urls)]
