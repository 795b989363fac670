"""Identifier rules shared by apps, concepts, inputs and models."""

from __future__ import annotations

import re
import unicodedata

from deeptrain.errors import InvalidInput

_ID_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$")
_INPUT_ID_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,126}[A-Za-z0-9])?$")


def check_id(value: object, kind: str) -> str:
    """Validate a user-chosen slug (app, concept, model id): lowercase, digits, '-' and '_'."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise InvalidInput(
            f"invalid {kind} id {value!r}: use 1-64 lowercase letters, digits, '-' or '_', "
            "starting and ending with a letter or digit"
        )
    return value


# words of the HTTP API's paths under /inputs/ (/inputs/status, /inputs/searches ...): never an input's id
RESERVED_INPUT_IDS = frozenset({"status", "searches", "annotations"})


def check_input_id(value: object) -> str:
    """Input ids may be user-given (case kept) but never contain path separators."""
    if value in RESERVED_INPUT_IDS:
        raise InvalidInput(f"invalid input id {value!r}: {', '.join(sorted(RESERVED_INPUT_IDS))} name API paths")
    if not isinstance(value, str) or not _INPUT_ID_RE.match(value) or ".." in value:
        raise InvalidInput(
            f"invalid input id {value!r}: use 1-128 letters, digits, '.', '-' or '_' "
            "(no path separators, no '..')"
        )
    return value


def slugify(name: str) -> str:
    """A concept id from a display name: 'T-shirt/top' -> 't-shirt-top'."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:64].strip("-")
    if not slug:
        raise InvalidInput(f"concept name {name!r} has no letters or digits to make an id from")
    return slug
