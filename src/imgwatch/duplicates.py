"""Duplicate groups: exact copies (the same content hash), or images that look alike (SIMILAR_TO
links at or above a threshold); in each, the copy to keep and why.

Look alike: a group is a keeper and the images scoring at least the threshold against it, never
a chain. Candidates come from the links at or above the threshold: their connected components
(A–B and B–C put A, B and C in one). A component is put in the keeper rule's order (keeper.py)
once; down that order, an image not yet in a group keeps those not yet in one that score at least
the threshold against it: its linked neighbours by the link's score and, since links are cut at
``links.top_k``, its neighbours' neighbours by the cosine of their stored vectors. So a group never
joins A and C through B when A–C is below the threshold, the outcome is the same on every run, and
no component is scored pair by pair: each keeper only against its neighbourhood. "Member against
keeper" rather than "every pair": it is what a person checks ("is this a copy of the one I
keep?"), and each member's score says it. An image with no link at or above the threshold to
anything (top_k cut every one) is not found.

Exact: the images sharing a content hash (SHA-256) form a group; neither links nor vectors nor the
model are read.

One file is never its own duplicate: a symbolic link and its target, or two hard links of one
inode, are told by the file system when the groups are made (the store keeps no device number),
and listed as one image with its other names (``same_file``); a link is the keeper only when every
copy is one. The store is read, files are only stat'ed (and, where the rule gets that far, their
headers read for the capture time). Nothing is ever deleted.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from imgwatch.display import human_size
from imgwatch.errors import ThresholdBelowLinks, printable
from imgwatch.keeper import DEFAULT_RULE, Candidate, KeeperRule, choose_keeper, keeper_order, read_capture_time
from imgwatch.store import GraphStore, Link, StoredImage
from imgwatch.store.base import Decision

DEFAULT_THRESHOLD = 0.95
CSV_COLUMNS = ("group", "path", "keep", "width", "height", "size", "score", "reason", "decision")

# Unit vectors by path, for the images of one component: scores where no link was stored.
Vectors = Callable[[Sequence[StoredImage]], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class DuplicateGroup:
    """Copies of one photo: the keeper first, then the others by their score against it, best first."""

    images: tuple[StoredImage, ...]  # at least two distinct files
    reason: str  # one line: why images[0] is the one to keep
    scores: tuple[float, ...]  # each image's cosine against the keeper, in ``images`` order (the keeper: 1)
    exact: bool = False  # the same content (SHA-256): scores are 1
    # Other paths of the same file (a symbolic link to it, a hard link of it), by the image's path.
    same_file: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # A person's decision about its contents (see decisions.py): the one holding them all, or else the
    # latest holding some of them (an image joined since: ``new`` are the paths whose content it lacks).
    decision: Decision | None = None
    new: tuple[str, ...] = ()

    @property
    def decided(self) -> bool:
        """Whether a decision holds the contents of every image: such a group is hidden unless asked for."""
        return self.decision is not None and not self.new

    @property
    def keep(self) -> str:
        """The path of the one a person would probably keep."""
        return self.images[0].path

    @property
    def others(self) -> tuple[StoredImage, ...]:
        """The images besides the one to keep."""
        return self.images[1:]

    @property
    def strongest(self) -> float:
        """The highest score of another image against the keeper."""
        return max(self.scores[1:])

    @property
    def weakest(self) -> float:
        """The lowest score of another image against the keeper (>= the threshold)."""
        return min(self.scores[1:])


def check_threshold(threshold: float, links_threshold: float) -> None:
    """ThresholdBelowLinks when ``threshold`` is below ``links.threshold``: such pairs have no links."""
    if threshold < links_threshold:
        raise ThresholdBelowLinks(
            f"duplicates at >= {threshold:g} cannot be found from the links: images are linked only at cosine "
            f">= links.threshold ({links_threshold:g}); use --threshold {links_threshold:g} or higher "
            "(links.threshold applies when images are linked, so lowering it needs a re-index into a new data dir)"
        )


# -- one file under several names ----------------------------------------------------------------


@dataclass(frozen=True)
class OnDisk:
    is_link: bool  # the path itself is a symbolic link
    file: tuple[int, int] | None  # (device, inode) of the file it names, links followed; None: not there


def on_disk(path: str) -> OnDisk:
    try:
        st = os.stat(path)
    except OSError:
        return OnDisk(os.path.islink(path), None)
    return OnDisk(os.path.islink(path), (st.st_dev, st.st_ino))


def one_name_per_file(paths: Iterable[str], disk: Callable[[str], OnDisk]) -> tuple[dict[str, str], dict[str, bool]]:
    """Each path's name for its file (a path that is no link first, then the shortest, the first),
    and whether each such name is a link."""
    seen = {path: disk(path) for path in sorted(set(paths))}
    by_file: dict[object, list[str]] = {}
    for path, state in seen.items():
        by_file.setdefault(state.file if state.file is not None else ("gone", path), []).append(path)
    name_of: dict[str, str] = {}
    for names in by_file.values():
        chosen = min(names, key=lambda p: (seen[p].is_link, len(p), p))
        name_of.update((name, chosen) for name in names)
    return name_of, {path: seen[path].is_link for path in set(name_of.values())}


# -- grouping ------------------------------------------------------------------------------------


@dataclass
class _Grouping:
    facts: Mapping[str, StoredImage]
    rule: KeeperRule
    capture_time: Callable[[str], str | None]
    disk: Callable[[str], OnDisk]

    def keeper_and_reason(self, names: Iterable[str], is_link: Mapping[str, bool]) -> tuple[str, str]:
        keeper = choose_keeper([Candidate(self.facts[name], is_link[name]) for name in names], self.rule,
                               self.capture_time)
        return keeper.image.path, keeper.reason

    def in_keeper_order(self, names: Iterable[str], is_link: Mapping[str, bool]) -> list[str]:
        ordered = keeper_order([Candidate(self.facts[name], is_link[name]) for name in names], self.rule,
                               self.capture_time)
        return [candidate.path for candidate in ordered]

    def group(self, keeper: str, reason: str, scored: Mapping[str, float], name_of: Mapping[str, str],
              exact: bool) -> DuplicateGroup:
        others = sorted(scored, key=lambda path: (-scored[path], path))
        members = [keeper, *others]
        aliases = {member: tuple(sorted(p for p, name in name_of.items() if name == member and p != member))
                   for member in members}
        return DuplicateGroup(images=tuple(self.facts[path] for path in members), reason=reason,
                              scores=(1.0, *(scored[path] for path in others)), exact=exact,
                              same_file={member: names for member, names in aliases.items() if names})


def group_links(links: Iterable[Link], facts: Mapping[str, StoredImage], threshold: float,
                rule: KeeperRule = DEFAULT_RULE, *, vectors: Vectors | None = None,
                capture_time: Callable[[str], str | None] = read_capture_time,
                disk: Callable[[str], OnDisk] = on_disk) -> list[DuplicateGroup]:
    """The look-alike groups the links at or above ``threshold`` make (see the module), biggest first.

    ``facts`` holds the stored images; a link to an image it lacks (removed since the links were
    read) is left out. ``vectors`` scores a pair that has no link; without it such a pair is below.
    Groups of equal size come in the order of their alphabetically first path.
    """
    grouping = _Grouping(facts, rule, functools.cache(capture_time), disk)
    components = _Components()
    kept: list[Link] = []
    for link in links:
        if link.score >= threshold and link.a != link.b and link.a in facts and link.b in facts:
            components.join(link.a, link.b)
            kept.append(link)
    links_of: dict[str, list[Link]] = {}
    for link in kept:
        links_of.setdefault(components.root(link.a), []).append(link)
    rounds = []
    for root, paths in components.groups().items():
        name_of, is_link = one_name_per_file(paths, disk)
        scores: dict[tuple[str, str], float] = {}
        for link in links_of[root]:
            a, b = name_of[link.a], name_of[link.b]
            if a != b:
                pair = (min(a, b), max(a, b))
                scores[pair] = max(scores.get(pair, link.score), link.score)
        rounds.append(_keeper_rounds(grouping, sorted(is_link), is_link, name_of, scores, threshold,
                                     vectors is not None))
    groups = _vectors_read_together(rounds, vectors)
    return sorted(groups, key=lambda group: (-len(group.images), min(image.path for image in group.images)))


# One component's keeper rounds: yields the images whose unit vectors it needs, is sent those vectors
# (by path), and returns its groups.
KeeperRounds = Generator[list[StoredImage], Mapping[str, np.ndarray], list[DuplicateGroup]]


def _vectors_read_together(rounds: Iterable[KeeperRounds], vectors: Vectors | None) -> list[DuplicateGroup]:
    """The groups of every component, the vectors the components wait for read in one call per
    wave, not one per keeper: a round trip each to a Neo4j server, hundreds in a large library."""
    groups: list[DuplicateGroup] = []
    waiting: list[tuple[KeeperRounds, list[StoredImage]]] = []

    def resume(component: KeeperRounds, unit: Mapping[str, np.ndarray] | None) -> None:
        try:
            waiting.append((component, component.send(unit)))  # type: ignore[arg-type]  # None starts it
        except StopIteration as done:
            groups.extend(done.value)

    for component in rounds:
        resume(component, None)
    while waiting:
        wave, waiting = waiting, []
        assert vectors is not None  # a component asks only when there are vectors to ask for
        unit = vectors([image for _, asked in wave for image in asked])
        for component, _ in wave:
            resume(component, unit)
    return groups


def _keeper_rounds(grouping: _Grouping, names: list[str], is_link: Mapping[str, bool], name_of: Mapping[str, str],
                   scores: Mapping[tuple[str, str], float], threshold: float, with_vectors: bool) -> KeeperRounds:
    """One component's groups: its images in the keeper rule's order (sorted once); the best one not
    yet in a group keeps those scoring at least ``threshold`` against it, and so on down the order.

    A keeper's candidates are its linked neighbours (the link's score) and, since links are cut at
    links.top_k, their neighbours (scored by the stored vectors): per keeper, its neighbourhood,
    never the whole component."""
    linked: dict[str, dict[str, float]] = {name: {} for name in names}
    for (a, b), score in scores.items():
        linked[a][b] = linked[b][a] = score
    unit: dict[str, np.ndarray] = {}
    asked: set[str] = set()
    grouped: set[str] = set()
    groups = []
    for keeper in grouping.in_keeper_order(names, is_link):
        if keeper in grouped:
            continue
        against = {name: score for name, score in linked[keeper].items() if name not in grouped}
        beyond = sorted({far for near in linked[keeper] for far in linked[near]} - set(against) - grouped - {keeper})
        if beyond and with_vectors:  # no stored link to the keeper: the vectors tell
            missing = [name for name in [keeper, *beyond] if name not in asked]
            asked.update(missing)
            if missing:
                read = yield [grouping.facts[name] for name in missing]
                unit.update((name, read[name]) for name in missing if name in read)
            if keeper in unit:
                against.update((name, float(unit[keeper] @ unit[name])) for name in beyond if name in unit)
        members = {name: score for name, score in against.items() if score >= threshold}
        if not members:
            continue
        grouped.update([keeper, *members])
        # The best of the component left is the best of its group: the reason names a copy in the group.
        _, reason = grouping.keeper_and_reason([keeper, *members], is_link)
        groups.append(grouping.group(keeper, reason, members, name_of, exact=False))
    return groups


def group_exact(contents: Iterable[Sequence[str]], facts: Mapping[str, StoredImage],
                rule: KeeperRule = DEFAULT_RULE, *, capture_time: Callable[[str], str | None] = read_capture_time,
                disk: Callable[[str], OnDisk] = on_disk) -> list[DuplicateGroup]:
    """Exact-copy groups from lists of paths sharing a content hash, biggest first (as group_links)."""
    grouping = _Grouping(facts, rule, functools.cache(capture_time), disk)
    groups = []
    for paths in contents:
        name_of, is_link = one_name_per_file([path for path in paths if path in facts], disk)
        if len(is_link) < 2:
            continue  # one file under several names is no duplicate
        keeper, reason = grouping.keeper_and_reason(is_link, is_link)
        others = {name: 1.0 for name in is_link if name != keeper}
        groups.append(grouping.group(keeper, reason, others, name_of, exact=True))
    return sorted(groups, key=lambda group: (-len(group.images), min(image.path for image in group.images)))


def find_duplicates(store: GraphStore, threshold: float = DEFAULT_THRESHOLD,
                    rule: KeeperRule = DEFAULT_RULE) -> list[DuplicateGroup]:
    """The store's look-alike groups at ``threshold`` (see :func:`group_links`); reads only."""
    links = list(store.links_at_least(threshold))
    facts = store.get_many(sorted({path for link in links for path in (link.a, link.b)}))
    return group_links(links, facts, threshold, rule, vectors=functools.partial(stored_unit_vectors, store))


