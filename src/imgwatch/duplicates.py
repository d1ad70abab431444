"""Duplicate groups: images joined by SIMILAR_TO links at or above a threshold.

A group is a connected component of the graph made of the links scoring at least the
threshold (an exact copy, a resized or re-encoded one scores about 1.0), so A–B and B–C
put A, B and C in one group even if A–C was never linked. Each group lists its images
best to keep first: the largest resolution (width × height), then the largest file,
then the shortest path, then the alphabetically first one.

Only the store is read (no model, no files): groups come from the links the workers
made, so a pair of images is found only if one of them picked the other, i.e. scored
at least ``links.threshold`` and was among its ``links.top_k`` best. Below
``links.threshold`` nothing can be found (:func:`check_threshold`). Nothing is ever deleted.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from imgwatch.errors import ThresholdBelowLinks, printable
from imgwatch.photos.formats import original_rank
from imgwatch.store import GraphStore, Link, StoredImage

DEFAULT_THRESHOLD = 0.95
CSV_COLUMNS = ("group", "path", "keep", "width", "height", "size")


@dataclass(frozen=True)
class DuplicateGroup:
    """Images that are copies of each other, best to keep first."""

    images: tuple[StoredImage, ...]  # best to keep first; at least two
    keep: str  # the path of images[0]: the one a person would probably keep
    strongest: float  # the highest link score inside the group (raw cosine)
    weakest: float  # the lowest link score inside the group (>= the threshold)
    scores: tuple[float, ...]  # each image's strongest link inside the group, in ``images`` order

    @property
    def others(self) -> tuple[StoredImage, ...]:
        """The images besides the one to keep."""
        return self.images[1:]


def keep_order(image: StoredImage) -> tuple[int, int, int, int, str]:
    """Sort key, best to keep first: the original's kind (RAW, then HEIC/AVIF/JXL, then the rest),
    then most pixels, then largest file, then shortest and first path."""
    return (original_rank(image.path), -image.width * image.height, -image.size, len(image.path), image.path)


def check_threshold(threshold: float, links_threshold: float) -> None:
    """ThresholdBelowLinks when ``threshold`` is below ``links.threshold``: such pairs have no links."""
    if threshold < links_threshold:
        raise ThresholdBelowLinks(
            f"duplicates at >= {threshold:g} cannot be found from the links: images are linked only at cosine "
            f">= links.threshold ({links_threshold:g}); use --threshold {links_threshold:g} or higher "
            "(links.threshold applies when images are linked, so lowering it needs a re-index into a new data dir)"
        )


def group_links(links: Iterable[Link], facts: Mapping[str, StoredImage], threshold: float) -> list[DuplicateGroup]:
    """The duplicate groups the links at or above ``threshold`` make, biggest first.

    ``facts`` holds the stored images; a link to an image it lacks (removed since the
    links were read) is left out. Groups of equal size come in the order of their
    alphabetically first path.
    """
    components = _Components()
    best: dict[str, float] = {}
    kept: list[Link] = []
    for link in links:
        if link.score >= threshold and link.a != link.b and link.a in facts and link.b in facts:
            components.join(link.a, link.b)
            kept.append(link)
            for path in (link.a, link.b):
                best[path] = max(best.get(path, link.score), link.score)
    scores_of: dict[str, list[float]] = {}
    for link in kept:
        scores_of.setdefault(components.root(link.a), []).append(link.score)
    groups = []
    for root, members in components.groups().items():
        images = tuple(sorted((facts[path] for path in members), key=keep_order))
        scores = scores_of[root]
        groups.append(DuplicateGroup(images=images, keep=images[0].path, strongest=max(scores), weakest=min(scores),
                                     scores=tuple(best[image.path] for image in images)))
    return sorted(groups, key=lambda group: (-len(group.images), min(image.path for image in group.images)))


def find_duplicates(store: GraphStore, threshold: float = DEFAULT_THRESHOLD) -> list[DuplicateGroup]:
    """The store's duplicate groups at ``threshold`` (see :func:`group_links`); reads only."""
    links = list(store.links_at_least(threshold))
    facts = store.get_many(sorted({path for link in links for path in (link.a, link.b)}))
    return group_links(links, facts, threshold)


