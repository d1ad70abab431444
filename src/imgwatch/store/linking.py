"""The linking rule: which SIMILAR_TO links a batch of (re-)embedded images gets.

It defines the product's graph, so it lives here once, as pure functions over keys
(the embedded store's integer ids, Neo4j's paths). A backend supplies each image's
candidates and the batch's former links, writes the resulting :class:`LinkPlan`,
and answers the plan's rare follow-up question (``undecided``) with fresh searches.

The rule:

- Each image *picks* its best ``top_k`` neighbours with cosine >= ``threshold``
  (ties by key). Its *pick bar* is its ``top_k``-th pick's score, or the threshold
  when it picked fewer: a neighbour scoring at least the bar would be picked again.
- A link exists while either end picks the other, so a popular image can have more
  than ``top_k`` links.
- When an image is re-linked, a link from a *former neighbour* (outside the batch)
  stays when that neighbour would still pick the image: the new score reaches the
  neighbour's recorded bar. A score above the threshold but below that bar is
  *undecided*: only a fresh search for the neighbour tells whether it still picks
  the image (rare: the image changed a lot). One dot product per former link
  usually decides, instead of a search per neighbour.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

# Scores are recomputed from the same float32 vectors, in another summation order than
# when a bar was recorded: compare with a bar allowing for that noise.
SCORE_EPSILON = 1e-6


class _Key(Hashable, Protocol):
    def __lt__(self, other: _Key, /) -> bool: ...


K = TypeVar("K", bound=_Key)

Candidate = tuple[K, float]  # (neighbour key, raw cosine)


def ordered(one: K, other: K) -> tuple[K, K]:
    """An undirected pair in its canonical (stored) order."""
    return (one, other) if one < other else (other, one)


def choose(candidates: Iterable[Candidate[K]], threshold: float, top_k: int) -> list[Candidate[K]]:
    """An image's picks among ``candidates``: best first, cosine >= threshold, at most top_k.

    ``candidates`` may hold more than needed, scores below the threshold, or a
    neighbour twice (the higher score counts); equal scores are ordered by key.
    """
    if top_k <= 0:
        return []
    best: dict[K, float] = {}
    for key, score in candidates:
        if score >= threshold and score > best.get(key, -2.0):
            best[key] = score
    return sorted(best.items(), key=lambda item: (-item[1], item[0]))[:top_k]


def pick_bar(picks: Sequence[Candidate[K]], threshold: float, top_k: int) -> float:
    """The score a neighbour needs to be picked again by an image that picked ``picks``."""
    return picks[-1][1] if picks and len(picks) >= top_k else threshold


@dataclass(frozen=True)
class FormerLink(Generic[K]):
    """A link from ``neighbour`` (outside the batch) to ``image`` (in it), re-scored now."""

    neighbour: K
    image: K
    neighbour_bar: float | None  # None: the neighbour never recorded one (keep if it would pick at all)
    score: float


@dataclass
class LinkPlan(Generic[K]):
    """What to write for a batch: links (ordered pair -> cosine) and each image's pick bar."""

    links: dict[tuple[K, K], float] = field(default_factory=dict)
    pick_bars: dict[K, float] = field(default_factory=dict)
    # Former neighbour -> batch images it may still pick: resolve with settle().
    undecided: dict[K, set[K]] = field(default_factory=dict)

    def settle(self, fresh_picks: Mapping[K, Sequence[Candidate[K]]]) -> None:
        """Keep an undecided link when the neighbour's fresh picks (from ``choose``) include it."""
        for neighbour, images in self.undecided.items():
            for image, score in fresh_picks.get(neighbour, ()):
                if image in images:
                    self.links.setdefault(ordered(neighbour, image), score)
        self.undecided = {}


def plan_links(
    candidates: Mapping[K, Iterable[Candidate[K]]],
    former: Iterable[FormerLink[K]],
    threshold: float,
    top_k: int,
) -> LinkPlan[K]:
    """The links and pick bars for a batch whose images have ``candidates`` (key -> candidates).

    ``candidates`` must cover every batch image (an empty list when it has none) and
    exclude the image itself; ``former`` holds the batch's links to images outside it.
    If the plan has ``undecided`` entries, the caller searches for each such
    neighbour, passes ``choose(...)`` of the results to :meth:`LinkPlan.settle`, then writes.
    """
    plan: LinkPlan[K] = LinkPlan()
    if top_k <= 0:
        return plan  # nothing picks anything; callers keep the recorded bars
    for image, image_candidates in candidates.items():
        picks = choose(image_candidates, threshold, top_k)
        plan.pick_bars[image] = pick_bar(picks, threshold, top_k)
        for neighbour, score in picks:
            plan.links[ordered(image, neighbour)] = score
    for link in former:
        pair = ordered(link.neighbour, link.image)
        if link.score < threshold or pair in plan.links:
            continue  # gone for good, or re-picked by the batch image itself
        bar = link.neighbour_bar
        if bar is None or link.score >= bar - SCORE_EPSILON:
            plan.links[pair] = link.score
        else:
            plan.undecided.setdefault(link.neighbour, set()).add(link.image)
    return plan


def relinked(
    plan: LinkPlan[K],
    changed: set[K],
    gone: set[K],
    candidates: Callable[[list[K]], Mapping[K, Iterable[Candidate[K]]]],
    scores: Callable[[list[tuple[K, K]]], list[float]],
    threshold: float,
    top_k: int,
) -> None:
    """Bring a whole graph's ``plan`` up to date, in place, after its images ``changed`` (new or
    re-embedded) or are ``gone``: as if each changed image were linked again (former links and
    pick bars count) and each gone one removed (its links go, nobody picks again).

    ``candidates(keys)``: each key's candidates (itself excluded), as :func:`plan_links` takes them;
    ``scores(pairs)``: the cosine of each (neighbour, image) pair as the vectors are now.
    """
    former: list[tuple[K, K]] = []  # (neighbour outside the changed images, changed image)
    for pair in [pair for pair in plan.links if gone.intersection(pair) or changed.intersection(pair)]:
        del plan.links[pair]
        for image, neighbour in (pair, pair[::-1]):
            if image in changed and neighbour not in changed and neighbour not in gone:
                former.append((neighbour, image))
    for image in gone:
        plan.pick_bars.pop(image, None)
    if not changed or top_k <= 0:
        return
    again = plan_links(
        candidates(sorted(changed)),
        [FormerLink(neighbour, image, plan.pick_bars.get(neighbour), score)
         for (neighbour, image), score in zip(former, scores(former) if former else [], strict=True)],
        threshold, top_k,
    )
    if again.undecided:
        fresh = candidates(sorted(again.undecided))
        again.settle({key: choose(found, threshold, top_k) for key, found in fresh.items()})
    plan.links.update(again.links)
    plan.pick_bars.update(again.pick_bars)
