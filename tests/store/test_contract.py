"""Behaviour every GraphStore backend must share, run against each backend (``backend_store``).

The scenarios the Neo4j stand-in runs too live in contract_cases.py; the rest are here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from imgwatch.store import GraphStore, ImageNotFound, StoreError
from tests.helpers import DIM, angled, axis, make_record
from tests.store import contract_cases
from tests.store.contract_cases import SCORE_TOLERANCE, paths_and_scores


@pytest.mark.parametrize("scenario", contract_cases.SCENARIOS, ids=lambda scenario: scenario.__name__)
def test_contract_scenario_holds(scenario: Callable[[GraphStore], None], backend_store: GraphStore) -> None:
    scenario(backend_store)


def test_links_at_least_pages_through_ties_without_losing_or_repeating_a_link(
        backend_store: GraphStore, monkeypatch: pytest.MonkeyPatch) -> None:
    contract_cases.links_at_least_pages_through_ties_without_losing_or_repeating_a_link(backend_store, monkeypatch)


def test_nearest_ranks_the_exact_match_first_and_returns_raw_cosines(backend_store: GraphStore) -> None:
    backend_store.upsert([
        make_record("/p/half.jpg", angled(0.5, 2)),
        make_record("/p/exact.jpg", axis(0)),
        make_record("/p/opposite-ish.jpg", angled(-0.3, 3)),
        make_record("/p/close.jpg", angled(0.8, 1)),
    ])

    matches = backend_store.nearest(axis(0), 10)

    assert paths_and_scores(matches) == [
        ("/p/exact.jpg", 1.0), ("/p/close.jpg", 0.8), ("/p/half.jpg", 0.5), ("/p/opposite-ish.jpg", -0.3)
    ]
    # Cosines between two stored vectors are predictable too: 0.8 · 0.5.
    from_close = dict(paths_and_scores(backend_store.nearest(angled(0.8, 1), 4)))
    assert from_close == {
        "/p/close.jpg": 1.0, "/p/exact.jpg": 0.8, "/p/half.jpg": 0.4, "/p/opposite-ish.jpg": -0.24
    }


def test_nearest_limits_to_k_and_skips_excluded_paths(backend_store: GraphStore) -> None:
    backend_store.upsert([make_record(f"/p/{i}.jpg", angled(1.0 - i / 10, 1 + i % 5)) for i in range(6)])

    assert [m.path for m in backend_store.nearest(axis(0), 2)] == ["/p/0.jpg", "/p/1.jpg"]
    assert [m.path for m in backend_store.nearest(axis(0), 3, exclude=["/p/0.jpg", "/p/2.jpg", "/p/nope.jpg"])] == [
        "/p/1.jpg", "/p/3.jpg", "/p/4.jpg"
    ]
    assert backend_store.nearest(axis(0), 0) == []


def test_nearest_on_an_empty_store_finds_nothing(backend_store: GraphStore) -> None:
    assert backend_store.nearest(axis(0), 5) == []


def test_neighbours_of_a_missing_path_raises_image_not_found(backend_store: GraphStore) -> None:
    with pytest.raises(ImageNotFound) as raised:
        backend_store.neighbours("/p/never.jpg")
    assert raised.value.path == "/p/never.jpg"


@pytest.mark.parametrize(
    "embedding",
    [
        pytest.param(np.ones(DIM + 1, dtype=np.float32) / math.sqrt(DIM + 1), id="wrong-dim"),
        pytest.param(np.ones((1, DIM), dtype=np.float32) / math.sqrt(DIM), id="wrong-shape"),
        pytest.param(np.full(DIM, np.nan, dtype=np.float32), id="nan"),
        pytest.param(np.where(np.arange(DIM) == 0, np.inf, 0).astype(np.float32), id="inf"),
        pytest.param(np.full(DIM, 1.0, dtype=np.float32), id="not-normalised"),
        pytest.param(np.zeros(DIM, dtype=np.float32), id="zero"),
    ],
)
def test_bad_embeddings_are_refused_and_nothing_is_written(backend_store: GraphStore, embedding: np.ndarray) -> None:
    good = make_record("/p/good.jpg", axis(0))

    with pytest.raises(StoreError):
        backend_store.upsert([good, make_record("/p/bad.jpg", embedding)])

    assert backend_store.stats().images == 0  # the batch is all or nothing


def test_float64_embeddings_are_stored_as_float32(backend_store: GraphStore) -> None:
    backend_store.upsert([make_record("/p/a.jpg", angled(0.6, 1).astype(np.float64))])
    assert backend_store.nearest(axis(0), 1)[0].score == pytest.approx(0.6, abs=SCORE_TOLERANCE)
