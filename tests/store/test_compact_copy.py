"""Links through the int8 copy are the exact path's, and the copy stays in step with the store.

Two real stores get the same operations: one links through the copy (its size threshold
lowered), the other always scans the float32 vectors. After every step their links must
be the same: re-embedded images, removals, moves, another store object writing, a model
switch (which must rebuild the copy even at the same dimension).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from imgwatch.store import EmbeddedGraphStore, ImageRecord
from imgwatch.store.embedded import spaces
from tests.helpers import MODEL, clustered_unit_vectors, make_record

DIM = 64
COPY_FROM = 300  # live images from which the first store links through its copy
THRESHOLD, TOP_K = 0.8, 5
NEW_MODEL = "test-model/v2"


def vectors(count: int, seed: int) -> np.ndarray:
    return clustered_unit_vectors(count, seed, topics=15, dim=DIM, centre_seed=7)


def records(vectors: np.ndarray, first: int, model: str = MODEL) -> list[ImageRecord]:
    return [make_record(f"/photos/{first + i:05d}.jpg", vector, model=model) for i, vector in enumerate(vectors)]


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA GPU here: the copy on the GPU is not run"))])
def pair(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[EmbeddedGraphStore, EmbeddedGraphStore]]:
    """(through the copy, exact), both with MODEL recorded; the copy on the CPU, or a GPU as a GPU worker holds it."""
    through_copy = EmbeddedGraphStore(tmp_path / "copy.sqlite3", compact_min_images=COPY_FROM,
                                      link_device=request.param)
    exact = EmbeddedGraphStore(tmp_path / "exact.sqlite3", compact_min_images=10**9)
    for store in (through_copy, exact):
        store.ensure_model(MODEL, DIM)
    try:
        yield through_copy, exact
    finally:
        through_copy.close()
        exact.close()


def on_both(pair: tuple[EmbeddedGraphStore, ...], batch: list[ImageRecord]) -> None:
    for store in pair:
        store.upsert(batch)
        store.link(batch, THRESHOLD, TOP_K)


def links(store: EmbeddedGraphStore) -> dict[tuple[str, str], float]:
    return {(link.a, link.b): link.score for link in store.links_at_least(0.0)}


def assert_same_links(through_copy: EmbeddedGraphStore, exact: EmbeddedGraphStore) -> None:
    got, expected = links(through_copy), links(exact)
    assert got.keys() == expected.keys()
    for pair, score in expected.items():
        assert got[pair] == pytest.approx(score, abs=1e-5)


def test_links_through_the_copy_are_the_exact_paths_as_the_library_changes(
    pair: tuple[EmbeddedGraphStore, EmbeddedGraphStore], tmp_path: Path
) -> None:
    through_copy, exact = pair
    library = records(vectors(1200, seed=1), 0)
    for start in range(0, len(library), 100):
        on_both(pair, library[start : start + 100])
    assert through_copy.compact.builds == 1 and exact.compact.builds == 0
    assert through_copy.compact.nbytes >= 1200 * (DIM + 4) and exact.compact.nbytes == 0  # int8 codes + a scale
    assert len(links(exact)) > 500  # dense enough that a wrong candidate set would show
    assert_same_links(through_copy, exact)

    # Re-embedded: 40 images now look like another topic; their old rows must not be scanned.
    changed = [make_record(r.path, v) for r, v in zip(library[:40], vectors(40, seed=2), strict=True)]
    on_both(pair, changed)
    assert_same_links(through_copy, exact)

    # Removed, then new photos linked: the removed never come back as neighbours.
    removed = [r.path for r in library[40:120]]
    for store in pair:
        store.remove(removed)
    on_both(pair, records(vectors(100, seed=3), 2000))
    assert not {path for link in links(through_copy) for path in link} & set(removed)
    assert_same_links(through_copy, exact)

    # Moved: the same ids under new paths, then linked again along with new ones.
    moves = [(r.path, r.path.replace("/photos/", "/moved/")) for r in library[200:230]]
    for store in pair:
        assert store.rename_paths(moves) == 30
    moved = [make_record(new, r.embedding, sha256=r.sha256) for (_, new), r in zip(moves, library[200:230],
                                                                                      strict=True)]
    on_both(pair, moved + records(vectors(50, seed=4), 3000))
    assert_same_links(through_copy, exact)

    # Another store object (as another worker process would) writes; this one then links.
    with EmbeddedGraphStore(through_copy.db_path) as other:
        other.upsert(records(vectors(150, seed=5), 4000))
    exact.upsert(records(vectors(150, seed=5), 4000))
    on_both(pair, records(vectors(60, seed=6), 5000))
    assert_same_links(through_copy, exact)
    assert through_copy.compact.builds == 1  # kept in step all along, never rebuilt


def test_a_model_switch_rebuilds_the_copy_even_at_the_same_dimension(
    pair: tuple[EmbeddedGraphStore, EmbeddedGraphStore],
) -> None:
    through_copy, exact = pair
    library = records(vectors(600, seed=1), 0)
    for start in range(0, len(library), 200):
        on_both(pair, library[start : start + 200])
    assert through_copy.compact.builds == 1

    # The new model maps each photo elsewhere: same dim, other vectors.
    remapped = vectors(600, seed=9)
    for store in pair:
        store.begin_space(NEW_MODEL, DIM)
        store.put_pending([(r.path, r.sha256, v) for r, v in zip(library, remapped, strict=True)])
        store.switch_space(THRESHOLD, TOP_K)
    on_both(pair, records(vectors(100, seed=10), 7000, model=NEW_MODEL))
    assert through_copy.compact.builds == 2
    assert_same_links(through_copy, exact)


def test_photos_written_while_the_new_space_is_linked_are_found_through_its_copy(
    pair: tuple[EmbeddedGraphStore, EmbeddedGraphStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """switch_space links the new space through an int8 copy of the pending vectors, outside the
    write lock; two alike photos another process writes meanwhile must find each other."""
    through_copy, _ = pair
    library = records(vectors(400, seed=1), 0)
    through_copy.upsert(library)
    through_copy.begin_space(NEW_MODEL, DIM)
    remapped = vectors(400, seed=9)
    through_copy.put_pending([(r.path, r.sha256, v) for r, v in zip(library, remapped, strict=True)])
    twin = -remapped[0]  # unlike the whole (non-negative) library
    late = [dataclasses.replace(make_record(f"/late/{i}.jpg", vector), pending_embedding=twin)
            for i, vector in enumerate(vectors(2, seed=11))]
    compute_links = spaces.compute_links

    def computed_while_another_process_writes(*args: object, **kwargs: object) -> spaces.SpaceLinks:
        result = compute_links(*args, **kwargs)  # type: ignore[arg-type]
        assert result.copy is not None
        with EmbeddedGraphStore(through_copy.db_path) as other:
            other.upsert(late)
        return result

    monkeypatch.setattr(spaces, "compute_links", computed_while_another_process_writes)
    through_copy.switch_space(THRESHOLD, TOP_K)
    assert [m.path for m in through_copy.neighbours("/late/0.jpg")] == ["/late/1.jpg"]
