"""The dashboard's files: public, exact, typed, and unable to run data as code."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from buildstate.web import ui

Client = TestClient[Any, Any]
JS_FILES = sorted(ui.STATIC_DIR.rglob("*.js"))


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """The files do not touch the database: one store is enough."""
    return sqlite_url


async def test_index_is_public_html_with_a_strict_content_security_policy(anon_client: Client) -> None:
    response = await anon_client.get("/ui/")
    assert response.status == 200
    assert response.content_type == "text/html"
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "default-src 'none'" in policy
    assert "unsafe-inline" not in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-cache"
    assert '<script type="module" src="static/js/main.js">' in await response.text()


async def test_bare_ui_path_redirects_to_the_index(anon_client: Client) -> None:
    response = await anon_client.get("/ui", allow_redirects=False)
    assert response.status == 308
    assert response.headers["Location"] == "/ui/"


async def test_every_static_file_is_served_without_a_credential_with_its_type(anon_client: Client) -> None:
    expected = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".html": "text/html"}
    assert "/ui/static/js/main.js" in ui.ASSETS
    for url, path in ui.ASSETS.items():
        response = await anon_client.get(url)
        assert response.status == 200, url
        assert response.content_type == expected[path.suffix], url
        assert await response.read() == path.read_bytes()


async def test_an_unchanged_file_revalidates_with_304(anon_client: Client) -> None:
    first = await anon_client.get("/ui/static/css/app.css")
    again = await anon_client.get("/ui/static/css/app.css", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status == 304


@pytest.mark.parametrize(
    "path",
    [
        "/ui/static/js/missing.js",
        "/ui/static/js/",
        "/ui/static/%2e%2e/ui.py",
        "/ui/static/js/main.js/extra",
        "/ui/index.html",
    ],
)
async def test_paths_that_are_not_dashboard_files_need_a_credential(anon_client: Client, path: str) -> None:
    response = await anon_client.get(path)
    assert response.status == 401


async def test_the_data_the_dashboard_shows_still_needs_a_credential(anon_client: Client) -> None:
    for path in ("/builds", "/events", "/dashboard/summary"):
        assert (await anon_client.get(path)).status == 401, path


def test_every_module_import_resolves_to_a_served_file() -> None:
    """With no bundler, a wrong import path is a blank page: check each one against the served files."""
    imports = re.compile(r"""^\s*(?:import|export)\b[^"']*?from\s+["']([^"']+)["']""", re.MULTILINE)
    for path in JS_FILES:
        for spec in imports.findall(path.read_text()):
            assert spec.startswith("./") or spec.startswith("../"), f"{path.name}: {spec} is not relative"
            target = (path.parent / spec).resolve()
            url = f"/ui/static/{target.relative_to(ui.STATIC_DIR.resolve()).as_posix()}"
            assert url in ui.ASSETS, f"{path.name} imports {spec}, which is not served"


def test_no_dashboard_code_parses_strings_as_markup_or_code() -> None:
    sinks = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function\(")
    for path in JS_FILES:
        found = sinks.findall(path.read_text())
        assert not found, f"{path.relative_to(ui.STATIC_DIR)} uses {found}"
