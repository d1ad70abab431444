"""Exact search over slot-addressed vectors agrees with brute force, masks dead slots and exclusions."""

from __future__ import annotations

from collections.abc import Set

import numpy as np
import pytest

from imgwatch.store.embedded.vectors import Proposal, SlotVectors
from tests.helpers import random_unit_vectors

DIM = 32


def slot_vectors(count: int, dead: Set[int] = frozenset(), seed: int = 1) -> SlotVectors:
    matrix = random_unit_vectors(count, DIM, seed=seed)
    live = np.ones(count, dtype=np.uint8)
    live[list(dead)] = 0
    return SlotVectors(matrix, live)


def brute_force(
    vectors: SlotVectors, query: np.ndarray, k: int, exclude: Set[int] = frozenset()
) -> tuple[list[int], np.ndarray]:
    """In float64 over a plain list of the live, not excluded ids: what the search must agree with."""
    ids = [i for i in vectors.ids().tolist() if i not in exclude]
    scores = vectors.vectors(ids).astype(np.float64) @ query.astype(np.float64)
    order = np.argsort(-scores, kind="stable")[:k]
    return [ids[j] for j in order], scores[order]


def test_candidates_equal_brute_force_and_never_return_dead_or_excluded_slots() -> None:
    dead = {0, 5, 17, *range(100, 160), 899}  # slot 0 is never an image id
    vectors = slot_vectors(900, dead)
    queries = random_unit_vectors(20, DIM, seed=2)
    exclude = [{1, 2, 3, 5}, set(), {898}] * 6 + [set(), set()]

    for k in (1, 10, 25):
        for query, excluded, (ids, scores) in zip(queries, exclude, vectors.candidates(queries, k, exclude),
                                                  strict=True):
            expected_ids, expected_scores = brute_force(vectors, query, k, excluded)
            assert ids.tolist() == expected_ids  # random data: no ties to blur the order
            np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
    assert len(vectors) == 900 - len(dead) and 5 not in vectors and 6 in vectors


def test_one_query_and_a_batch_agree() -> None:
    vectors = slot_vectors(300, {7})
    queries = random_unit_vectors(8, DIM, seed=3)
    batched = vectors.candidates(queries, 6, [{i} for i in range(8)])
    for i, (ids, scores) in enumerate(batched):
        [(single_ids, single_scores)] = vectors.candidates(queries[i], 6, [{i}])
        assert i not in ids.tolist() and 7 not in ids.tolist()
        assert ids.tolist() == single_ids.tolist()
        np.testing.assert_allclose(scores, single_scores, atol=1e-6)


def test_k_larger_than_the_live_slots_returns_every_live_one_best_first() -> None:
    vectors = slot_vectors(6, {0, 4})
    query = vectors.vectors([2])[0]

    [(ids, scores)] = vectors.candidates(query, 100, [{3}])

    assert sorted(ids.tolist()) == [1, 2, 5] and ids[0] == 2 and np.all(np.diff(scores) <= 0)
    assert vectors.candidates(query, 0)[0][0].size == 0
    empty = SlotVectors(np.zeros((0, DIM), dtype=np.float32), np.zeros(0, dtype=np.uint8))
    assert empty.candidates(query, 3)[0][0].size == 0
    all_dead = SlotVectors(np.ones((3, DIM), dtype=np.float32), np.zeros(3, dtype=np.uint8))
    assert all_dead.candidates(query, 3)[0][0].size == 0


def test_equal_scores_come_in_id_order() -> None:
    matrix = np.zeros((6, DIM), dtype=np.float32)
    matrix[:, 0] = 1.0  # exactly equal scores in any summation order
    vectors = SlotVectors(matrix, np.array([0, 1, 1, 0, 1, 1], dtype=np.uint8))
    [(ids, _)] = vectors.candidates(matrix[0], 3)
    assert ids.tolist() == [1, 2, 4]


def test_vectors_of_a_dead_or_unknown_id_is_a_key_error() -> None:
    vectors = slot_vectors(4, {2})
    with pytest.raises(KeyError):
        vectors.vectors([1, 2])
    with pytest.raises(KeyError):
        vectors.vectors([4])
    np.testing.assert_array_equal(vectors.vectors([3, 1]), vectors.vectors([3, 1]))


def test_a_query_its_proposer_does_not_vouch_for_is_scanned_in_full() -> None:
    vectors = slot_vectors(500, {3, 9})
    queries = random_unit_vectors(4, DIM, seed=2)
    asked: list[float] = []

    def propose(batch: np.ndarray, k: int, exclude: object, floor: float) -> Proposal:
        # Too few, poor candidates; only the first query's answer is vouched for.
        def trusted(row: int, needed: float) -> bool:
            asked.append(needed)
            return bool(np.array_equal(batch[row], queries[0]))

        return Proposal([np.arange(10, 13)] * len(batch), np.empty(0, np.int64), trusted)

    proposed = vectors.proposed_by(propose)
    [best_of_third], _ = brute_force(vectors, queries[2], 1, set())
    excludes = [{11}, set(), {best_of_third}, set()]  # the scan must honour an exclusion that matters
    first, *rest = proposed.candidates(queries, 5, excludes)
    assert first[0].tolist() == [10, 12]  # the proposal's answer stands
    for query, exclude, (ids, scores) in zip(queries[1:], excludes[1:], rest, strict=True):
        expected_ids, expected_scores = brute_force(vectors, query, 5, exclude)
        assert ids.tolist() == expected_ids
        assert scores == pytest.approx(expected_scores, abs=1e-5)
    assert best_of_third not in rest[1][0].tolist()
    assert asked == [-np.inf] * 4  # fewer than k candidates: nothing vouches for the lowest needed score

    asked.clear()
    [(ids, scores)] = proposed.candidates(queries[0], 2)
    proposed.candidates(queries[0], 2, floor=0.99)
    assert asked == [float(scores[-1]), 0.99]  # the answer's lowest score, or the caller's floor above it
