"""Turning store facts into what pages and the JSON API show: URLs, names, dates, numbers.

Paths travel in query strings percent-encoded from their UTF-8 bytes (:func:`path_url`). A query
that is not valid UTF-8 is refused with 400 (:func:`query_values`): it names no indexed photo,
since the workers refuse file names that are not valid UTF-8.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from starlette.exceptions import HTTPException
from starlette.requests import Request

from imgwatch.display import file_name
from imgwatch.errors import DecodeError
from imgwatch.store import StoredImage
from imgwatch.web.state import Ranked


def query_values(request: Request) -> dict[str, str]:
    """The query string's parameters (last one wins); HTTPException 400 for a query that is not
    valid UTF-8 (it names no indexed photo, and the store could not even look it up)."""
    values: dict[str, str] = {}
    for part in request.scope.get("query_string", b"").split(b"&"):
        if not part:
            continue
        key, _, value = part.partition(b"=")
        values[_unquote(key)] = _unquote(value)
    return values


def _unquote(raw: bytes) -> str:
    decoded = unquote_to_bytes(raw.replace(b"+", b" "))
    try:
        return decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, "the query is not valid UTF-8, so it names no indexed photo: percent-encode "
                                 "the path's UTF-8 bytes") from None


def path_url(route: str, path: str, **extra: object) -> str:
    url = f"{route}?path={quote(os.fsencode(path), safe='/')}"
    for key, value in extra.items():
        if value is not None:
            url += f"&{key}={quote(str(value), safe='')}"
    return url


def display_name(path: str) -> str:
    return file_name(path)


def local_time(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds).astimezone().isoformat(timespec="seconds")


def image_urls(path: str, image: StoredImage | None) -> dict[str, str]:
    version = image.mtime_ns if image is not None else None
    return {
        "thumbnail": path_url("/thumb", path, v=version),
        "view": path_url("/view", path, v=version),
        "original": path_url("/original", path),
        "photo": path_url("/photo", path),
        "search": path_url("/", path),
    }


def ranked_item(ranked: Ranked) -> dict[str, Any]:
    """One result, as the API returns it and the templates show it."""
    path, image = ranked.match.path, ranked.image
    return {
        "path": path,
        "score": round(ranked.match.score, 6),
        "name": display_name(path),
        "width": image.width if image else None,
        "height": image.height if image else None,
        **image_urls(path, image),
    }


def left_out_item(path: str) -> dict[str, str]:
    """An indexed path left out of a search as the query photo itself (see ranking), with its page."""
    return {"path": path, "name": display_name(path), "photo": path_url("/photo", path)}


def file_kind(path: str) -> dict[str, str | None]:
    """The photo's format and which of its pixels were embedded (a RAW's preview or demosaic), read from the file.

    None for both when the file cannot be read or opened now (the page still shows what the store knows).
    """
    from imgwatch.embedding.decode import read_file  # loads torch, like the thumbnails
    from imgwatch.photos.reader import kind_of

    try:
        _facts, data = read_file(path)
        kind, source = kind_of(data, path)
    except (OSError, DecodeError):
        return {"format": None, "decoded_from": None}
    return {"format": kind, "decoded_from": source}


def image_facts(image: StoredImage, links: int | None = None) -> dict[str, Any]:
    """Everything the photo page and GET /api/image say about one indexed image."""
    return {
        "path": image.path,
        "name": display_name(image.path),
        "size": image.size,
        "width": image.width,
        "height": image.height,
        "modified": local_time(image.mtime_ns / 1e9),
        "indexed_at": local_time(image.indexed_at),  # None: stored before imgwatch recorded it
        "model": image.model,
        "sha256": image.sha256,
        "linked": image.linked,
        "links": links,
        **image_urls(image.path, image),
    }
