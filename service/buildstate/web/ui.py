"""The dashboard: static files under ``/ui/``, read by the browser, with all data from the public API.

Each file is its own exact, public route (``PUBLIC``), because the auth middleware only lets a request
through without a credential when its path is literally a public route's path: no prefix, no template.
So ``/ui/static/js/main.js`` is public, while ``/ui/static/../../cli.py`` or a file that does not exist
matches nothing and needs a credential like any other unknown path. The files hold no data; the page
signs in with ``POST /token`` and sends the Bearer token on every API call.

There is no build step: the files in ``static/`` are what the browser gets (plain ES modules and CSS),
and the wheel carries them as package data.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).parent / "static"
INDEX = "/ui/"

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

# Scripts and styles only from this service, data only from its own API, no framing. A data string that
# ever reached markup could still not run: inline scripts and event-handler attributes are refused.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Revalidate every time (ETag and Last-Modified answer with 304): without hashed names or a build
    # step, this is what makes an upgrade visible on the next load instead of mixing old and new modules.
    "Cache-Control": "no-cache",
}


def _assets() -> dict[str, Path]:
    """URL path -> file, for every servable file; ``/ui/`` is ``index.html``."""
    files = {INDEX: STATIC_DIR / "index.html"}
    for path in sorted(STATIC_DIR.rglob("*")):
        if path.is_file() and path.suffix in _CONTENT_TYPES and path.name != "index.html":
            files[f"/ui/static/{path.relative_to(STATIC_DIR).as_posix()}"] = path
    return files


ASSETS = _assets()
PUBLIC: list[tuple[str, str]] = [("GET", "/ui"), *(("GET", url) for url in ASSETS)]


def _serve(path: Path) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    headers = {**_HEADERS, "Content-Type": _CONTENT_TYPES[path.suffix]}

    async def asset(_request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path, headers=headers)

    return asset


async def _to_index(_request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect(INDEX)


def add_ui_routes(app: web.Application) -> None:
    """Register ``/ui`` (a redirect), ``/ui/`` and one route per static file; all are in ``PUBLIC``."""
    app.router.add_get("/ui", _to_index, name="ui")
    for url, path in ASSETS.items():
        app.router.add_get(url, _serve(path), name="ui_index" if url == INDEX else None)
