"""The pages, the JSON API under /api/, and the images (thumbnails, large views, originals).

Images are served only by their indexed path: the ``path`` parameter is looked up, exactly
as given, in the store, and anything that is not an indexed image's path is a 404, whatever
it names on disk. Blocking work (store, decoding, the model) runs in Starlette's threadpool.
"""

from __future__ import annotations

import json
import os
from email.utils import formatdate
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from imgwatch.errors import ContentChanged, DecodeError
from imgwatch.reports import gather_status, printable
from imgwatch.thumbnails import SourceState
from imgwatch.web.state import LARGE_SIZE, WebState
from imgwatch.web.views import file_kind, image_facts, left_out_item, path_url, query_values, ranked_item

TOP_CHOICES = (10, 20, 50, 100)
DEFAULT_TOP = 20
MAX_TOP = 200
# Every route that reads a photo serves only the content that was indexed (same SHA-256).
CHANGED_SINCE_INDEXED = "the file changed since it was indexed; it is served again once re-indexed"
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and headers around the image itself
# Originals a browser shows in the page; HEIC, JPEG XL and RAW files are offered as downloads
# (the page shows them through their JPEG renditions, /view and /thumb).
ORIGINAL_TYPES = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp",
                  "GIF": "image/gif", "BMP": "image/bmp", "TIFF": "image/tiff", "AVIF": "image/avif"}


