"""The ASGI application: routes, templates, static files, access control, error pages."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from imgwatch.config import Config
from imgwatch.display import KEPT_END, human_size, name_ends, reason_beside
from imgwatch.errors import (
    CleanupRefused,
    ContentChanged,
    DecodeError,
    DeviceUnavailable,
    ImgwatchError,
    ModelMismatchError,
    StoreMissing,
    StoreUnavailable,
    ThresholdBelowLinks,
    WeightsUnavailable,
)
from imgwatch.log import get_logger
from imgwatch.reports import printable
from imgwatch.store import ImageNotFound
from imgwatch.web import routes as pages
from imgwatch.web.duplicates_actions import api_plan, confirm_page, decide, move, undo
from imgwatch.web.duplicates_view import Notices, api_duplicates, duplicates_page
from imgwatch.web.routes import JSONResponse, render_page
from imgwatch.web.security import AccessGuard, ASGIApp
from imgwatch.web.state import WebState
from imgwatch.web.views import display_name

HERE = Path(__file__).parent
log = get_logger("imgwatch.web")

# Expected failures and the HTTP status each one answers with (the first match counts).
STATUS_OF_ERROR: list[tuple[type[ImgwatchError], int]] = [
    (ImageNotFound, 404),
    (ThresholdBelowLinks, 400),
    (StoreMissing, 503),
    (StoreUnavailable, 503),
    (ModelMismatchError, 409),
    (DecodeError, 422),
    (ContentChanged, 409),
    (CleanupRefused, 409),
    (WeightsUnavailable, 503),
    (DeviceUnavailable, 503),
    (ImgwatchError, 500),
]


# The pages a link from another site may open (everything else refuses requests from other sites).
PAGES = frozenset({"/", "/photo", "/duplicates", "/status"})
# The POSTs that write nothing (searches by upload): every other POST needs the page's form key.
SEARCHES = frozenset({"/", "/api/search"})


def routes() -> list[Route | Mount]:
    return [
        Route("/", pages.search_page, methods=["GET", "POST"]),
        Route("/photo", pages.photo_page),
        Route("/duplicates", duplicates_page),
        Route("/duplicates/decide", decide, methods=["POST"]),
        Route("/duplicates/confirm", confirm_page),
        Route("/duplicates/move", move, methods=["POST"]),
        Route("/duplicates/undo", undo, methods=["POST"]),
        Route("/status", pages.status_page),
        Route("/thumb", pages.thumbnail),
        Route("/view", pages.large_view),
        Route("/original", pages.original),
        Route("/favicon.ico", pages.favicon),
        Route("/api/search", pages.api_search, methods=["GET", "POST"]),
        Route("/api/similar", pages.api_similar),
        Route("/api/image", pages.api_image),
        Route("/api/duplicates", api_duplicates),
        Route("/api/duplicates/plan", api_plan),
        Route("/api/status", pages.api_status),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]


def create_app(config: Config, token: str | None = None) -> ASGIApp:
    """The web page and its API over ``config``'s store; ``token``: required on every request if set.

    The AccessGuard wraps the whole Starlette application, Starlette's own 500 handler included,
    so that every answer carries the security headers.
    """
    web = WebState(config)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            web.close()

    app = Starlette(
        routes=routes(),
        exception_handlers={ImgwatchError: _imgwatch_error, HTTPException: _http_error,
                            FileNotFoundError: _file_gone, Exception: _unexpected_error},
        lifespan=lifespan,
    )
    app.state.web = web
    app.state.templates = _templates()
    app.state.notices = Notices()
    guard = AccessGuard(app, token=token, host=config.web.host, pages=PAGES, searches=SEARCHES)
    app.state.form_key = guard.form_key  # the pages' forms carry it
    return guard


def _templates() -> Jinja2Templates:
    environment = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                              trim_blocks=True, lstrip_blocks=True)
    environment.filters["printable"] = printable
    environment.filters["basename"] = display_name
    environment.filters["name_ends"] = name_ends
    environment.globals["kept_end"] = KEPT_END  # app.js splits the names of the tiles it makes as name_ends does
    environment.filters["reason_beside"] = reason_beside
    environment.filters["human_size"] = human_size
    environment.filters["when"] = lambda iso: iso[:19].replace("T", " ") if iso else ""  # local time, to the second
    return Jinja2Templates(env=environment)


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path in ("/thumb", "/view", "/original")


def _error(request: Request, status: int, message: str) -> Response:
    if _wants_json(request):
        return JSONResponse({"error": message}, status_code=status, headers={"cache-control": "no-store"})
    return render_page(request, "error.html", status_code=status, status=status, message=message)


async def _imgwatch_error(request: Request, exc: Exception) -> Response:
    status = next(code for kind, code in STATUS_OF_ERROR if isinstance(exc, kind))
    if status >= 500:
        log.warning("web_request_failed", path=request.url.path, status=status, error=str(exc))
    return _error(request, status, printable(str(exc)))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 304:
        return Response(status_code=304, headers=exc.headers)
    messages = {404: "no such page", 405: "method not allowed"}
    detail = exc.detail if exc.detail and exc.detail not in ("Not Found", "Method Not Allowed") else None
    return _error(request, exc.status_code, detail or messages.get(exc.status_code, "request refused"))


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    # Starlette's ServerErrorMiddleware answers with this, then re-raises: uvicorn logs the traceback.
    return _error(request, 500, "the server failed on this request; its log says why")


async def _file_gone(request: Request, exc: Exception) -> Response:
    return _error(request, 404, "the photo is indexed but no longer on disk; it leaves the index once the "
                                "watcher notices")
