"""API keys: app keys with scopes, and user keys. Keys are random (256 bits), shown once, stored as SHA-256.

A key is ``dtk_<id>_<secret>``: the id names it in listings and revocation, the whole
string is what ``Authorization: Key <key>`` carries. SHA-256 (not a slow password hash)
is enough because the secret is random, not chosen by a person.

An **app key** acts in its own app only, with its scopes:

- ``predict``: predictions and workflow results; ``search``: visual search;
- ``inputs``: concepts, inputs, labels and boxes, dataset versions;
- ``train``: models, training (model versions), evaluation, tuning;
- ``admin``: the app's keys, deleting the app;
- ``read`` (reads of inputs and models) and ``write`` (= inputs + train), kept from before.

A **user key** (``create_user_key``; on the server host: ``deeptrain keys create --user``) has
every scope in every app and is the only key that creates apps or lists all of them. Clarifai's
scope names (``Predict``, ``Inputs:Add``, ``Models:Train``, ``All`` ...) are accepted as aliases.
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

SCOPES = ("predict", "search", "inputs", "train", "admin", "read", "write")
_IMPLIED = {"write": {"inputs", "train"}}
_READABLE = {"inputs", "train"}  # what the read scope reads
_CLARIFAI = {"all": SCOPES[:5], "predict": ("predict",), "search": ("search",), "inputs": ("inputs",),
             "concepts": ("inputs",), "annotations": ("inputs",), "datasets": ("inputs",), "models": ("train",),
             "workflows": ("train",), "keys": ("admin",), "apps": ("admin",)}


def _sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _key_dict(k: ApiKey) -> dict[str, Any]:
    return {"id": k.id, "app_id": k.app_id, "kind": k.kind, "name": k.name, "scopes": list(k.scopes),
            "created_at": k.created_at.isoformat(), "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None}


def check_scopes(scopes: Iterable[str]) -> list[str]:
    """deeptrain's scope names (Clarifai's as aliases: ``Inputs:Add`` -> inputs), in order, without repeats."""
    names: list[str] = []
    for scope in scopes:
        if scope in SCOPES:
            names.append(scope)
            continue
        alias = _CLARIFAI.get(str(scope).partition(":")[0].lower())
        if alias is None:
            raise InvalidInput(f"invalid scope {scope!r}: choose from {', '.join(SCOPES)}")
        names.extend(alias)
    if not names:
        raise InvalidInput(f"a key needs at least one scope: choose from {', '.join(SCOPES)}")
    return list(dict.fromkeys(names))


def _new_key(s, app_id: str | None, kind: str, scopes: list[str], name: str) -> dict[str, Any]:
    key_id = secrets.token_hex(4)
    key = f"dtk_{key_id}_{secrets.token_urlsafe(32)}"
    row = ApiKey(id=key_id, app_id=app_id, kind=kind, key_sha256=_sha256(key), name=name or key_id, scopes=scopes)
    s.add(row)
    s.flush()
    return {**_key_dict(row), "key": key}


def create_key(ctx: Context, app_id: str, scopes: Iterable[str] = ("predict",), name: str = "") -> dict[str, Any]:
    """A new app key; the returned ``key`` is the only time it is shown."""
    scopes = check_scopes(scopes)
    with ctx.store.session() as s:
        require_app(s, app_id)
        return _new_key(s, app_id, "app", scopes, name)


def create_user_key(ctx: Context, name: str = "") -> dict[str, Any]:
    """A new user key (every scope, every app, creates apps); the returned ``key`` is shown only now."""
    with ctx.store.session() as s:
        return _new_key(s, None, "user", list(SCOPES[:5]), name)


def list_keys(ctx: Context, app_id: str | None = None) -> list[dict[str, Any]]:
    """The app's keys; without an app, every key (user keys first)."""
    with ctx.store.session() as s:
        query = select(ApiKey).order_by(ApiKey.kind.desc(), ApiKey.created_at)
        if app_id is not None:
            require_app(s, app_id)
            query = query.where(ApiKey.app_id == app_id)
        return [_key_dict(k) for k in s.scalars(query)]


def revoke_key(ctx: Context, app_id: str | None, key_id: str) -> dict[str, Any]:
    """Revoke one of the app's keys (``app_id`` None: any key, a user key included)."""
    with ctx.store.session() as s:
        if app_id is not None:
            require_app(s, app_id)
        row = s.get(ApiKey, key_id)
        if row is None or (app_id is not None and row.app_id != app_id):
            where = f" in app {app_id!r}" if app_id is not None else ""
            raise NotFound(f"API key {key_id!r} does not exist{where}", "key")
        row.revoked_at = row.revoked_at or utcnow()
        s.flush()
        return _key_dict(row)


def authenticate(ctx: Context, authorization: str | None) -> dict[str, Any]:
    """The key an ``Authorization: Key <key>`` header carries (unknown, revoked or malformed: Unauthorized)."""
    if not authorization:
        raise Unauthorized("missing API key: send the header 'Authorization: Key <key>' "
                           "(create one with 'deeptrain keys create APP')", "missing")
    kind, _, key = authorization.partition(" ")
    if kind.lower() != "key" or not key.strip():
        raise Unauthorized("malformed Authorization header: expected 'Key <key>'", "malformed")
    with ctx.store.session() as s:
        row = s.scalar(select(ApiKey).where(ApiKey.key_sha256 == _sha256(key.strip())))
        if row is None:
            raise Unauthorized("unknown API key")
        if row.revoked_at is not None:
            raise Unauthorized(f"API key {row.id!r} was revoked")
        return _key_dict(row)


def allows(key: dict[str, Any], scope: str, read_only: bool = False) -> bool:
    """Whether a key's scopes grant ``scope`` (``read_only``: the request only reads, so ``read`` does too)."""
    granted = set(key["scopes"]).union(*(_IMPLIED.get(s, set()) for s in key["scopes"]))
    return scope in granted or (read_only and scope in _READABLE and "read" in granted)


def check_access(key: dict[str, Any], app_id: str | None, scope: str | None, read_only: bool = False) -> None:
    """An authenticated key acting in ``app_id`` (None: outside any app, user keys only) with ``scope``
    (None: any key of the app)."""
    if key["kind"] == "user":
        return
    if app_id is None:
        raise Forbidden(f"API key {key['id']!r} is an app key: this needs a user key "
                        "(`deeptrain keys create --user` on the server host)", "user_key")
    if key["app_id"] != app_id:
        raise Forbidden(f"API key {key['id']!r} is not valid for app {app_id!r}", "other_app")
    if scope is not None and not allows(key, scope, read_only):
        raise Forbidden(f"API key {key['id']!r} lacks the {scope!r} scope (it has: {', '.join(key['scopes'])})")


def authorize(ctx: Context, authorization: str | None, app_id: str, scope: str) -> dict[str, Any]:
    """Check an ``Authorization: Key <key>`` header for ``scope`` on ``app_id``."""
    key = authenticate(ctx, authorization)
    check_access(key, app_id, scope)
    return key
