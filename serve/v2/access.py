"""Who calls, in which app, with which rights: checked from the ``Authorization`` header and the path,
before any of the body is read (a caller without a valid key costs one key lookup).

The app comes from the path (``/v2/users/{user_id}/apps/{app_id}/…``, ``/v2/apps/{app_id}/…``) or,
on the short form (``/v2/…``), from the app key itself; a user key names the app in the path.
deeptrain has one owner: ``{user_id}`` is ``me`` or any id, the key and the app decide.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from fastapi import Header, Path, Request

from deeptrain.errors import Forbidden
from deeptrain.services import keys as key_service
from deeptrain.services.context import Context
from serve.caches import key_digest
from serve.v2.state import Services, services

# what a route needs of its key: an app (checked against an app key's), or none (the route decides)
APP, USER, ANY = "app", "user", "any"


def _id_path():  # a new FieldInfo per parameter: FastAPI binds one to its parameter's name
    return Path(..., min_length=1, max_length=128)


@dataclass(frozen=True)
class Access:
    services: Services
    app_id: str | None
    key: dict[str, Any]

    @property
    def ctx(self) -> Context:
        return self.services.ctx

    @property
    def user_key(self) -> bool:
        return self.key["kind"] == "user"


async def authenticated(svc: Services, authorization: str | None) -> dict[str, Any]:
    """The key of an ``Authorization`` header: from the replica's cache while it is fresh (``serve/caches.py``),
    else from the store (a failure is never cached)."""
    digest = key_digest(authorization)
    key = None if digest is None else svc.caches.keys.get(digest)
    if key is None:
        key = await asyncio.to_thread(key_service.authenticate, svc.ctx, authorization)
        svc.caches.keys.put(digest, key)
    return key


async def check(request: Request, authorization: str | None, app_id: str | None, scope: str | None,
                need: str) -> Access:
    svc = services(request)
    key = await authenticated(svc, authorization)
    if need == APP and app_id is None:
        if key["kind"] == "user":
            raise Forbidden("a user key acts in any app: name it in the path, /v2/users/me/apps/{app_id}/...",
                            "app_key")
        app_id = key["app_id"]
    if need != ANY:
        key_service.check_access(key, app_id if need == APP else None, scope,
                                 read_only=request.method in ("GET", "HEAD"))
    return Access(svc, app_id, key)


def dependency(form: str, scope: str | None, need: str):
    """The FastAPI dependency checking a route's key in one path form (``users``, ``apps`` or ``short``)."""
    if form == "users" and need == APP:
        async def in_users_app(request: Request, user_id: str = _id_path(), app_id: str = _id_path(),
                               authorization: str | None = Header(None)) -> Access:
            return await check(request, authorization, app_id, scope, need)
        return in_users_app
    if form == "users":
        async def in_user(request: Request, user_id: str = _id_path(),
                          authorization: str | None = Header(None)) -> Access:
            return await check(request, authorization, None, scope, need)
        return in_user
    if form == "apps":
        async def in_app(request: Request, app_id: str = _id_path(), authorization: str | None = Header(None)) -> Access:
            return await check(request, authorization, app_id, scope, need)
        return in_app

    async def short(request: Request, authorization: str | None = Header(None)) -> Access:
        return await check(request, authorization, None, scope, need)
    return short
