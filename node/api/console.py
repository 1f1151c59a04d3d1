"""The web console's files (`api.console`): its page at /console/ and its own static files,
with headers that keep it to itself and this node's loopback neighbours."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from aiohttp import web

# the console's files live beside the daemon's modules, in node/console
CONSOLE_DIR: Final = Path(__file__).parent.parent / "console"
# The console's own files only; it may call this node and a patient's agent on loopback.
CONSOLE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self' http://127.0.0.1:* http://localhost:*; "
        "img-src 'self' data: blob:; object-src 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}


def mount_console(application: web.Application) -> None:
    application.router.add_get("/console", console_home)
    application.router.add_get("/console/", console_home)
    # (an editable install links each file: follow the links of our own folder)
    application.router.add_static("/console/", CONSOLE_DIR, follow_symlinks=True)
    application.on_response_prepare.append(_console_headers)


async def console_home(request: web.Request) -> web.StreamResponse:
    if request.path == "/console":
        raise web.HTTPFound(
            "/console/" + (f"?{request.query_string}" if request.query_string else "")
        )
    return web.FileResponse(CONSOLE_DIR / "index.html")


async def _console_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith("/console"):
        response.headers.update(CONSOLE_HEADERS)
