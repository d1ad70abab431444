"""The duplicates page and GET /api/duplicates: groups of copies, biggest first.

A switch chooses between exact copies (``?exact=1``: the same content) and photos that look alike
at a threshold (``?threshold=0.95``), as `imgwatch duplicates [--exact]` prints them: the keeper
first with the one-line reason the [duplicates] rule gives, then the others by their score
against it. Nothing is deleted.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from imgwatch.display import human_size
from imgwatch.duplicates import DEFAULT_THRESHOLD, DuplicateGroup
from imgwatch.use_cases import duplicate_groups, exact_copies, keeper_rule
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


def _groups(request: Request) -> tuple[bool, float, list[dict[str, Any]]]:
    state = state_of(request)
    exact, threshold = exact_of(request), threshold_of(request)
    rule = keeper_rule(state.config)
    groups = (exact_copies(state.store(), rule) if exact  # biggest first
              else duplicate_groups(state.store(), threshold, state.config.links.threshold, rule))
    return exact, threshold, [group_item(group) for group in groups]


def duplicates_page(request: Request) -> Response:
    exact, threshold, groups = _groups(request)
    lowest = state_of(request).config.links.threshold
    choices = sorted({choice for choice in THRESHOLD_CHOICES if choice >= lowest} | {threshold})
    return render_page(request, "duplicates.html", exact=exact, threshold=threshold, choices=choices, groups=groups,
                       photos=sum(group["count"] for group in groups))


def api_duplicates(request: Request) -> Response:
    exact, threshold, groups = _groups(request)
    return JSONResponse({"exact": exact, "threshold": None if exact else threshold, "groups": groups})
