"""The in-memory index stays exact through adds, replacements, removals and growth."""

from __future__ import annotations

from collections.abc import Set

import numpy as np
import pytest

from imgwatch.store.embedded.vectors import VectorIndex
from tests.helpers import random_unit_vectors

DIM = 32


class Reference:
    """Brute force over a plain dict, in float64: what the index must agree with."""

    def __init__(self) -> None:
        self.vectors: dict[int, np.ndarray] = {}

    def top_k(
        self, query: np.ndarray, k: int, exclude: Set[int] = frozenset()
    ) -> tuple[list[int], np.ndarray]:
        ids = [i for i in self.vectors if i not in exclude]
        if not ids:
            return [], np.empty(0)
        scores = np.stack([self.vectors[i] for i in ids]).astype(np.float64) @ query.astype(np.float64)
        order = np.argsort(-scores, kind="stable")[:k]
        return [ids[j] for j in order], scores[order]


def assert_exact(
    index: VectorIndex, reference: Reference, queries: np.ndarray, k: int, exclude: Set[int] = frozenset()
) -> None:
    assert len(index) == len(reference.vectors)
    assert set(index.ids().tolist()) == set(reference.vectors)
    for query in queries:
        ids, scores = index.search(query, k, exclude)
        expected_ids, expected_scores = reference.top_k(query, k, exclude)
        assert ids.tolist() == expected_ids  # random data: no ties to blur the order
        np.testing.assert_allclose(scores, expected_scores, atol=1e-5)


def test_add_replace_remove_and_grow_stay_exact() -> None:
    index, reference = VectorIndex(DIM, initial_capacity=4), Reference()
    vectors = random_unit_vectors(900, DIM, seed=1)
    queries = random_unit_vectors(20, DIM, seed=2)

    index.upsert(np.arange(500), vectors[:500])  # grows 4 → 512
    reference.vectors.update(enumerate(vectors[:500]))
    assert index.capacity == 512
    assert_exact(index, reference, queries, k=10)

    replaced = np.arange(0, 500, 5)  # replace every fifth vector in place
    index.upsert(replaced, vectors[500:600])
    reference.vectors.update(zip(replaced.tolist(), vectors[500:600], strict=True))
    assert len(index) == 500
    assert_exact(index, reference, queries, k=10)

    removed = [499, 0, 250, *range(100, 150), 12345]  # last row, first row, middle, a run, unknown
    assert index.remove(removed) == 53
    for vector_id in removed:
        reference.vectors.pop(vector_id, None)
    assert_exact(index, reference, queries, k=10)

    index.upsert(np.arange(1000, 1300), vectors[600:900])  # grows again past 512
    reference.vectors.update(zip(range(1000, 1300), vectors[600:900], strict=True))
    assert index.capacity == 1024
    assert_exact(index, reference, queries, k=25)
    assert_exact(index, reference, queries, k=5, exclude={1000, 1001, 3, 7})
    # Each stored vector finds itself first, with cosine 1.
    for vector_id in [1, 1299, 251]:
        ids, scores = index.search(reference.vectors[vector_id], 1)
        assert ids.tolist() == [vector_id] and scores[0] == pytest.approx(1.0, abs=1e-6)


def test_search_many_matches_single_searches_and_excludes_per_query() -> None:
    index = VectorIndex(DIM)
    vectors = random_unit_vectors(300, DIM, seed=3)
    index.upsert(np.arange(300), vectors)
    queries = vectors[:8]

    batched = index.search_many(queries, 6, [{i} for i in range(8)])

    for i, (ids, scores) in enumerate(batched):
        single_ids, single_scores = index.search(queries[i], 6, {i})
        assert i not in ids.tolist()
        assert ids.tolist() == single_ids.tolist()
        np.testing.assert_allclose(scores, single_scores, atol=1e-6)


def test_k_larger_than_the_index_returns_everything_best_first() -> None:
    index = VectorIndex(DIM)
    vectors = random_unit_vectors(5, DIM, seed=4)
    index.upsert([10, 20, 30, 40, 50], vectors)

    ids, scores = index.search(vectors[2], 100, exclude_ids=[20])

    assert sorted(ids.tolist()) == [10, 30, 40, 50]
    assert ids[0] == 30 and np.all(np.diff(scores) <= 0)
    assert index.search(vectors[0], 0)[0].size == 0
    assert VectorIndex(DIM).search(vectors[0], 3)[0].size == 0


def test_duplicate_ids_in_one_upsert_keep_the_last_vector() -> None:
    index = VectorIndex(DIM)
    vectors = random_unit_vectors(3, DIM, seed=5)

    index.upsert([7, 8, 7], vectors)

    assert len(index) == 2
    np.testing.assert_array_equal(index.vectors([7, 8]), vectors[[2, 1]])


def test_removing_everything_then_adding_again_works() -> None:
    index = VectorIndex(DIM, initial_capacity=2)
    vectors = random_unit_vectors(6, DIM, seed=6)
    index.upsert(range(3), vectors[:3])
    assert index.remove(range(3)) == 3
    assert len(index) == 0 and index.search(vectors[0], 3)[0].size == 0

    index.upsert([3, 4, 5], vectors[3:])

    ids, _ = index.search(vectors[4], 1)
    assert ids.tolist() == [4]