def find_exact_copies(store: GraphStore, rule: KeeperRule = DEFAULT_RULE) -> list[DuplicateGroup]:
    """The store's groups of images with the same content (see :func:`group_exact`); no model, no links."""
    contents = list(store.same_content_groups())
    facts = store.get_many(sorted({path for paths in contents for path in paths}))
    return group_exact(contents, facts, rule)


def stored_unit_vectors(store: GraphStore, images: Sequence[StoredImage]) -> dict[str, np.ndarray]:
    """The images' stored embeddings as unit vectors, by path (one read by content hash)."""
    recorded = store.recorded_model()
    if recorded is None:
        return {}
    stored = store.embeddings_by_hash({image.sha256 for image in images}, recorded[0])
    unit: dict[str, np.ndarray] = {}
    for image in images:
        if image.sha256 in stored:
            vector = np.asarray(stored[image.sha256].vector, dtype=np.float32)
            norm = float(np.linalg.norm(vector))
            if norm > 0:
                unit[image.path] = vector / norm
    return unit


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
    """Groups as plain data: ``{"keep", "reason", "exact", "strongest", "weakest", "images": [{path,
    width, height, size, keep, score, same_file}]}``, ``score`` being the image's cosine against the
    keeper and ``same_file`` the other paths of that file (links)."""
    return [
        {
            "keep": group.keep,
            "reason": group.reason,
            "exact": group.exact,
            "strongest": round(group.strongest, 6),
            "weakest": round(group.weakest, 6),
            "decision": decision_json(group),
            "images": [
                {"path": image.path, "width": image.width, "height": image.height, "size": image.size,
                 "keep": image.path == group.keep, "score": round(score, 6),
                 "same_file": list(group.same_file.get(image.path, ()))}
                for image, score in zip(group.images, group.scores, strict=True)
            ],
        }
        for group in groups
    ]


