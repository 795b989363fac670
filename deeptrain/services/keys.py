"""API keys per app, with scopes. Keys are random (256 bits), shown once, stored as SHA-256.

A key is ``dtk_<id>_<secret>``: the id names it in listings and revocation, the whole
string is what ``Authorization: Key <key>`` carries. SHA-256 (not a slow password hash)
is enough because the secret is random, not chosen by a person.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any, Iterable

from sqlalchemy import select

from deeptrain.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from deeptrain.services.context import Context, require_app
from deeptrain.store import ApiKey
from deeptrain.store.schema import utcnow

SCOPES = ("predict", "search", "read", "write")


def _sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _key_dict(k: ApiKey) -> dict[str, Any]:
    return {"id": k.id, "app_id": k.app_id, "name": k.name, "scopes": list(k.scopes),
            "created_at": k.created_at.isoformat(), "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None}


def _check_scopes(scopes: Iterable[str]) -> list[str]:
    scopes = list(dict.fromkeys(scopes))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise InvalidInput(f"invalid scopes {unknown or scopes!r}: choose from {', '.join(SCOPES)}")
    return scopes


def create_key(ctx: Context, app_id: str, scopes: Iterable[str] = ("predict",), name: str = "") -> dict[str, Any]:
    """A new key; the returned ``key`` is the only time it is shown."""
    scopes = _check_scopes(scopes)
    key_id = secrets.token_hex(4)
    key = f"dtk_{key_id}_{secrets.token_urlsafe(32)}"
    with ctx.store.session() as s:
        require_app(s, app_id)
        row = ApiKey(id=key_id, app_id=app_id, key_sha256=_sha256(key), name=name or key_id, scopes=scopes)
        s.add(row)
        s.flush()
        return {**_key_dict(row), "key": key}


def list_keys(ctx: Context, app_id: str) -> list[dict[str, Any]]:
    with ctx.store.session() as s:
        require_app(s, app_id)
        return [_key_dict(k) for k in s.scalars(select(ApiKey).where(ApiKey.app_id == app_id).order_by(ApiKey.created_at))]


def revoke_key(ctx: Context, app_id: str, key_id: str) -> dict[str, Any]:
    with ctx.store.session() as s:
        require_app(s, app_id)
        row = s.get(ApiKey, key_id)
        if row is None or row.app_id != app_id:
            raise NotFound(f"API key {key_id!r} does not exist in app {app_id!r}")
        row.revoked_at = row.revoked_at or utcnow()
        s.flush()
        return _key_dict(row)


def authorize(ctx: Context, authorization: str | None, app_id: str, scope: str) -> dict[str, Any]:
    """Check an ``Authorization: Key <key>`` header for ``scope`` on ``app_id``."""
    if not authorization:
        raise Unauthorized("missing API key: send the header 'Authorization: Key <key>' "
                           "(create one with 'deeptrain keys create APP')")
    kind, _, key = authorization.partition(" ")
    if kind.lower() != "key" or not key.strip():
        raise Unauthorized("malformed Authorization header: expected 'Key <key>'")
    with ctx.store.session() as s:
        row = s.scalar(select(ApiKey).where(ApiKey.key_sha256 == _sha256(key.strip())))
        if row is None:
            raise Unauthorized("unknown API key")
        if row.revoked_at is not None:
            raise Unauthorized(f"API key {row.id!r} was revoked")
        if row.app_id != app_id:
            raise Forbidden(f"API key {row.id!r} is not valid for app {app_id!r}")
        if scope not in row.scopes:
            raise Forbidden(f"API key {row.id!r} lacks the {scope!r} scope (it has: {', '.join(row.scopes)})")
        return _key_dict(row)
