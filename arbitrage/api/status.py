"""`GET /`: a small built-in status page (live feed, ingest rate, profit chart, health, exports).

Plain HTML, CSS and JavaScript shipped in `api/static/`: no build step and no CDN, so it
works on an air-gapped trading box.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Response, Router, get
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

from arbitrage.security import public

STATIC_DIR = Path(__file__).with_name("static")


@get("/", include_in_schema=False, media_type="text/html")
async def status_page() -> Response[bytes]:
    return Response((STATIC_DIR / "status.html").read_bytes(), media_type="text/html")


STATUS_ROUTES: list[ControllerRouterHandler] = [
    Router("/", route_handlers=[status_page], guards=[public]),
    create_static_files_router(path="/static", directories=[STATIC_DIR], include_in_schema=False, guards=[public]),
]