def decision_json(group: DuplicateGroup) -> dict[str, object] | None:
    """``{"kind", "keep" (the path kept, for "keep"), "decided_at" (epoch seconds), "decided" (it holds
    every image), "new" (paths it does not hold)}``, or None."""
    decision = group.decision
    if decision is None:
        return None
    return {"kind": decision.kind, "keep": group.keep if decision.kind == "keep" else None,
            "decided_at": decision.decided_at, "decided": group.decided, "new": list(group.new)}


def decision_line(group: DuplicateGroup) -> str | None:
    """One line on the group's decision for a person, or None."""
    decision = group.decision
    if decision is None:
        return None
    kept = next((image.path for image in group.images if image.sha256 == decision.keep), None)
    said = ("not duplicates" if decision.kind == "not_duplicates"
            else f"keep {printable(kept)}" if kept is not None else "keep a copy no longer in this group")
    if group.decided:
        return f"decided on {decided_day(decision)}: {said}"
    return (f"earlier decision on {decided_day(decision)}: {said}; new since: "
            f"{', '.join(printable(path) for path in group.new)}")


def decided_day(decision: Decision) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(decision.decided_at))


def as_json_text(groups: Sequence[DuplicateGroup]) -> str:
    return json.dumps(as_json(groups), indent=2)


