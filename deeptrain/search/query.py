"""Querying an app's search index: ``search`` (as the SDK calls it), ``index_info``, and the checks the
HTTP gateway shares (``check_concept``, ``query_source``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import select

from deeptrain.errors import InvalidInput, NotFound
from deeptrain.images import ImageLimits, ImageSource, read_checked_image
from deeptrain.search.cache import load_index, loaded_model
from deeptrain.search.embedding import embed_bytes
from deeptrain.search.faiss_index import SearchIndex, check_top_k
from deeptrain.search.index_files import read_pointer
from deeptrain.services.context import Context, require_app
from deeptrain.services.inputs import get_input_bytes
from deeptrain.store import Concept


def check_concept(ctx: Context, app_id: str, concept: str | None) -> None:
    if concept is None:
        return
    with ctx.store.session() as s:
        require_app(s, app_id)
        if s.get(Concept, (app_id, concept)) is None:
            known = s.scalars(select(Concept.id).where(Concept.app_id == app_id).order_by(Concept.id)).all()
            raise NotFound(f"concept {concept!r} does not exist in app {app_id!r} "
                           f"(concepts: {', '.join(known) or 'none'})", "concept")


def query_source(ctx: Context, app_id: str, index: SearchIndex, image: bytes | None = None,
                 input_id: str | None = None) -> tuple[np.ndarray | None, bytes | None]:
    """What to search with: the stored vector of an indexed input, else image bytes to embed: ``image``
    as ``deeptrain.images.read_checked_image`` returned it (checked there, decoded once, when embedded),
    or the bytes of a stored input added since the last build."""
    if (image is None) == (input_id is None):
        raise InvalidInput("give exactly one of an image or an input id to search with")
    if input_id is None:
        return None, image
    vector = index.vector_of(input_id)
    if vector is not None:
        return vector, None
    try:
        return None, get_input_bytes(ctx, app_id, input_id)  # added since the last build: embed it now
    except NotFound:
        raise NotFound(f"input {input_id!r} does not exist in app {app_id!r}", "input") from None


def search(ctx: Context, app_id: str, image: ImageSource | None = None, input_id: str | None = None,
           top_k: int = 10, concept: str | None = None) -> list[dict[str, Any]]:
    """Nearest inputs of the app to an image (bytes or a file) or a stored input (itself excluded), best first.

    Each hit is ``{"input_id", "score" (cosine similarity), "concepts"}``; ``concept``
    keeps only inputs labelled with it.
    """
    top_k = check_top_k(top_k)
    index = load_index(ctx, app_id)
    check_concept(ctx, app_id, concept)
    if image is not None and input_id is None:  # the one intake: read (bounded) and header-checked, once
        image = read_checked_image(image, ImageLimits.of(ctx.settings), "query image")
    vector, data = query_source(ctx, app_id, index, image, input_id)  # type: ignore[arg-type]
    if vector is None:
        vector = embed_bytes(loaded_model(ctx, index.artifacts), [data], ["query image"])  # type: ignore[list-item]
    return index.query(vector, top_k, concept, exclude=input_id)


def index_info(ctx: Context, app_id: str) -> dict[str, Any]:
    """The app's search index pointer (model, version, size, when built) and, from indexes built since it was
    recorded, ``search_index``: its kind and, when approximate, the ``nprobe`` chosen and the recall measured."""
    pointer = read_pointer(ctx, app_id)
    info = {k: pointer[k] for k in ("app_id", "model_id", "version_id", "generation", "dim", "total", "updated_at")}
    if pointer.get("search_index"):
        info["search_index"] = pointer["search_index"]
    return info
