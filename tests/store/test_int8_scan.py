"""The int8 scan proposes every row of the exact answer: near-ties, floors, exclusions, dead slots, steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imgwatch.store.embedded import int8_scan
from imgwatch.store.embedded.int8_scan import Int8Rows
from imgwatch.store.embedded.vectors import SlotVectors
from tests.helpers import clustered_unit_vectors, random_unit_vectors

DIM = 128
_NO_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here: the copy on the GPU is not run")


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=_NO_GPU)])
def device(request: pytest.FixtureRequest) -> str:
    """Where the copy lives: a GPU worker holds it on its GPU."""
    return str(request.param)


def near_ties(count: int, seed: int) -> np.ndarray:
    """One direction plus noise far below an int8 step: the copy cannot tell these rows apart."""
    rng = np.random.default_rng(seed)
    base = random_unit_vectors(1, DIM, seed=seed)[0]
    rows = base + 2e-4 * rng.standard_normal((count, DIM), dtype=np.float32)
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def library() -> tuple[np.ndarray, np.ndarray]:
    """Clustered photo-like rows, 300 near-ties and a block of dead slots; their live flags."""
    matrix = np.concatenate([clustered_unit_vectors(1500, seed=3, topics=12, dim=DIM), near_ties(300, seed=4)])
    live = np.ones(len(matrix), dtype=np.uint8)
    live[[0, 7, *range(200, 260), 1700]] = 0
    return matrix, live


def through_copy(matrix: np.ndarray, live: np.ndarray, device: str = "cpu") -> SlotVectors:
    rows = Int8Rows(DIM, device)
    rows.set_range(0, len(matrix), matrix)
    return rows.searching(SlotVectors(matrix, live))


def queries_for(matrix: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(5)
    picked = matrix[[3, 40, 900, 1499, 1600, 1650, 1799]] + 0.02 * rng.standard_normal((7, DIM), dtype=np.float32)
    far = random_unit_vectors(3, DIM, seed=6)  # unlike the library: its answer lies in the bulk
    queries = np.concatenate([picked, far])
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def assert_same_answers(got: list, expected: list, floor: float, matrix: np.ndarray, queries: np.ndarray) -> None:
    """The same top k at or above ``floor``, position by position; two ids may swap only where
    their exact (float64) scores are within float32 rounding of each other."""
    for query, (ids, scores), (want_ids, want_scores) in zip(queries, got, expected, strict=True):
        keep = int((want_scores >= floor).sum())
        assert len(ids) >= keep
        exact = matrix[ids[:keep]].astype(np.float64) @ query.astype(np.float64)
        want_exact = matrix[want_ids[:keep]].astype(np.float64) @ query.astype(np.float64)
        np.testing.assert_allclose(exact, want_exact, atol=1e-6)
        np.testing.assert_allclose(scores[:keep], want_scores[:keep], atol=1e-6)
        assert len(set(ids[:keep].tolist())) == keep
        swapped = ids[:keep] != want_ids[:keep]
        assert swapped.sum() <= 2 * (np.abs(np.diff(want_exact)) < 1e-6).sum()  # only near-ties swap


@pytest.mark.parametrize("floor", [-np.inf, 0.5, 0.9])
@pytest.mark.parametrize("k", [1, 10, 40])
def test_the_answer_through_the_copy_is_the_full_scans(k: int, floor: float, device: str) -> None:
    matrix, live = library()
    queries = queries_for(matrix)
    exclude = [{3}, {40, 41}, set(), {1499}, {1600}, set(), {1799}, set(), {5}, set()]
    expected = SlotVectors(matrix, live).candidates(queries, k, exclude, floor=floor)
    got = through_copy(matrix, live, device).candidates(queries, k, exclude, floor=floor)
    assert_same_answers(got, expected, floor, matrix, queries)
    for ids, _ in got:
        assert not set(ids.tolist()) & {0, 7, 200, 259, 1700}


def test_near_ties_the_copy_cannot_order_are_ordered_exactly(device: str) -> None:
    matrix, live = library()
    query = matrix[1650] + 1e-4
    query = (query / np.linalg.norm(query))[np.newaxis].astype(np.float32)
    expected = SlotVectors(matrix, live).candidates(query, 25)
    got = through_copy(matrix, live, device).candidates(query, 25)
    assert set(expected[0][0].tolist()) <= set(range(1500, 1800))  # the answer is all near-ties
    assert_same_answers(got, expected, -np.inf, matrix, query)


def test_without_its_error_bound_the_copy_would_miss_near_ties(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests above can fail: with the bound zeroed, the int8 order alone decides and is wrong."""
    matrix, live = library()
    monkeypatch.setattr(int8_scan, "ROUNDING_SLACK", 0.0)
    rows = Int8Rows(DIM)
    rows.set_range(0, len(matrix), matrix)
    rows.max_error = rows.max_norm = 0.0
    query = matrix[1650][np.newaxis]
    expected = SlotVectors(matrix, live).candidates(query, 25, [{1650}])
    got = rows.searching(SlotVectors(matrix, live)).candidates(query, 25, [{1650}])
    assert len(set(got[0][0].tolist()) & set(expected[0][0].tolist())) < 20  # not a mere swap of near-ties


def test_a_scan_in_several_steps_and_an_odd_batch_give_the_same_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    matrix, live = library()
    queries = queries_for(matrix)[:5]  # not a multiple of 8: the product's width is padded
    whole = through_copy(matrix, live).candidates(queries, 10, floor=0.3)
    monkeypatch.setattr(int8_scan, "MAX_SCORES_PER_STEP", 8 * 97)  # 97 rows a step, a short last one
    stepped = through_copy(matrix, live).candidates(queries, 10, floor=0.3)
    assert_same_answers(stepped, whole, 0.3, matrix, queries)
    assert_same_answers(whole, SlotVectors(matrix, live).candidates(queries, 10, floor=0.3), 0.3, matrix, queries)


def test_rows_set_again_are_found_by_their_new_vector_and_the_copy_grows() -> None:
    matrix, live = library()
    rows = Int8Rows(DIM)
    rows.set_range(0, 1000, matrix)
    grown = np.concatenate([matrix, random_unit_vectors(50, DIM, seed=8)])
    grown[10] = -grown[10]  # re-embedded: points the other way now
    grown_live = np.concatenate([live, np.ones(50, dtype=np.uint8)])
    rows.set_range(1000, len(grown), grown)
    rows.set_rows(np.array([10]), grown[10:11])
    assert rows.slots == len(grown)
    view = rows.searching(SlotVectors(grown, grown_live))
    for query in (grown[10], grown[len(grown) - 1]):
        [(ids, scores)] = view.candidates(query, 5)
        [(want_ids, want_scores)] = SlotVectors(grown, grown_live).candidates(query, 5)
        assert ids.tolist() == want_ids.tolist()
        assert scores[0] == pytest.approx(1.0, abs=1e-5)


def test_an_empty_copy_or_fewer_rows_than_k(device: str) -> None:
    matrix = random_unit_vectors(3, DIM, seed=9)  # on a GPU: fewer rows than its int8 kernel takes
    live = np.array([1, 0, 1], dtype=np.uint8)
    [(ids, _)] = through_copy(matrix, live, device).candidates(matrix[0], 10)
    assert ids.tolist() == [0, 2]
    assert through_copy(matrix, live, device).candidates(np.empty((0, DIM), np.float32), 10) == []  # no queries
    empty = Int8Rows(DIM, device)
    [(ids, _)] = empty.searching(SlotVectors(matrix, live)).candidates(matrix[0], 10)
    assert ids.tolist() == []