def as_csv(groups: Sequence[DuplicateGroup]) -> str:
    """One row per image: ``group,path,keep,width,height,size,score,reason,decision`` (group numbers
    from 1; the reason and the line on a decision about the group (decision_line) on the keeper's row).

    Paths are shown as the text output shows them (see printable), since CSV is read in
    terminals and spreadsheets too; JSON keeps them exact for programs."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for number, group in enumerate(groups, start=1):
        for image, score in zip(group.images, group.scores, strict=True):
            keep = image.path == group.keep
            writer.writerow([number, printable(image.path), "true" if keep else "false",
                             image.width, image.height, image.size, f"{score:.6f}", group.reason if keep else "",
                             (decision_line(group) or "") if keep else ""])
    return out.getvalue().rstrip("\n")


def as_text(groups: Sequence[DuplicateGroup], threshold: float | None, hidden: int = 0) -> str:
    """Groups for a person: the keeper marked ``* keep`` with why, each image's dimensions, size and
    (look-alike groups) its cosine against the keeper; a decision about the group under its first line.
    ``threshold`` None: exact copies. ``hidden``: how many decided groups are left out."""
    what = "exact copies" if threshold is None else f"duplicates at ≥ {threshold:g}"
    hidden_note = (f" ({hidden} decided group{'s' if hidden != 1 else ''} hidden: --all shows them)"
                   if hidden else "")
    if not groups:
        return f"no {what}{hidden_note}"
    dimensions = {image.path: f"{image.width}x{image.height}" for group in groups for image in group.images}
    sizes = {image.path: human_size(image.size) for group in groups for image in group.images}
    dimensions_width = max(map(len, dimensions.values()))
    size_width = max(map(len, sizes.values()))
    lines = []
    for number, group in enumerate(groups, start=1):
        kind = "exact copies" if group.exact else "images"
        lines.append(f"group {number}: {len(group.images)} {kind}, keep: {group.reason}")
        decision = decision_line(group)
        lines += [f"        {decision}"] if decision else []
        for image, score in zip(group.images, group.scores, strict=True):
            keep = image.path == group.keep
            shown = "" if group.exact else ("        " if keep else f"  {score:.4f}")
            lines.append(f"{'* keep' if keep else '      '}  {dimensions[image.path]:>{dimensions_width}}"
                         f"  {sizes[image.path]:>{size_width}}{shown}  {printable(image.path)}")
            lines += [f"        = {printable(other)} (the same file)" for other in group.same_file.get(image.path, ())]
        lines.append("")
    images = sum(len(group.images) for group in groups)
    lines.append(f"{len(groups)} group{'s' if len(groups) != 1 else ''} of {what}: "
                 f"{images} images, {images - len(groups)} besides the ones to keep (nothing was deleted)"
                 f"{hidden_note}")
    return "\n".join(lines)


