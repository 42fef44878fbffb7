"""The browser console: its page at `/` and its modules under `/console/`, static files shipped in the package
(app/console/), served as they are (no build step)."""

from pathlib import Path

from litestar import Router, get
from litestar.response import File
from litestar.static_files import create_static_files_router

CONSOLE = Path(__file__).parent / "console"


@get("/", sync_to_thread=False, include_in_schema=False)
def console_page() -> File:
    return File(CONSOLE / "index.html", content_disposition_type="inline", media_type="text/html")


def console_routes() -> Router:
    static = create_static_files_router("/console", [CONSOLE], include_in_schema=False)
    return Router("/", route_handlers=[console_page, static])