class JSONResponse(Response):
    """JSON as the CLI's --json writes it: indented, ASCII-escaped (file names need not be UTF-8)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, indent=2).encode("ascii")


def state_of(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state


def render_page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    templates = request.app.state.templates
    response: HTMLResponse = templates.TemplateResponse(request, template, context, status_code=status_code)
    response.headers["cache-control"] = "no-store"
    return response


def required_path(request: Request) -> str:
    path = query_values(request).get("path", "")
    if not path:
        raise HTTPException(400, "pass the image's indexed path as ?path=")
    return path


def top_of(request: Request, form_value: str | None = None) -> int:
    raw = form_value or query_values(request).get("top", "")
    if not raw:
        return DEFAULT_TOP
    try:
        top = int(raw)
    except ValueError:
        raise HTTPException(400, f"top must be a whole number from 1 to {MAX_TOP}") from None
    if not 1 <= top <= MAX_TOP:
        raise HTTPException(400, f"top must be a whole number from 1 to {MAX_TOP}")
    return top


# -- uploads -------------------------------------------------------------------------


class _TooLarge(Exception):
    pass


async def read_upload(request: Request) -> tuple[bytes, str, str | None]:
    """The uploaded image (multipart field ``image``, or the raw body), its file name, and the
    form's ``top`` field if it has one (the page's form without JavaScript sends it so).

    Refused with 413 as soon as more than web.max_upload_mb arrives (or is announced).
    """
    limit = int(state_of(request).config.web.max_upload_mb * 2**20)
    too_large = HTTPException(413, f"the upload is larger than the limit of {limit / 2**20:g} MiB "
                                   "(web.max_upload_mb)")
    announced = request.headers.get("content-length", "")
    if announced.isdigit() and int(announced) > limit + FORM_OVERHEAD:
        raise too_large
    received = 0

    async def counted() -> Any:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit + FORM_OVERHEAD:
                raise _TooLarge
        return message

    limited = Request(request.scope, counted)
    try:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            async with limited.form(max_files=1, max_fields=8) as form:
                upload = form.get("image")
                if not isinstance(upload, UploadFile):
                    raise HTTPException(400, "send the image as the multipart field 'image'")
                data, name = await upload.read(), upload.filename or ""
                top = form.get("top")
                top_field = top if isinstance(top, str) else None
        else:
            data, name, top_field = await limited.body(), query_values(request).get("name", ""), None
    except _TooLarge:
        raise too_large from None
    if len(data) > limit:
        raise too_large
    if not data:
        raise HTTPException(400, "the upload is empty: send an image file")
    if "\0" in name:  # no file name holds one (and the temporary file's suffix comes from it)
        raise HTTPException(400, "the upload's name holds a NUL character: send the file's own name")
    return data, name, top_field


# -- pages ---------------------------------------------------------------------------


async def search_page(request: Request) -> Response:
    state = state_of(request)
    top = top_of(request)
    context: dict[str, Any] = {"top": top, "top_choices": TOP_CHOICES, "results": None, "query": None, "left_out": [],
                               "max_upload_bytes": int(state.config.web.max_upload_mb * 2**20)}
    if request.method == "POST":  # the form without JavaScript
        data, name, top_field = await read_upload(request)
        top = context["top"] = top_of(request, top_field)
        searched = await run_in_threadpool(state.search_upload, data, name, top)
        context.update(results=[ranked_item(r) for r in searched.results],
                       left_out=[left_out_item(p) for p in searched.left_out],
                       query={"name": printable(name or "upload")})
    elif path := query_values(request).get("path", ""):
        searched = await run_in_threadpool(state.search_indexed, path, top)
        context.update(results=[ranked_item(r) for r in searched.results],
                       left_out=[left_out_item(p) for p in searched.left_out],
                       query={"name": printable(path), "path": path, "photo": path_url("/photo", path),
                              "thumbnail": path_url("/thumb", path)})
    return render_page(request, "search.html", **context)


def photo_page(request: Request) -> Response:
    state = state_of(request)
    path = required_path(request)
    image = state.indexed(path)
    neighbours = state.similar(path)
    return render_page(request, "photo.html", image=image_facts(image, len(neighbours)) | file_kind(path),
                       neighbours=[ranked_item(r) for r in neighbours])


def status_page(request: Request) -> Response:
    report = gather_status(state_of(request).config)
    return render_page(request, "status.html", report=report, printable=printable)


# -- the JSON API ----------------------------------------------------------------------


async def api_search(request: Request) -> Response:
    state = state_of(request)
    top = top_of(request)
    if request.method == "POST":
        data, name, top_field = await read_upload(request)
        top = top_of(request, top_field)
        searched = await run_in_threadpool(state.search_upload, data, name, top)
        query: dict[str, Any] = {"name": name or None}
    else:
        path = required_path(request)
        searched = await run_in_threadpool(state.search_indexed, path, top)
        query = {"path": path}
    query["left_out"] = [left_out_item(p) for p in searched.left_out]  # the photo itself, not ranked
    return JSONResponse({"query": query, "top": top, "results": [ranked_item(r) for r in searched.results]})


def api_similar(request: Request) -> Response:
    path = required_path(request)
    neighbours = state_of(request).similar(path)
    return JSONResponse({"path": path, "neighbours": [ranked_item(r) for r in neighbours]})


def api_image(request: Request) -> Response:
    state = state_of(request)
    path = required_path(request)
    image = state.indexed(path)
    return JSONResponse(image_facts(image, len(state.store().neighbours(path))) | file_kind(path))


def api_status(request: Request) -> Response:
    return JSONResponse(gather_status(state_of(request).config).as_json())


# -- images --------------------------------------------------------------------------


def _image_headers(etag: str, mtime: float, versioned: bool) -> dict[str, str]:
    # A URL carrying ?v= (the indexed mtime) changes with the photo: the browser may keep it a day.
    # Without it, the browser asks again every time and gets a 304 while the photo is unchanged.
    return {
        "etag": etag,
        "last-modified": formatdate(mtime, usegmt=True),
        "cache-control": "private, max-age=86400" if versioned else "private, no-cache",
    }


def _not_modified(request: Request, etag: str) -> bool:
    offered = request.headers.get("if-none-match", "")
    return etag in [tag.strip() for tag in offered.split(",")] or offered.strip() == "*"


def _scaled(request: Request, size: int) -> Response:
    state = state_of(request)
    path = required_path(request)
    image = state.indexed(path)
    try:
        source = SourceState.of(path)
    except OSError:
        raise HTTPException(404, "the photo is indexed but no longer readable on disk") from None
    headers = _image_headers(source.etag(size), source.mtime, "v" in query_values(request))
    if _not_modified(request, headers["etag"]):
        return Response(status_code=304, headers=headers)
    try:
        thumbnail = state.thumbnail(image, size)
    except OSError:
        raise HTTPException(404, "the photo is indexed but no longer readable on disk") from None
    except ContentChanged:
        raise HTTPException(409, CHANGED_SINCE_INDEXED) from None
    headers["etag"] = thumbnail.etag  # the file may have changed since the stat above
    return Response(thumbnail.file.read_bytes(), media_type="image/jpeg", headers=headers)


def thumbnail(request: Request) -> Response:
    return _scaled(request, state_of(request).config.web.thumbnail_size)


def large_view(request: Request) -> Response:
    return _scaled(request, LARGE_SIZE)


def original(request: Request) -> Response:
    """The file itself, only while its content is what was indexed (same SHA-256)."""
    from imgwatch.embedding.decode import read_file
    from imgwatch.photos.reader import kind_of

    state = state_of(request)
    path = required_path(request)
    image = state.indexed(path)
    try:
        facts, data = read_file(path)
    except (OSError, DecodeError):
        raise HTTPException(404, "the photo is indexed but no longer readable on disk") from None
    if facts.sha256 != image.sha256:
        raise HTTPException(409, CHANGED_SINCE_INDEXED)
    try:
        kind = kind_of(data, path)[0]
    except DecodeError:  # the indexed content always opened; be safe anyway
        kind = ""
    headers = _image_headers(f'"{image.sha256[:32]}"', facts.mtime_ns / 1e9, versioned=False)
    if _not_modified(request, headers["etag"]):
        return Response(status_code=304, headers=headers)
    media_type = ORIGINAL_TYPES.get(kind, "application/octet-stream")
    disposition = "inline" if kind in ORIGINAL_TYPES else "attachment"
    # The file's own name (RFC 6266/5987, percent-encoded bytes): a download is saved as IMG_0001.HEIC, not "original".
    headers["content-disposition"] = f"{disposition}; filename*=UTF-8''{quote(os.fsencode(os.path.basename(path)))}"
    return Response(data, media_type=media_type, headers=headers)


def favicon(request: Request) -> Response:
    return RedirectResponse("/static/icon.svg", status_code=308)
