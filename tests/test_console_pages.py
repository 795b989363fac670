"""The console's pages and assets without a browser (the browser tests: ``test_console_browser.py``): every page
answers HTML with its security headers, everything a page loads is shipped in the package and served from this
server (no CDN, no other host), every module a module imports exists, and a hostile path is refused."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from deeptrain.config import Settings
from deeptrain.services.context import Context
from serve.console import pages
from serve.v2.control import control_api
from serve.v2.state import Services

ROOT = Path(__file__).resolve().parents[1]
CONSOLE = ROOT / "serve" / "console"
ASSETS = sorted(p for p in (CONSOLE / "static").rglob("*") if p.is_file())
PAGE_PATHS = {"apps": "/", "keys": "/keys", "inputs": "/apps/a/inputs", "input": "/apps/a/inputs/i-1",
              "models": "/apps/a/models", "model_new": "/apps/a/models/new", "model": "/apps/a/models/m",
              "version": "/apps/a/models/m/versions/v", "predict": "/apps/a/predict"}


@pytest.fixture(scope="module")
def http(tmp_path_factory):
    ctx = Context.from_settings(Settings.from_env(env={"DEEPTRAIN_HOME": str(tmp_path_factory.mktemp("pages"))}))
    return TestClient(control_api(Services(ctx), console=True), raise_server_exceptions=False)


def test_every_page_has_a_path_here():
    assert set(PAGE_PATHS) | {"keys"} >= set(pages.PAGES)


@pytest.mark.parametrize("name", sorted(PAGE_PATHS))
def test_a_page_answers_html_with_its_module_and_security_headers(http, name):
    r = http.get(PAGE_PATHS[name])
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
    assert r.headers["x-frame-options"] == "DENY" and r.headers["referrer-policy"] == "no-referrer"
    assert f'src="/console/static/js/pages/{name}.js?v=' in r.text
    assert "<script>" not in r.text and " style=" not in r.text, "CSP forbids inline scripts and styles"


@pytest.mark.parametrize("name", sorted(pages.PAGES))
def test_every_page_template_and_module_exists(name):
    template = pages.PAGES[name][0]
    assert (CONSOLE / "templates" / template).is_file()
    assert (CONSOLE / "static" / "js" / "pages" / f"{name}.js").is_file()


@pytest.mark.parametrize("asset", ASSETS, ids=lambda p: str(p.relative_to(CONSOLE / "static")))
def test_every_asset_is_served_and_loads_nothing_from_another_host(http, asset):
    r = http.get(f"/console/static/{asset.relative_to(CONSOLE / 'static').as_posix()}")
    assert r.status_code == 200 and r.content == asset.read_bytes()
    text = asset.read_text()
    hosts = set(re.findall(r"https?://[^\s\"'`)]+", text)) - {"http://www.w3.org/2000/svg"}
    assert not hosts, f"{asset.name} refers to another host: {hosts}"
    if asset.suffix == ".js":
        for target in re.findall(r"""(?:from|import)\s*\(?\s*["'](\.{1,2}/[^"']+)["']""", text):
            assert (asset.parent / target).resolve().is_file(), f"{asset.name} imports a missing {target}"


def test_the_package_ships_every_console_file():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["serve.console"]
    files = [p.relative_to(CONSOLE).as_posix() for p in CONSOLE.rglob("*")
             if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert files and all(any(fnmatch.fnmatch(f, g) and f.count("/") == g.count("/") for g in data) for f in files)


@pytest.mark.parametrize("path", ["/apps/..%2F..%2Fetc/inputs", "/apps/a/inputs/%3Cscript%3E",
                                  "/apps/" + "x" * 300 + "/models", "/apps/a/models/m/versions/v%00"])
def test_a_hostile_id_in_a_page_path_is_refused(http, path):
    r = http.get(path)
    assert r.status_code in (400, 404) and "<script>" not in r.text


def test_a_hostile_id_never_reaches_the_page_unescaped(http):
    r = http.get("/console/static/../../app.py")
    assert r.status_code == 404
