"""A person's decisions about duplicate groups, and what they do to the groups shown.

Two decisions: "not duplicates" (a burst, a series: these look alike but all stay) and "keep this
one" (of these, that one is kept). They are stored by content hash (GraphStore.record_decision),
not by path, so they outlive moves, renames and re-indexing. A content is in one decision at most:
deciding again about it replaces the earlier decision.

A group is decided when one decision holds the contents of all its images (for "not duplicates":
of two contents or more, since copies of one content are duplicates whatever was said); it is hidden unless
asked for (`imgwatch duplicates --all`, the page's "show decided"). An image whose content the
decision lacks joining the group brings it back, with the earlier decision named. A "keep" decision
chooses the keeper over the keeper rule while its content is in the group.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from imgwatch.duplicates import DuplicateGroup, Vectors, decided_day
from imgwatch.errors import ImageNotFound, ImgwatchError
from imgwatch.files import canonical_path
from imgwatch.store import GraphStore, StoredImage
from imgwatch.store.base import Decision


def with_decisions(store: GraphStore, groups: Sequence[DuplicateGroup], *, show_decided: bool,
                   vectors: Vectors | None = None) -> tuple[list[DuplicateGroup], int]:
    """The groups with the decisions about them (one read), without the decided ones unless
    ``show_decided``; and how many decided groups were left out. ``vectors`` scores a look-alike
    group's images against a keeper a "keep" decision chose (without it the scores stay)."""
    decisions = store.decisions_about({image.sha256 for group in groups for image in group.images})
    decision_of = {sha256: decision for decision in decisions for sha256 in decision.hashes}
    marked = [_with_decision(group, decision_of) for group in groups]
    # The vectors of every group a "keep" decision gives another keeper, in one read: one per
    # group would be a round trip each to a Neo4j server, hundreds in a large library.
    rescored = [group for group in marked if not group.exact and _keeper_moves(group)]
    unit = vectors([image for group in rescored for image in group.images]) if rescored and vectors else {}
    shown, hidden = [], 0
    for group in marked:
        decided = _kept_by_decision(group, unit) if _decided_keeper(group) is not None else group
        if decided.decided and not show_decided:
            hidden += 1
        else:
            shown.append(decided)
    return shown, hidden


def _with_decision(group: DuplicateGroup, decision_of: Mapping[str, Decision]) -> DuplicateGroup:
    """The group with the decision about it, if any (the keeper stays the rule's)."""
    about = [decision_of[image.sha256] for image in group.images if image.sha256 in decision_of]
    if not about:
        return group
    decision = max(about, key=lambda d: d.decided_at)  # one holding every image is the only one
    if decision.kind == "not_duplicates" and len({image.sha256 for image in group.images}) < 2:
        return group  # copies of one content are duplicates whatever was said of it and other photos
    new = tuple(image.path for image in group.images if image.sha256 not in decision.hashes)
    return dataclasses.replace(group, decision=decision, new=new)


def _decided_keeper(group: DuplicateGroup) -> StoredImage | None:
    """The image whose content the group's "keep" decision keeps, None without one in the group."""
    decision = group.decision
    if decision is None or decision.kind != "keep":
        return None
    return next((image for image in group.images if image.sha256 == decision.keep), None)


def _keeper_moves(group: DuplicateGroup) -> bool:
    """Whether a "keep" decision makes another image than the rule's the keeper."""
    keeper = _decided_keeper(group)
    return keeper is not None and keeper.path != group.keep


def _kept_by_decision(group: DuplicateGroup, unit: Mapping[str, np.ndarray]) -> DuplicateGroup:
    """The group with its "keep" decision's content as keeper (the rule's keeper if it has that
    content); ``unit``: unit vectors by path, to score a look-alike group against the new keeper."""
    decision, keeper = group.decision, _decided_keeper(group)
    assert decision is not None and keeper is not None
    reason = f"kept by your decision on {decided_day(decision)}"
    if keeper.path == group.keep:
        return dataclasses.replace(group, reason=reason)
    others = [image for image in group.images if image.path != keeper.path]
    scores = dict(zip((image.path for image in group.images), group.scores, strict=True))
    if group.exact:
        scored = {image.path: 1.0 for image in others}
    else:  # scores were against the rule's keeper: score again against this one where the vectors tell
        scored = {group.keep: scores[keeper.path]}  # a cosine is symmetric
        for image in others:
            if image.path != group.keep:
                scored[image.path] = (float(unit[keeper.path] @ unit[image.path])
                                      if keeper.path in unit and image.path in unit else scores[image.path])
    ordered = sorted(others, key=lambda image: (-scored[image.path], image.path))
    return dataclasses.replace(group, images=(keeper, *ordered), scores=(1.0, *(scored[i.path] for i in ordered)),
                               reason=reason)


# -- deciding by path ----------------------------------------------------------------------------


def indexed_images(store: GraphStore, paths: Sequence[str]) -> list[StoredImage]:
    """The stored images at ``paths`` (as given, resolved as the daemon resolves them), in order;
    ImageNotFound for the first that is not indexed."""
    wanted = [canonical_path(path) for path in paths]
    found = store.get_many(wanted)
    for given, path in zip(paths, wanted, strict=True):
        if path not in found:
            raise ImageNotFound(given)
    return [found[path] for path in wanted]


def decide_not_duplicates(store: GraphStore, paths: Sequence[str]) -> Decision:
    """Record that the images at ``paths`` are not duplicates of each other (by their contents)."""
    if len(paths) < 2:
        raise ImgwatchError("--not-duplicates needs two paths or more: the images that all stay")
    contents = _contents(indexed_images(store, paths))
    if len(contents) < 2:
        raise ImgwatchError("these files have the same content: exact copies are always duplicates "
                            "(--keep PATH chooses which one stays)")
    return store.record_decision("not_duplicates", contents)


def decide_keep(store: GraphStore, keep: str, over: Sequence[str]) -> Decision:
    """Record that, of the images at ``keep`` and ``over``, the content of ``keep`` is the one to keep."""
    if not over:
        raise ImgwatchError("--keep PATH needs the paths it is kept over, e.g. --keep best.jpg copy.jpg other.jpg")
    return store.record_decision("keep", _contents(indexed_images(store, [keep, *over])))


def undecide(store: GraphStore, paths: Sequence[str]) -> int:
    """Drop every decision about the contents of the images at ``paths``; how many went."""
    return store.forget_decisions(_contents(indexed_images(store, paths)))


def _contents(images: Sequence[StoredImage]) -> list[str]:
    """Their content hashes, each once, in order (the first is the one a "keep" keeps)."""
    return list(dict.fromkeys(image.sha256 for image in images))
