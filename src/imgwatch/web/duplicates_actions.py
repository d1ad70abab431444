"""The duplicates page's actions: decisions (POST /duplicates/decide), moving the others of a group
or of every group listed (GET /duplicates/confirm or /api/duplicates/plan: the dry run; POST
/duplicates/move), and its undo (POST /duplicates/undo), through the clean-up core the command
line uses (use_cases.move_duplicates into [duplicates] move_to, or the trash).

Actions name a group by its keeper's path only: the server lists the groups again with the same
exact/threshold/all and acts on the one whose keeper that is, so a page cannot name files that
are not in a group. After an action the browser is sent back to the listing with a notice, kept
by a random id (a link cannot put words on the page).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from imgwatch import decisions
from imgwatch.cleanup import Cleanup
from imgwatch.display import human_size
from imgwatch.duplicates import DuplicateGroup
from imgwatch.errors import ImgwatchError, printable
from imgwatch.use_cases import (
    finish_unfinished,
    manifest_by_id,
    move_duplicates,
    page_destination,
    undo_cleanup,
)
from imgwatch.web.duplicates_view import (
    Listing,
    Notice,
    destination_name,
    listed_groups,
    listing_of,
    page_of,
)
from imgwatch.web.routes import JSONResponse, query_values, render_page, state_of
from imgwatch.web.views import display_name


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
    return render_page(request, "duplicates_confirm.html",
                       plan=plan_json(listing, keeper, plan, destination_name(request)),
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
        # As the command line does, before the groups are read: a clean-up a kill stopped is finished first.
        finished = finish_unfinished(state.config, state.store())
        earlier = "".join(f"Finished an earlier clean-up that was stopped part-way: {copies(len(cleanup.moves))} "
                          f"({cleanup.manifest.name if cleanup.manifest else '-'}). " for cleanup in finished)
        groups = groups_to_clear(request, listing, keeper)
        done = move_duplicates(state.config, state.store(), groups, page_destination(state.config))
        refused = _refused_line(done)
        if done.manifest is None:
            return Notice(earlier + "Nothing moved." + refused)
        return Notice(earlier + f"Moved {copies(len(done.moves))} ({human_size(done.bytes)}) into "
                      f"{destination_name(request)}; manifest {done.manifest.name}." + refused,
                      undo=done.manifest.name)

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


def _page_query(request: Request) -> str:
    page = page_of(request)
    return f"&page={page}" if page > 1 else ""


def _refused_line(done: Cleanup) -> str:
    """A few words on the files left in place: how many, and the first with why."""
    if not done.refused:
        return ""
    first = done.refused[0]
    return (f" {len(done.refused)} left in place, e.g. {display_name(first.path)}: {printable(first.reason)}")