class _Components:
    """Union-find over paths (union by size, path halving)."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}
        self._size: dict[str, int] = {}

    def root(self, item: str) -> str:
        parent = self._parent
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    def join(self, one: str, other: str) -> None:
        for item in (one, other):
            if item not in self._parent:
                self._parent[item], self._size[item] = item, 1
        a, b = self.root(one), self.root(other)
        if a == b:
            return
        if self._size[a] < self._size[b]:
            a, b = b, a
        self._parent[b] = a
        self._size[a] += self._size[b]

    def groups(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for item in self._parent:
            found.setdefault(self.root(item), []).append(item)
        return found


# -- output -------------------------------------------------------------------------------


def as_json(groups: Sequence[DuplicateGroup]) -> list[dict[str, object]]:
    """Groups as plain data: ``{"keep", "strongest", "weakest", "images": [{path, width, height,
    size, keep, score}]}``, ``score`` being the image's strongest link inside its group."""
    return [
        {
            "keep": group.keep,
            "strongest": round(group.strongest, 6),
            "weakest": round(group.weakest, 6),
            "images": [
                {"path": image.path, "width": image.width, "height": image.height, "size": image.size,
                 "keep": image.path == group.keep, "score": round(score, 6)}
                for image, score in zip(group.images, group.scores, strict=True)
            ],
        }
        for group in groups
    ]


def as_json_text(groups: Sequence[DuplicateGroup]) -> str:
    return json.dumps(as_json(groups), indent=2)


def as_csv(groups: Sequence[DuplicateGroup]) -> str:
    """One row per image: ``group,path,keep,width,height,size`` (group numbers from 1).

    Paths are shown as the text output shows them (see printable), since CSV is read in
    terminals and spreadsheets too; JSON keeps them exact for programs."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for number, group in enumerate(groups, start=1):
        for image in group.images:
            writer.writerow([number, printable(image.path), "true" if image.path == group.keep else "false",
                             image.width, image.height, image.size])
    return out.getvalue().rstrip("\n")


def as_text(groups: Sequence[DuplicateGroup], threshold: float) -> str:
    """Groups for a person: the one to keep marked ``* keep``, with dimensions and size."""
    if not groups:
        return f"no duplicates at ≥ {threshold:g}"
    dimensions = {image.path: f"{image.width}x{image.height}" for group in groups for image in group.images}
    sizes = {image.path: human_size(image.size) for group in groups for image in group.images}
    dimensions_width = max(map(len, dimensions.values()))
    size_width = max(map(len, sizes.values()))
    lines = []
    for number, group in enumerate(groups, start=1):
        span = (f"{group.weakest:.4f}" if round(group.weakest, 4) == round(group.strongest, 4)
                else f"{group.weakest:.4f} to {group.strongest:.4f}")
        lines.append(f"group {number}: {len(group.images)} images, cosine {span}")
        for image in group.images:
            marker = "* keep" if image.path == group.keep else "      "
            lines.append(f"{marker}  {dimensions[image.path]:>{dimensions_width}}  {sizes[image.path]:>{size_width}}"
                         f"  {printable(image.path)}")
        lines.append("")
    images = sum(len(group.images) for group in groups)
    lines.append(f"{len(groups)} group{'s' if len(groups) != 1 else ''} of duplicates at ≥ {threshold:g}: "
                 f"{images} images, {images - len(groups)} besides the ones to keep (nothing was deleted)")
    return "\n".join(lines)


def human_size(size: int) -> str:
    """Bytes in decimal units, as file managers show them: 950 B, 120.4 kB, 5.1 MB."""
    if size < 1000:
        return f"{size} B"
    value, units = size / 1000, ["kB", "MB", "GB", "TB"]
    while value >= 1000 and len(units) > 1:
        value, units = value / 1000, units[1:]
    return f"{value:.1f} {units[0]}"
