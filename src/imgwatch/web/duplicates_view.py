"""The duplicates page and GET /api/duplicates: groups of copies, biggest first.

A switch chooses between exact copies (``?exact=1``: the same content) and photos that look alike
at a threshold (``?threshold=0.95``), as `imgwatch duplicates [--exact]` prints them: the keeper
first with the one-line reason the [duplicates] rule gives, then the others by their score
against it. Groups a person's decision settles (see decisions) are left out unless ``?all=1``
("show decided"), then marked with it. Nothing is deleted.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from imgwatch.display import human_size
from imgwatch.duplicates import DEFAULT_THRESHOLD, DuplicateGroup, decision_json, decision_line
from imgwatch.use_cases import duplicates_to_show, keeper_rule
from imgwatch.web.routes import JSONResponse, query_values, render_page, state_of
from imgwatch.web.views import display_name, image_facts

THRESHOLD_CHOICES = (0.85, 0.9, 0.95, 0.97, 0.99)


def group_item(group: DuplicateGroup) -> dict[str, Any]:
    images = []
    for image, score in zip(group.images, group.scores, strict=True):
        facts = image_facts(image)
        facts.update(keep=image.path == group.keep, score=round(score, 6),
                     detail=f"{image.width}×{image.height} · {human_size(image.size)}",
                     same_file=list(group.same_file.get(image.path, ())))
        images.append(facts)
    return {"keep": group.keep, "keep_name": display_name(group.keep), "reason": group.reason, "exact": group.exact,
            "strongest": round(group.strongest, 6), "weakest": round(group.weakest, 6), "count": len(images),
            "decided": group.decided, "decision": decision_json(group), "decision_line": decision_line(group),
            "images": images}


def threshold_of(request: Request) -> float:
    from starlette.exceptions import HTTPException

    raw = query_values(request).get("threshold", "")
    if not raw:
        return DEFAULT_THRESHOLD
    try:
        threshold = float(raw)
    except ValueError:
        raise HTTPException(400, "threshold must be a cosine, e.g. 0.95") from None
    if not threshold <= 1.0:  # also NaN
        raise HTTPException(400, "threshold must be a cosine of at most 1, e.g. 0.95")
    return threshold


def exact_of(request: Request) -> bool:
    """``?exact=1``: exact copies instead of photos that look alike."""
    from starlette.exceptions import HTTPException

    raw = query_values(request).get("exact", "")
    if raw not in ("", "0", "1"):
        raise HTTPException(400, "exact must be 1 (exact copies) or 0 (photos that look alike)")
    return raw == "1"


def all_of(request: Request) -> bool:
    """``?all=1``: also the groups a decision settles ("show decided")."""
    from starlette.exceptions import HTTPException

    raw = query_values(request).get("all", "")
    if raw not in ("", "0", "1"):
        raise HTTPException(400, "all must be 1 (also the decided groups) or 0")
    return raw == "1"


def _groups(request: Request) -> tuple[bool, float, bool, int, list[dict[str, Any]]]:
    state = state_of(request)
    exact, threshold, show_decided = exact_of(request), threshold_of(request), all_of(request)
    groups, hidden = duplicates_to_show(state.store(), exact=exact, threshold=threshold,  # biggest first
                                        links_threshold=state.config.links.threshold,
                                        rule=keeper_rule(state.config), show_decided=show_decided)
    return exact, threshold, show_decided, hidden, [group_item(group) for group in groups]


def duplicates_page(request: Request) -> Response:
    exact, threshold, show_decided, hidden, groups = _groups(request)
    lowest = state_of(request).config.links.threshold
    choices = sorted({choice for choice in THRESHOLD_CHOICES if choice >= lowest} | {threshold})
    return render_page(request, "duplicates.html", exact=exact, threshold=threshold, choices=choices, groups=groups,
                       photos=sum(group["count"] for group in groups), show_decided=show_decided, hidden=hidden)


def api_duplicates(request: Request) -> Response:
    exact, threshold, show_decided, hidden, groups = _groups(request)
    return JSONResponse({"exact": exact, "threshold": None if exact else threshold, "all": show_decided,
                         "hidden": hidden, "groups": groups})
