"""The duplicates page and GET /api/duplicates: groups of near-identical photos, biggest first.

The groups are :func:`imgwatch.duplicates.find_duplicates`'s, as `imgwatch duplicates` prints
them: each one's images best to keep first (most pixels, then largest file), nothing deleted.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from imgwatch.duplicates import DEFAULT_THRESHOLD, DuplicateGroup
from imgwatch.use_cases import duplicate_groups
from imgwatch.web.routes import JSONResponse, query_values, render_page, state_of
from imgwatch.web.views import display_name, human_size, image_facts

THRESHOLD_CHOICES = (0.85, 0.9, 0.95, 0.97, 0.99)


def group_item(group: DuplicateGroup) -> dict[str, Any]:
    images = []
    for image, score in zip(group.images, group.scores, strict=True):
        facts = image_facts(image)
        facts.update(keep=image.path == group.keep, score=round(score, 6),
                     detail=f"{image.width}×{image.height} · {human_size(image.size)}")
        images.append(facts)
    return {"keep": group.keep, "keep_name": display_name(group.keep), "strongest": round(group.strongest, 6),
            "weakest": round(group.weakest, 6), "count": len(images), "images": images}


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


def _groups(request: Request) -> tuple[float, list[dict[str, Any]]]:
    state = state_of(request)
    threshold = threshold_of(request)
    groups = duplicate_groups(state.store(), threshold, state.config.links.threshold)  # biggest first
    return threshold, [group_item(group) for group in groups]


def duplicates_page(request: Request) -> Response:
    threshold, groups = _groups(request)
    lowest = state_of(request).config.links.threshold
    choices = sorted({choice for choice in THRESHOLD_CHOICES if choice >= lowest} | {threshold})
    return render_page(request, "duplicates.html", threshold=threshold, choices=choices, groups=groups,
                       photos=sum(group["count"] for group in groups))


def api_duplicates(request: Request) -> Response:
    threshold, groups = _groups(request)
    return JSONResponse({"threshold": threshold, "groups": groups})
