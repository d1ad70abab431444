"""The linking rule with plain numbers: no store, no vectors (the contract suite covers the backends)."""

from __future__ import annotations

import pytest

from imgwatch.store.linking import (
    SCORE_EPSILON,
    FormerLink,
    LinkPlan,
    choose,
    ordered,
    pick_bar,
    plan_links,
    relinked,
)


def test_choose_keeps_the_best_top_k_at_or_above_the_threshold_ties_by_key() -> None:
    candidates = [("d", 0.79), ("c", 0.9), ("b", 0.95), ("a", 0.9), ("e", 0.8)]
    assert choose(candidates, threshold=0.8, top_k=3) == [("b", 0.95), ("a", 0.9), ("c", 0.9)]
    assert choose(candidates, threshold=0.8, top_k=10) == [("b", 0.95), ("a", 0.9), ("c", 0.9), ("e", 0.8)]
    assert choose(candidates, threshold=0.8, top_k=0) == []


def test_choose_counts_a_neighbour_once_at_its_best_score() -> None:
    assert choose([(7, 0.85), (7, 0.9), (3, 0.86)], threshold=0.8, top_k=2) == [(7, 0.9), (3, 0.86)]


def test_a_score_a_hair_below_the_threshold_is_not_picked() -> None:
    assert choose([("a", 0.8 - 1e-7)], threshold=0.8, top_k=5) == []


def test_pick_bar_is_the_last_pick_when_full_else_the_threshold() -> None:
    assert pick_bar([("a", 0.95), ("b", 0.9)], threshold=0.8, top_k=2) == 0.9
    assert pick_bar([("a", 0.95)], threshold=0.8, top_k=2) == 0.8
    assert pick_bar([], threshold=0.8, top_k=2) == 0.8


def test_plan_links_each_image_to_its_picks_once_per_pair() -> None:
    plan = plan_links(
        {1: [(2, 0.9), (3, 0.85), (4, 0.5)], 2: [(1, 0.9), (3, 0.7)]},
        former=[],
        threshold=0.8,
        top_k=2,
    )
    assert plan.links == {(1, 2): 0.9, (1, 3): 0.85}
    assert plan.pick_bars == {1: 0.85, 2: 0.8}
    assert plan.undecided == {}


def test_a_former_neighbour_keeps_its_link_when_the_new_score_meets_its_bar() -> None:
    former = [
        FormerLink(neighbour=10, image=1, neighbour_bar=0.9, score=0.9 - SCORE_EPSILON / 2),  # rounding noise
        FormerLink(neighbour=11, image=1, neighbour_bar=0.9, score=0.85),  # above threshold, below bar
        FormerLink(neighbour=12, image=1, neighbour_bar=0.9, score=0.7),  # below threshold: gone
        FormerLink(neighbour=13, image=1, neighbour_bar=None, score=0.81),  # no bar: kept if pickable at all
    ]
    plan = plan_links({1: []}, former, threshold=0.8, top_k=3)
    assert plan.links == {(1, 10): pytest.approx(0.9, abs=1e-6), (1, 13): 0.81}
    assert plan.undecided == {11: {1}}


def test_a_former_link_below_the_threshold_never_survives_even_with_a_low_bar() -> None:
    plan = plan_links({1: []}, [FormerLink(neighbour=9, image=1, neighbour_bar=-1.0, score=0.8 - 1e-7)],
                      threshold=0.8, top_k=3)
    assert plan.links == {} and plan.undecided == {}


def test_settle_keeps_undecided_links_the_neighbour_still_picks() -> None:
    plan: LinkPlan[str] = plan_links(
        {"a": [], "b": []},
        [FormerLink("x", "a", 0.95, 0.85), FormerLink("x", "b", 0.95, 0.82)],
        threshold=0.8,
        top_k=1,
    )
    assert plan.undecided == {"x": {"a", "b"}}
    fresh = {"x": choose([("a", 0.85), ("b", 0.82), ("z", 0.84)], threshold=0.8, top_k=1)}
    plan.settle(fresh)
    assert plan.links == {("a", "x"): 0.85}
    assert plan.undecided == {}


def test_the_batch_s_own_pick_wins_over_a_former_link_for_the_same_pair() -> None:
    plan = plan_links({1: [(9, 0.93)]}, [FormerLink(neighbour=9, image=1, neighbour_bar=0.99, score=0.93)],
                      threshold=0.8, top_k=1)
    assert plan.links == {(1, 9): 0.93} and plan.undecided == {}


def test_top_k_zero_plans_nothing_and_leaves_bars_alone() -> None:
    plan = plan_links({1: [(2, 0.99)]}, [FormerLink(2, 1, 0.5, 0.99)], threshold=0.8, top_k=0)
    assert plan.links == {} and plan.pick_bars == {} and plan.undecided == {}


def test_ordered_gives_one_canonical_order_per_pair() -> None:
    assert ordered("b", "a") == ordered("a", "b") == ("a", "b")
    assert ordered(5, 2) == (2, 5)


# -- relinked: a whole graph brought up to date (switch_space's catch-up) ------------------------


def test_relinked_drops_the_gone_and_links_the_changed_again_keeping_what_neighbours_still_pick() -> None:
    # 1-2, 1-3 and 4-5 linked; 2 changed (still close to 1, now close to 4 too), 5 gone.
    plan: LinkPlan[int] = LinkPlan({(1, 2): 0.9, (1, 3): 0.85, (4, 5): 0.95}, {1: 0.85, 2: 0.8, 3: 0.8, 4: 0.8, 5: 0.8})
    searched: list[list[int]] = []

    def candidates(keys: list[int]) -> dict[int, list[tuple[int, float]]]:
        searched.append(keys)
        return {2: [(4, 0.92), (1, 0.81)]}

    relinked(plan, changed={2}, gone={5}, candidates=candidates, scores=lambda pairs: [0.81] * len(pairs),
             threshold=0.8, top_k=5)

    assert plan.links == {(1, 2): 0.81, (1, 3): 0.85, (2, 4): 0.92}
    assert plan.pick_bars == {1: 0.85, 2: 0.8, 3: 0.8, 4: 0.8}
    assert searched == [[2]]


def test_relinked_asks_a_neighbour_again_when_the_changed_image_fell_below_its_bar() -> None:
    # 1 picked 2 (its bar 0.9, full at top_k 1); 2 changed and now scores 0.85 with 1: only 1's fresh
    # search can tell, and it finds something better.
    plan: LinkPlan[int] = LinkPlan({(1, 2): 0.95, (1, 3): 0.9}, {1: 0.9, 2: 0.9, 3: 0.9})

    def candidates(keys: list[int]) -> dict[int, list[tuple[int, float]]]:
        return {2: []} if keys == [2] else {1: [(3, 0.9), (2, 0.85)]}

    relinked(plan, changed={2}, gone=set(), candidates=candidates, scores=lambda pairs: [0.85],
             threshold=0.8, top_k=1)

    assert plan.links == {(1, 3): 0.9}
