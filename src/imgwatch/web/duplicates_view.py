"""The duplicates page and GET /api/duplicates: groups of copies, biggest first, a page at a time
(its actions are in duplicates_actions).

A switch chooses between exact copies (``?exact=1``: the same content) and photos that look alike
at a threshold (``?threshold=0.95``), as `imgwatch duplicates [--exact]` prints them: the keeper
first with the one-line reason the [duplicates] rule gives, then the others by their score
against it. Groups a person's decision settles (see decisions) are left out unless ``?all=1``
("show decided"), then marked with it. ``?page=N`` (from 1) shows GROUPS_PER_PAGE groups; a page
past the last shows the last (a listing shrinks as groups are decided). A notice an action left
(``?notice=ID``) is shown above the groups.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from imgwatch.display import human_size
from imgwatch.duplicates import DEFAULT_THRESHOLD, DuplicateGroup, decision_json, decision_line
from imgwatch.errors import printable
from imgwatch.use_cases import (
    duplicates_to_show,
    keeper_rule,
    page_destination,
)
from imgwatch.web.routes import JSONResponse, query_values, render_page, state_of
from imgwatch.web.views import display_name, image_facts

THRESHOLD_CHOICES = (0.85, 0.9, 0.95, 0.97, 0.99)
GROUPS_PER_PAGE = 50  # what one page renders, however many groups there are
NOTICES_KEPT = 200  # the latest notices a redirect may still point at


@dataclass(frozen=True)
class Listing:
    """Which groups are listed: exact copies or look-alikes at a threshold, decided ones too or not."""

    exact: bool
    threshold: float
    show_decided: bool

    def query(self) -> str:
        """The query string that lists them again (the threshold kept for the way back from exact copies)."""
        query = ("exact=1&" if self.exact else "") + f"threshold={self.threshold:g}"
        return query + ("&all=1" if self.show_decided else "")

    def url(self, page: int = 1, notice: str | None = None) -> str:
        return (f"/duplicates?{self.query()}" + (f"&page={page}" if page > 1 else "")
                + (f"&notice={notice}" if notice else ""))


@dataclass(frozen=True)
class Paged:
    """One page of a listing: page ``number`` of ``pages``, groups ``first``..``last`` (from 1) of ``total``."""

    number: int
    pages: int
    total: int

    @classmethod
    def of(cls, asked: int, total: int) -> Paged:
        pages = max(1, -(-total // GROUPS_PER_PAGE))
        return cls(min(asked, pages), pages, total)

    @property
    def first(self) -> int:
        return min((self.number - 1) * GROUPS_PER_PAGE + 1, self.total)

    @property
    def last(self) -> int:
        return min(self.number * GROUPS_PER_PAGE, self.total)

    def json(self) -> dict[str, int]:
        return {"page": self.number, "pages": self.pages, "per_page": GROUPS_PER_PAGE, "total": self.total}


@dataclass(frozen=True)
class Notice:
    text: str
    undo: str | None = None  # the manifest id an "Undo" button sends


class Notices:
    """The one-line notices shown after an action, by random id; the latest NOTICES_KEPT are kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: OrderedDict[str, Notice] = OrderedDict()

    def add(self, notice: Notice) -> str:
        key = secrets.token_urlsafe(9)
        with self._lock:
            self._kept[key] = notice
            while len(self._kept) > NOTICES_KEPT:
                self._kept.popitem(last=False)
        return key

    def get(self, key: str) -> Notice | None:
        with self._lock:
            return self._kept.get(key)


def group_item(group: DuplicateGroup) -> dict[str, Any]:
    keeper_content = group.images[0].sha256
    images = []
    for image, score in zip(group.images, group.scores, strict=True):
        facts = image_facts(image)
        facts.update(keep=image.path == group.keep, score=round(score, 6),
                     detail=f"{image.width}×{image.height} · {human_size(image.size)}",
                     same_file=list(group.same_file.get(image.path, ())))
        facts["can_keep"] = image.sha256 != keeper_content  # "keep this" chooses a content, not a copy of one
        images.append(facts)
    contents = len({image.sha256 for image in group.images})
    return {"keep": group.keep, "keep_name": display_name(group.keep), "reason": group.reason, "exact": group.exact,
            "strongest": round(group.strongest, 6), "weakest": round(group.weakest, 6), "count": len(images),
            "decided": group.decided, "decision": decision_json(group), "decision_line": decision_line(group),
            "can_split": contents > 1, "images": images}


