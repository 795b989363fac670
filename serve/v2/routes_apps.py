"""Apps, concepts and keys (Clarifai's PostApps, ListApps, GetApp, DeleteApp, PostConcepts, ListConcepts,
GetConcept, PostKeys, ListKeys, ListAppKeys, DeleteKey, MyScopes; ``DELETE /concepts/{concept_id}`` is a
deeptrain extension)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field

from deeptrain.errors import Conflict, InvalidInput, NotFound
from deeptrain.services import apps as app_service
from deeptrain.services import concepts as concept_service
from deeptrain.services import keys as key_service
from serve.v2.access import ANY, USER, Access
from serve.v2.envelope import ok
from serve.v2.paging import Page, native, page_query, timestamp
from serve.v2.routing import Lenient, read_body, route

router = APIRouter(tags=["apps, concepts and keys"])
MAX_ITEMS = 128


class AppIn(Lenient):
    id: str = Field(..., max_length=64)
    name: str | None = Field(None, max_length=256)


class PostAppsBody(Lenient):
    apps: list[AppIn] = Field(..., min_length=1, max_length=1)


class ConceptIn(Lenient):
    id: str = Field(..., max_length=64)
    name: str | None = Field(None, max_length=256)


class PostConceptsBody(Lenient):
    concepts: list[ConceptIn] = Field(..., min_length=1, max_length=MAX_ITEMS)


class KeyAppIn(Lenient):
    id: str = Field(..., max_length=64)


class KeyIn(Lenient):
    description: str = Field("", max_length=256)
    scopes: list[str] = Field(..., min_length=1, max_length=64)
    apps: list[KeyAppIn] = Field(..., min_length=1, max_length=1)


class PostKeysBody(Lenient):
    keys: list[KeyIn] = Field(..., min_length=1, max_length=16)


def render_app(app: dict[str, Any]) -> dict[str, Any]:
    return {"id": app["id"], "name": app["name"], "user_id": "me", "created_at": timestamp(app["created_at"]),
            "metadata": native(app)}


def render_concept(concept: dict[str, Any], app_id: str) -> dict[str, Any]:
    return {"id": concept["id"], "name": concept["name"], "app_id": app_id, "metadata": native(concept)}


def render_key(key: dict[str, Any]) -> dict[str, Any]:
    """A key; on creation only, ``id`` is the secret itself (Clarifai's convention), else deeptrain's key id."""
    return {"id": key.get("key") or key["id"], "description": key["name"], "scopes": key["scopes"],
            "apps": [{"id": key["app_id"], "user_id": "me"}] if key["app_id"] else [],
            "type": "personal_access_token" if key["kind"] == "user" else "app_specific_key",
            "created_at": timestamp(key["created_at"]), "metadata": native(key)}


def _thread(fn, *args: Any):
    return asyncio.to_thread(fn, *args)


# --- apps --------------------------------------------------------------------------------------------------

@route(router, "POST", "/apps", scope=None, need=USER, body=PostAppsBody, summary="create an app (user key)")
async def post_apps(access: Access, request: Request) -> dict[str, Any]:
    body = await read_body(request, PostAppsBody)
    app = await _thread(app_service.create_app, access.ctx, body.apps[0].id, body.apps[0].name)
    return ok(apps=[render_app(app)])


@route(router, "GET", "/apps", scope=None, need=ANY, summary="list apps (an app key sees its own app)")
async def list_apps(access: Access, page: Page = Depends(page_query)) -> dict[str, Any]:
    if access.user_key:
        apps = await _thread(app_service.list_apps, access.ctx)
    else:
        apps = [await _thread(app_service.get_app, access.ctx, access.key["app_id"])]
    return ok(apps=[render_app(a) for a in page.of(apps)])


@route(router, "GET", "", scope=None, forms=("users", "apps", "short"), short="/app", summary="an app and its counts")
async def get_app(access: Access) -> dict[str, Any]:
    return ok(app=render_app(await _thread(app_service.get_app, access.ctx, access.app_id)))


@route(router, "DELETE", "", scope="admin", forms=("users", "apps"),
       summary="delete an app with its inputs, models and stored objects (admin scope)")
async def delete_app(access: Access) -> dict[str, Any]:
    await _thread(app_service.delete_app, access.ctx, access.app_id)
    access.services.caches.forget()
    return ok()


@route(router, "GET", "/myscopes", scope=None, summary="the calling key's scopes in this app")
async def my_scopes(access: Access) -> dict[str, Any]:
    app = await _thread(app_service.get_app, access.ctx, access.app_id)
    return ok(scopes=access.key["scopes"], app=render_app(app))


# --- concepts ----------------------------------------------------------------------------------------------

@route(router, "POST", "/concepts", scope="inputs", body=PostConceptsBody, summary="create concepts")
async def post_concepts(access: Access, request: Request) -> dict[str, Any]:
    body = await read_body(request, PostConceptsBody)
    ids = [c.id for c in body.concepts]
    if len(set(ids)) != len(ids):
        raise InvalidInput("concept ids repeat in the request")

    def create() -> list[dict[str, Any]]:
        existing = {c["id"] for c in concept_service.list_concepts(access.ctx, access.app_id)}
        if clash := [i for i in ids if i in existing]:
            raise Conflict(f"concept(s) {', '.join(map(repr, clash))} already exist in app {access.app_id!r}")
        return [concept_service.create_concept(access.ctx, access.app_id, c.id, c.name) for c in body.concepts]

    return ok(concepts=[render_concept(c, access.app_id) for c in await _thread(create)])


@route(router, "GET", "/concepts", scope="inputs", summary="list concepts with their label and box counts")
async def list_concepts(access: Access, page: Page = Depends(page_query)) -> dict[str, Any]:
    concepts = await _thread(concept_service.list_concepts, access.ctx, access.app_id)
    return ok(concepts=[render_concept(c, access.app_id) for c in page.of(concepts)])


@route(router, "GET", "/concepts/{concept_id}", scope="inputs", summary="one concept")
async def get_concept(access: Access, concept_id: str) -> dict[str, Any]:
    concepts = await _thread(concept_service.list_concepts, access.ctx, access.app_id)
    found = next((c for c in concepts if c["id"] == concept_id), None)
    if found is None:
        raise NotFound(f"concept {concept_id!r} does not exist in app {access.app_id!r}", "concept")
    return ok(concept=render_concept(found, access.app_id))


@route(router, "DELETE", "/concepts/{concept_id}", scope="inputs",
       summary="delete a concept (extension); one that labels inputs needs ?force=true, which drops those labels")
async def delete_concept(access: Access, concept_id: str, force: bool = False) -> dict[str, Any]:
    deleted = await _thread(concept_service.delete_concept, access.ctx, access.app_id, concept_id, force)
    return ok(concept=render_concept(deleted, access.app_id))


# --- keys --------------------------------------------------------------------------------------------------

def _admin_app(access: Access, app_id: str) -> None:
    """A user key manages every app's keys; an app key (admin scope) only its own app's."""
    key_service.check_access(access.key, app_id, "admin")


@route(router, "POST", "/keys", scope=None, need=ANY, forms=("users",), body=PostKeysBody,
       summary="create app keys (the answer's keys[].id is the secret, shown only now)")
async def post_keys(access: Access, request: Request) -> dict[str, Any]:
    body = await read_body(request, PostKeysBody)
    for key in body.keys:
        _admin_app(access, key.apps[0].id)
    made = [await _thread(key_service.create_key, access.ctx, k.apps[0].id, k.scopes, k.description)
            for k in body.keys]
    return ok(keys=[render_key(k) for k in made])


@route(router, "GET", "/keys", scope=None, need=ANY, forms=("users",),
       summary="list keys (a user key: all; an app key with admin scope: its app's)")
async def list_keys(access: Access, page: Page = Depends(page_query)) -> dict[str, Any]:
    if not access.user_key:
        _admin_app(access, access.key["app_id"])
    app_id = None if access.user_key else access.key["app_id"]
    keys = await _thread(key_service.list_keys, access.ctx, app_id)
    return ok(keys=[render_key(k) for k in page.of(keys)])


@route(router, "GET", "/keys", scope="admin", summary="list the app's keys (never a secret)")
async def list_app_keys(access: Access, page: Page = Depends(page_query)) -> dict[str, Any]:
    keys = await _thread(key_service.list_keys, access.ctx, access.app_id)
    return ok(keys=[render_key(k) for k in page.of(keys)])


@route(router, "DELETE", "/keys/{key_id}", scope=None, need=ANY, forms=("users",), summary="revoke a key")
async def delete_key(access: Access, key_id: str) -> dict[str, Any]:
    if access.user_key:
        await _thread(key_service.revoke_key, access.ctx, None, key_id)
    else:
        _admin_app(access, access.key["app_id"])
        await _thread(key_service.revoke_key, access.ctx, access.key["app_id"], key_id)
    access.services.caches.forget()  # this replica refuses the key at once, others within serve_cache_ttl_s
    return ok()
