"""The console's pages: one route per page, each rendering its template with the ids from its path (never
data: the page's module fetches that from ``/v2`` with the signed-in key), and the static assets.

Every page answers with a strict Content-Security-Policy (scripts, styles and images from this origin only,
plus ``data:``/``blob:`` images for thumbnails and dropped files), ``X-Frame-Options: DENY`` and no referrer.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from deeptrain import __version__
from deeptrain.errors import InvalidInput

HERE = Path(__file__).parent
STATIC_PREFIX = "/console/static"
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(include_in_schema=False)

HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                               "form-action 'self'",
    "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
# ids as the API accepts them (the page only echoes them into data- attributes; Jinja escapes them anyway)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")

# page name -> (template, title, nav section)
PAGES: dict[str, tuple[str, str, str]] = {
    "apps": ("apps.html", "Apps", "apps"),
    "inputs": ("inputs.html", "Inputs", "inputs"),
    "input": ("input.html", "Label an input", "inputs"),
    "models": ("models.html", "Models", "models"),
    "model_new": ("model_new.html", "Create a model", "models"),
    "model": ("model.html", "Model", "models"),
    "version": ("version.html", "Evaluation", "models"),
    "predict": ("predict.html", "Predict and search", "predict"),
    "keys": ("keys.html", "Keys", "keys"),
}


def _checked(**ids: str | None) -> dict[str, str | None]:
    for name, value in ids.items():
        if value is not None and not _ID.match(value):
            raise InvalidInput(f"invalid {name} in the page's path: {value[:64]!r}")
    return ids


def _bad_path(exc: InvalidInput) -> HTMLResponse:
    """A page path with an id the API could never have made: a plain page saying so (escaped)."""
    body = (f"<!doctype html><meta charset=utf-8><title>Bad path · deeptrain</title><h1>Bad path</h1>"
            f"<p>{html.escape(str(exc))}</p><p><a href=\"/\">Back to the apps</a></p>")
    return HTMLResponse(body, status_code=400, headers=HEADERS)


def page(request: Request, name: str, **ids: str | None) -> HTMLResponse:
    template, title, section = PAGES[name]
    try:
        checked = _checked(**ids)
    except InvalidInput as exc:
        return _bad_path(exc)
    context: dict[str, Any] = {"page": name, "title": title, "section": section, "version": __version__,
                               "static": STATIC_PREFIX, **checked}
    return templates.TemplateResponse(request, template, context, headers=HEADERS)


@router.get("/")
async def apps_page(request: Request) -> HTMLResponse:
    return page(request, "apps")


@router.get("/favicon.ico")
async def favicon() -> RedirectResponse:
    return RedirectResponse(f"{STATIC_PREFIX}/favicon.svg", status_code=308)


@router.get("/keys")
async def user_keys_page(request: Request) -> HTMLResponse:
    return page(request, "keys", app_id=None)


@router.get("/apps/{app_id}", response_model=None)
async def app_page(app_id: str):  # a redirect, or the bad-path page
    try:
        _checked(app_id=app_id)
    except InvalidInput as exc:
        return _bad_path(exc)
    return RedirectResponse(f"/apps/{app_id}/inputs", status_code=307)


@router.get("/apps/{app_id}/inputs")
async def inputs_page(request: Request, app_id: str) -> HTMLResponse:
    return page(request, "inputs", app_id=app_id)


@router.get("/apps/{app_id}/inputs/{input_id}")
async def input_page(request: Request, app_id: str, input_id: str) -> HTMLResponse:
    return page(request, "input", app_id=app_id, input_id=input_id)


@router.get("/apps/{app_id}/models")
async def models_page(request: Request, app_id: str) -> HTMLResponse:
    return page(request, "models", app_id=app_id)


@router.get("/apps/{app_id}/models/new")
async def model_new_page(request: Request, app_id: str) -> HTMLResponse:
    return page(request, "model_new", app_id=app_id)


@router.get("/apps/{app_id}/models/{model_id}")
async def model_page(request: Request, app_id: str, model_id: str) -> HTMLResponse:
    return page(request, "model", app_id=app_id, model_id=model_id)


@router.get("/apps/{app_id}/models/{model_id}/versions/{version_id}")
async def version_page(request: Request, app_id: str, model_id: str, version_id: str) -> HTMLResponse:
    return page(request, "version", app_id=app_id, model_id=model_id, version_id=version_id)


@router.get("/apps/{app_id}/predict")
async def predict_page(request: Request, app_id: str) -> HTMLResponse:
    return page(request, "predict", app_id=app_id)


@router.get("/apps/{app_id}/keys")
async def app_keys_page(request: Request, app_id: str) -> HTMLResponse:
    return page(request, "keys", app_id=app_id)


def install(api: FastAPI) -> None:
    """Serve the console on ``api``: its pages and, under ``/console/static``, its assets."""
    api.include_router(router)
    api.mount(STATIC_PREFIX, StaticFiles(directory=str(HERE / "static")), name="console-static")