def threshold_of(values: Mapping[str, str]) -> float:
    raw = values.get("threshold", "")
    if not raw:
        return DEFAULT_THRESHOLD
    try:
        threshold = float(raw)
    except ValueError:
        raise HTTPException(400, "threshold must be a cosine, e.g. 0.95") from None
    if not threshold <= 1.0:  # also NaN
        raise HTTPException(400, "threshold must be a cosine of at most 1, e.g. 0.95")
    return threshold


def switch_of(values: Mapping[str, str], name: str, meaning: str) -> bool:
    """``?NAME=1`` (or 0, or absent)."""
    raw = values.get(name, "")
    if raw not in ("", "0", "1"):
        raise HTTPException(400, f"{name} must be 1 ({meaning}) or 0")
    return raw == "1"


def listing_of(request: Request) -> Listing:
    values = query_values(request)
    return Listing(exact=switch_of(values, "exact", "exact copies; 0: photos that look alike"),
                   threshold=threshold_of(values), show_decided=switch_of(values, "all", "also the decided groups"))


def page_of(request: Request) -> int:
    """``?page=N``, a whole number from 1 (past the last page: the last)."""
    raw = query_values(request).get("page", "")
    if not raw:
        return 1
    if not raw.isdigit() or int(raw) < 1:
        raise HTTPException(400, "page must be a whole number from 1")
    return int(raw)


def listed_groups(request: Request, listing: Listing) -> tuple[list[DuplicateGroup], int]:
    """All the groups of ``listing`` (biggest first) and how many decided ones it leaves out."""
    state = state_of(request)
    return duplicates_to_show(state.store(), exact=listing.exact, threshold=listing.threshold,
                              links_threshold=state.config.links.threshold, rule=keeper_rule(state.config),
                              show_decided=listing.show_decided)


def _page(request: Request) -> tuple[Listing, Paged, int, list[dict[str, Any]]]:
    listing = listing_of(request)
    groups, hidden = listed_groups(request, listing)
    paged = Paged.of(page_of(request), len(groups))
    shown = groups[(paged.number - 1) * GROUPS_PER_PAGE:paged.number * GROUPS_PER_PAGE]
    return listing, paged, hidden, [group_item(group) for group in shown]


def duplicates_page(request: Request) -> Response:
    listing, paged, hidden, groups = _page(request)
    lowest = state_of(request).config.links.threshold
    threshold = listing.threshold
    choices = sorted({choice for choice in THRESHOLD_CHOICES if choice >= lowest} | {threshold})
    notice_key = query_values(request).get("notice", "")
    notice = request.app.state.notices.get(notice_key) if notice_key else None
    return render_page(request, "duplicates.html", exact=listing.exact, threshold=threshold, choices=choices,
                       groups=groups, photos=sum(group["count"] for group in groups), show_decided=listing.show_decided,
                       hidden=hidden, paged=paged, listing=listing, notice=notice,
                       destination=destination_name(request),
                       form_key=request.app.state.form_key,
                       previous_url=listing.url(paged.number - 1) if paged.number > 1 else None,
                       next_url=listing.url(paged.number + 1) if paged.number < paged.pages else None)


def api_duplicates(request: Request) -> Response:
    listing, paged, hidden, groups = _page(request)
    return JSONResponse({"exact": listing.exact, "threshold": None if listing.exact else listing.threshold,
                         "all": listing.show_decided, "hidden": hidden, **paged.json(), "groups": groups})


def destination_name(request: Request) -> str:
    """Where the page's moves go, for a person: [duplicates] move_to, or the trash."""
    return printable(page_destination(state_of(request).config).describe())
