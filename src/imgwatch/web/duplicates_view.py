"""The duplicates page and GET /api/duplicates: groups of copies, biggest first, a page at a time;
and the page's actions: decisions (POST /duplicates/decide), moving the others of a group or of
every group listed (GET /duplicates/confirm or /api/duplicates/plan: the dry run; POST
/duplicates/move), and its undo (POST /duplicates/undo), through the clean-up core the command
line uses (use_cases.move_duplicates into [duplicates] move_to, or the trash).

A switch chooses between exact copies (``?exact=1``: the same content) and photos that look alike
at a threshold (``?threshold=0.95``), as `imgwatch duplicates [--exact]` prints them: the keeper
first with the one-line reason the [duplicates] rule gives, then the others by their score
against it. Groups a person's decision settles (see decisions) are left out unless ``?all=1``
("show decided"), then marked with it. ``?page=N`` (from 1) shows GROUPS_PER_PAGE groups; a page
past the last shows the last (a listing shrinks as groups are decided).

Actions name a group by its keeper's path only: the server lists the groups again with the same
exact/threshold/all and acts on the one whose keeper that is, so a page cannot name files that
are not in a group. After an action the browser is sent back to the listing with a notice, kept
here by a random id (a link cannot put words on the page).
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from imgwatch import decisions
from imgwatch.cleanup import Cleanup
from imgwatch.display import human_size
from imgwatch.duplicates import DEFAULT_THRESHOLD, DuplicateGroup, decision_json, decision_line
from imgwatch.errors import ImgwatchError, printable
from imgwatch.use_cases import (
    duplicates_to_show,
    finish_unfinished,
    keeper_rule,
    manifest_by_id,
    move_duplicates,
    page_destination,
    undo_cleanup,
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
                       hidden=hidden, paged=paged, listing=listing, notice=notice, destination=_where(request),
                       form_key=request.app.state.form_key,
                       previous_url=listing.url(paged.number - 1) if paged.number > 1 else None,
                       next_url=listing.url(paged.number + 1) if paged.number < paged.pages else None)


def api_duplicates(request: Request) -> Response:
    listing, paged, hidden, groups = _page(request)
    return JSONResponse({"exact": listing.exact, "threshold": None if listing.exact else listing.threshold,
                         "all": listing.show_decided, "hidden": hidden, **paged.json(), "groups": groups})


# -- actions -------------------------------------------------------------------------------------


def form_field(form: FormData, name: str) -> str:
    value = form.get(name)
    if not isinstance(value, str) or not value:
        raise HTTPException(400, f"the form lacks its field {name!r}: reload the page and try again")
    return value


def group_named(request: Request, listing: Listing, keeper: str) -> DuplicateGroup:
    """The group of ``listing`` whose keeper is at ``keeper``; 409 when it is no longer listed."""
    groups, _hidden = listed_groups(request, listing)
    found = next((group for group in groups if group.keep == keeper), None)
    if found is None:
        raise HTTPException(409, f"no group kept by {printable(keeper)} is listed any more (decided, moved or "
                                 "changed since the page was shown): reload the page")
    return found


def _notified(request: Request, listing: Listing, notice: Notice) -> Response:
    key = request.app.state.notices.add(notice)
    return RedirectResponse(listing.url(page_of(request), key), status_code=303)


async def decide(request: Request) -> Response:
    """POST /duplicates/decide (the listing in the query): ``action`` = ``keep`` (the image at ``keep``
    over the rest of the group kept by ``group``) or ``not_duplicates`` (that whole group)."""
    listing = listing_of(request)
    async with request.form(max_files=0, max_fields=8) as form:
        action, keeper = form_field(form, "action"), form_field(form, "group")
        chosen = form.get("keep")
    if action not in ("keep", "not_duplicates"):
        raise HTTPException(400, "action must be keep or not_duplicates")
    store = state_of(request).store()

    def record() -> Notice:
        group = group_named(request, listing, keeper)
        paths = [image.path for image in group.images]
        try:
            if action == "not_duplicates":
                decisions.decide_not_duplicates(store, paths)
                return Notice(f"Decided: the {len(paths)} photos kept by {display_name(keeper)} are not duplicates; "
                              "their group is hidden until another copy joins.")
            if chosen not in paths:
                raise HTTPException(400, "keep must be the path of a photo of that group: reload the page")
            decisions.decide_keep(store, chosen, [path for path in paths if path != chosen])
        except ImgwatchError as exc:
            raise HTTPException(409, str(exc)) from None
        others = len(paths) - 1
        photos = "photo" if others == 1 else "photos"
        return Notice(f"Decided: keep {display_name(chosen)} over {others} other {photos} of its group; the group "
                      "is hidden until another copy joins.")

    return _notified(request, listing, await run_in_threadpool(record))


# -- clearing: move the others, resolve all shown, undo ------------------------------------------


def copies(count: int) -> str:
    return f"{count} cop{'y' if count == 1 else 'ies'}"


def groups_to_clear(request: Request, listing: Listing, keeper: str | None) -> list[DuplicateGroup]:
    """The group kept by ``keeper``, or (None) every group of the listing, all its pages: the groups
    the page shows. The clean-up core leaves alone the copies a decision says are not duplicates."""
    if keeper is not None:
        return [group_named(request, listing, keeper)]
    return listed_groups(request, listing)[0]


def keeper_asked(values: Mapping[str, Any]) -> str | None:
    """``group=KEEPER`` (that group) or ``resolve=all`` (every group listed); 400 for neither."""
    keeper, resolve = values.get("group"), values.get("resolve")
    if isinstance(keeper, str) and keeper:
        return keeper
    if resolve == "all":
        return None
    raise HTTPException(400, "name the group by its keeper's path (group=PATH), or pass resolve=all for every "
                             "group listed")


def plan_of(request: Request, listing: Listing, keeper: str | None) -> Cleanup:
    """The dry run of moving the others of the group kept by ``keeper`` (None: of every group listed)."""
    state = state_of(request)
    groups = groups_to_clear(request, listing, keeper)
    return move_duplicates(state.config, state.store(), groups, page_destination(state.config), dry_run=True)


def plan_json(listing: Listing, keeper: str | None, plan: Cleanup, destination: str) -> dict[str, Any]:
    return {"group": keeper, "moves": len(plan.moves), "bytes": plan.bytes, "destination": destination,
            "groups": len({move.keeper for move in plan.moves}), "exact": listing.exact,
            "threshold": None if listing.exact else listing.threshold,
            "refused": [{"path": refusal.path, "reason": refusal.reason} for refusal in plan.refused]}


async def api_plan(request: Request) -> Response:
    """GET /api/duplicates/plan (the listing's parameters; ``group=KEEPER`` or ``resolve=all``): what
    moving would do, nothing moved."""
    listing = listing_of(request)
    keeper = keeper_asked(query_values(request))
    plan = await run_in_threadpool(plan_of, request, listing, keeper)
    return JSONResponse(plan_json(listing, keeper, plan, page_destination(state_of(request).config).describe()))


async def confirm_page(request: Request) -> Response:
    """GET /duplicates/confirm: the dry run, said in words, and the button that moves."""
    listing = listing_of(request)
    keeper = keeper_asked(query_values(request))
    plan = await run_in_threadpool(plan_of, request, listing, keeper)
    return render_page(request, "duplicates_confirm.html", plan=plan_json(listing, keeper, plan, _where(request)),
                       copies=copies(len(plan.moves)), size=human_size(plan.bytes), keeper=keeper,
                       keeper_name=display_name(keeper) if keeper else None,
                       action_query=listing.query() + _page_query(request), form_key=request.app.state.form_key,
                       back=listing.url(page_of(request)))


async def move(request: Request) -> Response:
    """POST /duplicates/move (the listing in the query): ``group=KEEPER`` or ``resolve=all``; moves the
    others to [duplicates] move_to (or the trash), the manifest written first."""
    listing = listing_of(request)
    async with request.form(max_files=0, max_fields=8) as form:
        keeper = keeper_asked(form)
    state = state_of(request)

    def clear() -> Notice:
        finish_unfinished(state.config, state.store())  # as the command line does, before the groups are read
        groups = groups_to_clear(request, listing, keeper)
        done = move_duplicates(state.config, state.store(), groups, page_destination(state.config))
        refused = _refused_line(done)
        if done.manifest is None:
            return Notice("Nothing moved." + refused)
        return Notice(f"Moved {copies(len(done.moves))} ({human_size(done.bytes)}) into {_where(request)}; "
                      f"manifest {done.manifest.name}." + refused, undo=done.manifest.name)

    return _notified(request, listing, await run_in_threadpool(clear))


async def undo(request: Request) -> Response:
    """POST /duplicates/undo (the listing in the query): ``manifest`` = a manifest's file name."""
    listing = listing_of(request)
    async with request.form(max_files=0, max_fields=8) as form:
        named = form_field(form, "manifest")
    state = state_of(request)

    def put_back() -> Notice:
        done = undo_cleanup(state.config, state.store(), manifest_by_id(state.config, named))
        if not done.moves and not done.refused:
            return Notice(f"Nothing to put back: {named} was undone already.")
        again = (f" {done.to_index_again} of them are back in watched folders and are indexed again once "
                 "`imgwatch run` sees them." if done.to_index_again else "")
        return Notice(f"Put back {copies(len(done.moves))} ({human_size(done.bytes)}) where they were "
                      f"({named})." + again + _refused_line(done))

    return _notified(request, listing, await run_in_threadpool(put_back))


def _where(request: Request) -> str:
    return printable(page_destination(state_of(request).config).describe())


def _page_query(request: Request) -> str:
    page = page_of(request)
    return f"&page={page}" if page > 1 else ""


def _refused_line(done: Cleanup) -> str:
    """A few words on the files left in place: how many, and the first with why."""
    if not done.refused:
        return ""
    first = done.refused[0]
    return (f" {len(done.refused)} left in place, e.g. {display_name(first.path)}: {printable(first.reason)}")
