"""Every route of the HTTP API's OpenAPI document x every kind of bad key -> the right status and Clarifai code,
before anything of the request is read; and each key reaches only what its kind, app and scopes allow.

The control plane runs in process over ASGI (``serve.v2.control.control_api``, the same routers the Serve
gateway includes); a route's scope and kind of key are in its OpenAPI operation (``x-deeptrain-scope``,
``x-deeptrain-need``), so a route added without them fails here."""

from __future__ import annotations

import re
import tempfile

import pytest
from fastapi.testclient import TestClient

from deeptrain.services import apps as app_service
from deeptrain.services import keys as key_service
from deeptrain.services.context import Context
from deeptrain.wire import codes
from serve.v2.control import control_api
from serve.v2.state import Services

ALPHA, BETA = "alpha", "beta"
ALL = ["predict", "search", "inputs", "train", "admin"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from deeptrain.config import Settings

    home = tmp_path_factory.mktemp("auth")
    ctx = Context.from_settings(Settings.from_env(env={"DEEPTRAIN_HOME": str(home)}))
    for app in (ALPHA, BETA):
        app_service.create_app(ctx, app)
    revoked = key_service.create_key(ctx, ALPHA, ALL)
    key_service.revoke_key(ctx, ALPHA, revoked["id"])
    keys = {"revoked": revoked["key"], "beta": key_service.create_key(ctx, BETA, ALL)["key"],
            "user": key_service.create_user_key(ctx)["key"], "alpha": key_service.create_key(ctx, ALPHA, ALL)["key"]}
    keys.update({f"only-{s}": key_service.create_key(ctx, ALPHA, [s])["key"] for s in ALL})
    http = TestClient(control_api(Services(ctx)), raise_server_exceptions=False)
    return http, keys


def _operations() -> list[tuple[str, str, str | None, str]]:
    from deeptrain.config import Settings

    # the OpenAPI document needs no data, only a home of its own (never a fixed path another run may share),
    # removed once the document is made (collection runs this at import: no fixture's tmp_path yet)
    with tempfile.TemporaryDirectory(prefix="deeptrain-openapi-", ignore_cleanup_errors=True) as home:
        ctx = Context.from_settings(Settings.from_env(env={"DEEPTRAIN_HOME": home}))
        doc = control_api(Services(ctx)).openapi()
        ctx.store.engine.dispose()
    ops = [(method.upper(), path, None if op["x-deeptrain-scope"] == "none" else op["x-deeptrain-scope"],
            op["x-deeptrain-need"])
           for path, item in doc["paths"].items() for method, op in item.items()]
    return sorted(ops)


OPERATIONS = _operations()


def _url(path: str) -> str:
    values = {"user_id": "me", "app_id": ALPHA}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "x1"), path)


def _call(http: TestClient, method: str, path: str, key: str | None):
    headers = {"Authorization": f"Key {key}"} if key else {}
    # a body that is not even JSON: the key must be refused before it is read
    return http.request(method, _url(path), headers=headers, content=b"{not json" if method != "GET" else None)


def test_every_route_declares_its_scope_and_kind_of_key():
    assert len(OPERATIONS) >= 15
    assert all(need in ("app", "user", "any") for *_, need in OPERATIONS), OPERATIONS


@pytest.mark.parametrize(("method", "path", "scope", "need"), OPERATIONS, ids=[f"{m} {p}" for m, p, *_ in OPERATIONS])
def test_bad_keys_are_refused_before_the_body(world, method, path, scope, need):
    http, keys = world
    cases = [(None, 401, codes.CONN_KEY_NOT_FOUND), ("dtk_0000_wrong", 401, codes.CONN_KEY_INVALID),
             (keys["revoked"], 401, codes.CONN_KEY_INVALID)]
    if "{app_id}" in path:  # a valid key of another app, all scopes: refused whatever the route
        cases.append((keys["beta"], 403, codes.CONN_CREDENTIALS_INVALID))
    if need == "user":  # an app key where a user key is needed
        cases.append((keys["alpha"], 403, codes.CONN_INSUFFICIENT_SCOPES))
    if need == "app" and scope is not None:  # a key of this app without the route's scope
        other = "search" if scope == "predict" else "predict"
        cases.append((keys[f"only-{other}"], 403, codes.CONN_INSUFFICIENT_SCOPES))
    if need == "app" and "{app_id}" not in path:  # the short form: a user key must name the app
        cases.append((keys["user"], 400, codes.CONN_INVALID_REQUEST))
    for key, http_status, code in cases:
        r = _call(http, method, path, key)
        assert (r.status_code, r.json()["status"]["code"]) == (http_status, code), (key and key[:12], r.text)


@pytest.mark.parametrize(("method", "path", "scope", "need"), OPERATIONS, ids=[f"{m} {p}" for m, p, *_ in OPERATIONS])
def test_a_key_with_the_scope_gets_past_the_key_check(world, method, path, scope, need):
    """The right key reaches the route: whatever it answers to a body that is not JSON or ids that do not
    exist, it is not a key refusal (and never a 500). Each case in an app of its own (DELETE deletes it)."""
    http, keys = world
    ctx = http.app.state.services.ctx
    app = f"p{OPERATIONS.index((method, path, scope, need))}"
    app_service.create_app(ctx, app)
    key = key_service.create_key(ctx, app, [scope] if scope else ["predict"])["key"]
    if need != "app" or "{app_id}" in path and scope is None:
        key = keys["user"]
    url = _url(path).replace(f"/apps/{ALPHA}", f"/apps/{app}")
    r = http.request(method, url, headers={"Authorization": f"Key {key}"},
                     content=b"{not json" if method != "GET" else None)
    assert r.status_code not in (401, 403, 500), r.text
    assert r.json()["status"]["code"] not in (codes.CONN_KEY_INVALID, codes.CONN_KEY_NOT_FOUND,
                                               codes.CONN_INSUFFICIENT_SCOPES, codes.CONN_CREDENTIALS_INVALID)
