"""The pending vector space (a re-index to a new model) on every backend: GraphStore.begin_space and the rest.

Run on the embedded store (a real SQLite file) and on Neo4j: a real server when
IMGWATCH_TEST_NEO4J_URI is set, else the stand-in (tests/store/neo4j_stand_in.py).
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from imgwatch.errors import ReindexConflict, ReindexIncomplete, StoreError
from imgwatch.store import EmbeddedGraphStore, GraphStore, ImageRecord, PendingSpace
from imgwatch.store.embedded import spaces
from imgwatch.store.embedded.shared_vectors import SWITCHED
from imgwatch.store.embedded.sqlite import SCHEMA_VERSION
from tests.helpers import DIM, MODEL, WEIGHTS_FILE, angled, axis, make_record, open_backend, random_unit_vectors
from tests.store.neo4j_stand_in import fake_store

NEW_MODEL = "test-model/v2"
NEW_DIM = 8
NEW_WEIGHTS = ("/models/v2.pt", "ab" * 32)
THRESHOLD, TOP_K = 0.8, 5


@pytest.fixture(params=["embedded", "neo4j"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GraphStore]:
    """An empty store of each backend with MODEL/DIM recorded (Neo4j: the stand-in without a test server)."""
    if request.param == "neo4j" and not os.environ.get("IMGWATCH_TEST_NEO4J_URI"):
        opened: GraphStore = fake_store()[0]
    else:
        opened = open_backend(request.param, tmp_path)
    try:
        opened.ensure_model(MODEL, DIM, WEIGHTS_FILE)
        yield opened
    finally:
        opened.close()


def new_axis(index: int) -> np.ndarray:
    return axis(index, NEW_DIM)


def new_angled(cosine: float, other_axis: int) -> np.ndarray:
    return angled(cosine, other_axis, NEW_DIM)


def stored(store: GraphStore, *records: ImageRecord) -> list[ImageRecord]:
    store.upsert(list(records))
    store.link(list(records), THRESHOLD, TOP_K)
    return list(records)


def triangle(store: GraphStore) -> list[ImageRecord]:
    """a-b alike in the active space; a-c alike in the new one (its vectors: new_vectors)."""
    return stored(store, make_record("/p/a.jpg", axis(0)), make_record("/p/b.jpg", angled(0.9, 1)),
                  make_record("/p/c.jpg", axis(2)))


NEW_VECTORS = {"/p/a.jpg": new_axis(0), "/p/b.jpg": new_axis(3), "/p/c.jpg": new_angled(0.95, 1)}


def put_all(store: GraphStore, records: list[ImageRecord], vectors: dict[str, np.ndarray] = NEW_VECTORS) -> int:
    return store.put_pending([(r.path, r.sha256, vectors[r.path]) for r in records])


def neighbour_paths(store: GraphStore, path: str) -> list[str]:
    return [match.path for match in store.neighbours(path)]


# -- opening ------------------------------------------------------------------------------------


def test_begin_space_opens_it_once_and_reports_progress(store: GraphStore) -> None:
    triangle(store)
    assert store.pending_space() is None

    opened = store.begin_space(NEW_MODEL, NEW_DIM, NEW_WEIGHTS)

    assert opened == PendingSpace(NEW_MODEL, NEW_DIM, NEW_WEIGHTS, embedded=0, total=3)
    assert not opened.complete
    assert store.pending_space() == opened
    assert store.begin_space(NEW_MODEL, NEW_DIM, NEW_WEIGHTS) == opened  # idempotent: resuming
    assert store.recorded_model() == (MODEL, DIM)  # the active space is untouched


def test_begin_space_refuses_another_model_while_one_is_pending_and_the_active_one(store: GraphStore) -> None:
    triangle(store)
    with pytest.raises(ReindexConflict, match=f"already embedded with {MODEL}"):
        store.begin_space(MODEL, DIM)
    store.begin_space(NEW_MODEL, NEW_DIM)
    with pytest.raises(ReindexConflict, match=NEW_MODEL):
        store.begin_space("test-model/v3", NEW_DIM)
    assert store.pending_space() == PendingSpace(NEW_MODEL, NEW_DIM, None, 0, 3)


# -- filling it ---------------------------------------------------------------------------------


def test_put_pending_stores_vectors_only_for_the_current_content(store: GraphStore) -> None:
    a, b, c = triangle(store)
    store.begin_space(NEW_MODEL, NEW_DIM)

    written = store.put_pending([(a.path, a.sha256, new_axis(0)), (b.path, "stale-hash", new_axis(1)),
                                 ("/p/gone.jpg", c.sha256, new_axis(2))])

    assert written == 1
    assert store.pending_space() == PendingSpace(NEW_MODEL, NEW_DIM, None, embedded=1, total=3)
    assert store.paths_without_pending("", 10) == [b.path, c.path]
    reused = store.pending_by_hash([a.sha256, b.sha256, "unknown"])
    assert set(reused) == {a.sha256}
    np.testing.assert_allclose(reused[a.sha256], new_axis(0))


@pytest.mark.parametrize("vector", [np.ones(NEW_DIM + 1) / np.sqrt(NEW_DIM + 1), np.ones(NEW_DIM)],
                         ids=["wrong-dim", "not-normalised"])
def test_put_pending_refuses_a_vector_that_is_not_a_unit_vector_of_the_new_dim(
        store: GraphStore, vector: np.ndarray) -> None:
    (a, *_) = triangle(store)
    store.begin_space(NEW_MODEL, NEW_DIM)
    with pytest.raises(StoreError, match=a.path):
        store.put_pending([(a.path, a.sha256, vector.astype(np.float32))])


def test_without_a_pending_space_nothing_is_pending_and_nothing_is_stored(store: GraphStore) -> None:
    (a, *_) = triangle(store)
    assert store.paths_without_pending("", 10) == []
    assert store.put_pending([(a.path, a.sha256, new_axis(0))]) == 0
    assert store.pending_by_hash([a.sha256]) == {}
    assert store.abort_space() is False
    assert store.switch_space(THRESHOLD, TOP_K) == 0


def test_paths_without_pending_pages_in_path_order(store: GraphStore) -> None:
    records = [make_record(f"/p/{i:02d}.jpg", v) for i, v in enumerate(random_unit_vectors(7))]
    store.upsert(records)
    store.begin_space(NEW_MODEL, NEW_DIM)
    store.put_pending([(records[3].path, records[3].sha256, new_axis(0))])

    first = store.paths_without_pending("", 4)
    rest = store.paths_without_pending(first[-1], 4)

    assert first + rest == [r.path for r in records if r is not records[3]]
    assert len(first) == 4 and len(rest) == 2


def test_an_upsert_with_a_pending_embedding_fills_both_spaces(store: GraphStore) -> None:
    triangle(store)
    store.begin_space(NEW_MODEL, NEW_DIM)
    new = dataclasses.replace(make_record("/p/new.jpg", axis(3)), pending_embedding=new_axis(5))
    plain = make_record("/p/plain.jpg", axis(4))

    store.upsert([new, plain])

    assert store.pending_space() == PendingSpace(NEW_MODEL, NEW_DIM, None, embedded=1, total=5)
    assert "/p/new.jpg" not in store.paths_without_pending("", 10)
    assert "/p/plain.jpg" in store.paths_without_pending("", 10)
    np.testing.assert_allclose(store.pending_by_hash([new.sha256])[new.sha256], new_axis(5))
    # New content without a pending vector: the image needs one again.
    store.upsert([make_record("/p/new.jpg", axis(6))])
    assert "/p/new.jpg" in store.paths_without_pending("", 10)
    with pytest.raises(StoreError, match="/p/bad.jpg"):
        store.upsert([dataclasses.replace(make_record("/p/bad.jpg", axis(7)), pending_embedding=axis(0))])


def test_an_upsert_with_a_pending_embedding_but_no_space_open_stores_the_active_one(store: GraphStore) -> None:
    store.upsert([dataclasses.replace(make_record("/p/a.jpg", axis(0)), pending_embedding=new_axis(0))])
    assert store.get("/p/a.jpg") is not None
    assert store.pending_space() is None


def test_remove_drops_pending_vectors_and_moves_carry_them(store: GraphStore) -> None:
    a, b, c = triangle(store)
    store.begin_space(NEW_MODEL, NEW_DIM)
    assert put_all(store, [a, b, c]) == 3

    store.rename_paths([(a.path, "/q/a.jpg")])
    assert store.move_folder("/p", "/r") == 2
    assert store.pending_space() == PendingSpace(NEW_MODEL, NEW_DIM, None, embedded=3, total=3)
    assert store.remove(["/r/b.jpg"]) == 1
    assert store.pending_space() == PendingSpace(NEW_MODEL, NEW_DIM, None, embedded=2, total=2)
    assert store.paths_without_pending("", 10) == []
    assert set(store.pending_by_hash([a.sha256, b.sha256, c.sha256])) == {a.sha256, c.sha256}


# -- switching and aborting -----------------------------------------------------------------------


def test_switch_space_refuses_an_incomplete_space_and_search_stays_in_the_active_one(store: GraphStore) -> None:
    a, b, c = triangle(store)
    store.begin_space(NEW_MODEL, NEW_DIM)
    put_all(store, [a, b])

    with pytest.raises(ReindexIncomplete, match="2 of 3"):
        store.switch_space(THRESHOLD, TOP_K)

    assert [m.path for m in store.nearest(axis(0), 2)] == [a.path, b.path]
    assert neighbour_paths(store, a.path) == [b.path]
    assert store.recorded_model() == (MODEL, DIM)


def test_switch_space_makes_the_new_vectors_links_and_model_the_active_ones(store: GraphStore) -> None:
    a, b, c = triangle(store)
    store.begin_space(NEW_MODEL, NEW_DIM, NEW_WEIGHTS)
    put_all(store, [a, b, c])
    # Complete, not yet switched: everything still answers from the active space.
    assert [m.path for m in store.nearest(axis(0), 2)] == [a.path, b.path]
    assert neighbour_paths(store, a.path) == [b.path]

    assert store.switch_space(THRESHOLD, TOP_K) == 1

    assert store.recorded_model() == (NEW_MODEL, NEW_DIM)
    assert store.recorded_weights_file() == NEW_WEIGHTS
    assert store.pending_space() is None
    assert neighbour_paths(store, a.path) == [c.path]
    assert store.neighbours(b.path) == []
    matches = store.nearest(new_axis(0), 3)
    assert [m.path for m in matches[:2]] == [a.path, c.path]
    assert matches[1].score == pytest.approx(0.95, abs=1e-5)
    assert {image.model for image in store.get_many([a.path, b.path, c.path]).values()} == {NEW_MODEL}
    assert store.switch_space(THRESHOLD, TOP_K) == 0  # a second caller finds it done
    with pytest.raises(StoreError):
        store.nearest(axis(0), 2)  # the old model's queries no longer fit
    # The old space is gone for good: copies of old content find no reusable vector.
    assert store.embeddings_by_hash([a.sha256], MODEL) == {}


def test_switch_space_to_the_same_dim_replaces_every_vector(store: GraphStore) -> None:
    a, b, c = triangle(store)
    store.begin_space(NEW_MODEL, DIM)
    near_five = 0.9 * axis(5) + np.sqrt(1 - 0.81).astype(np.float32) * axis(1)
    store.put_pending([(a.path, a.sha256, axis(5)), (b.path, b.sha256, axis(6)), (c.path, c.sha256, near_five)])

    store.switch_space(THRESHOLD, TOP_K)

    assert [m.path for m in store.nearest(axis(5), 2)] == [a.path, c.path]
    assert neighbour_paths(store, c.path) == [a.path]


def test_abort_space_drops_it_and_another_model_can_begin(store: GraphStore) -> None:
    a, b, c = triangle(store)
    store.begin_space(NEW_MODEL, NEW_DIM)
    put_all(store, [a, b, c])

    assert store.abort_space() is True

    assert store.pending_space() is None
    assert store.abort_space() is False
    assert store.recorded_model() == (MODEL, DIM)
    assert neighbour_paths(store, a.path) == [b.path]
    assert store.begin_space("test-model/v3", NEW_DIM).embedded == 0


def another_worker_writes(store: GraphStore) -> None:
    """While the triangle's new links are computed: a new photo near a, c edited (still near a), b removed."""
    store.upsert([dataclasses.replace(make_record("/p/d.jpg", axis(7)), pending_embedding=new_angled(0.9, 2)),
                  dataclasses.replace(make_record("/p/c.jpg", axis(2), sha256="c-edited"),
                                      pending_embedding=new_angled(0.85, 1))])
    store.remove(["/p/b.jpg"])


def assert_linked_as_written_meanwhile(store: GraphStore) -> None:
    assert neighbour_paths(store, "/p/a.jpg") == ["/p/d.jpg", "/p/c.jpg"]
    assert neighbour_paths(store, "/p/c.jpg") == ["/p/a.jpg"]
    assert store.get("/p/b.jpg") is None
    assert store.recorded_model() == (NEW_MODEL, NEW_DIM)


def test_writes_during_the_link_computation_are_linked_before_the_switch_on_neo4j() -> None:
    """As on the embedded store below: the stand-in runs another worker's writes just before the
    switch's write transaction, after its links were planned from read transactions."""
    store, server = fake_store()
    store.ensure_model(MODEL, DIM)
    a, b, c = triangle(store)
    store.begin_space(NEW_MODEL, NEW_DIM)
    put_all(store, [a, b, c])

    server.before_write = lambda: another_worker_writes(store)
    assert store.switch_space(THRESHOLD, TOP_K) == 2

    assert_linked_as_written_meanwhile(store)


def test_neo4j_refuses_a_pending_model_its_vector_index_cannot_hold() -> None:
    store, server = fake_store()
    store.ensure_model(MODEL, DIM)
    with pytest.raises(StoreError, match="at most 4096"):
        store.begin_space(NEW_MODEL, 4097)
    assert store.pending_space() is None


# -- the embedded store: its files ---------------------------------------------------------------------


def embedded(tmp_path: Path, **kwargs: int) -> EmbeddedGraphStore:
    opened = EmbeddedGraphStore(tmp_path / "store.sqlite3", **kwargs)
    opened.ensure_model(MODEL, DIM)
    return opened


def test_another_process_view_answers_in_the_new_space_after_the_switch(tmp_path: Path) -> None:
    """The second store object maps the vector files and the HNSW index before the switch, as
    another process (the web server) would; after it, both answer from the new vectors."""
    vectors = random_unit_vectors(60, seed=1)
    new_vectors = random_unit_vectors(60, dim=NEW_DIM, seed=2)
    records = [make_record(f"/p/{i:02d}.jpg", v) for i, v in enumerate(vectors)]
    with embedded(tmp_path, ann_min_images=10) as switching, embedded(tmp_path, ann_min_images=10) as other:
        switching.upsert(records)
        assert other.ann.maintain_now(DIM)
        before = other.nearest(vectors[0], 5)
        assert other.ann.index_revision is not None and before[0].path == records[0].path
        switching.begin_space(NEW_MODEL, NEW_DIM)
        switching.put_pending([(r.path, r.sha256, v) for r, v in zip(records, new_vectors, strict=True)])
        assert other.nearest(vectors[0], 5) == before  # complete but not switched
        rebuilds = (switching.vectors.rebuilds, other.vectors.rebuilds)

        with capture_logs() as logs:
            switching.switch_space(THRESHOLD, TOP_K)

        exact = np.argsort(-(new_vectors @ new_vectors[7]), kind="stable")[:5]
        expected = [records[i].path for i in exact]
        assert [m.path for m in other.nearest(new_vectors[7], 5)] == expected
        # The switching process rebuilt the files for everyone.
        assert (switching.vectors.rebuilds, other.vectors.rebuilds) == (rebuilds[0] + 1, rebuilds[1])
        # Expected, so not a warning (files of another store are).
        assert [(e["log_level"], e["reason"]) for e in logs if e["event"] == "vector_files_rebuilt"] == [
            ("info", SWITCHED)]
        other.ann.wait_for_maintenance(60)  # that search found the index of another identity: built anew
        assert other.ann.saves == 2
        found = other.nearest(new_vectors[7], 5)
        assert [m.path for m in found] == expected
        assert other.ann.index_revision is not None
        np.testing.assert_allclose([m.score for m in found], (new_vectors @ new_vectors[7])[exact], atol=1e-5)


@pytest.mark.parametrize("compact_min_images", [10**9, 1], ids=["scanned", "through the int8 copy"])
def test_writes_during_the_link_computation_are_linked_before_the_switch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compact_min_images: int) -> None:
    """switch_space computes links without the write lock; what another process writes meanwhile
    (a new photo with both vectors, a removed one) is caught up in the switch's transaction."""
    with embedded(tmp_path, compact_min_images=compact_min_images) as switching, embedded(tmp_path) as worker:
        a, b, c = triangle(switching)
        switching.begin_space(NEW_MODEL, NEW_DIM)
        put_all(switching, [a, b, c])
        compute_links = spaces.compute_links

        def computed_while_another_process_writes(*args: object, **kwargs: object) -> spaces.SpaceLinks:
            result = compute_links(*args, **kwargs)  # type: ignore[arg-type]
            assert (result.copy is not None) == (compact_min_images == 1)
            another_worker_writes(worker)
            return result

        monkeypatch.setattr(spaces, "compute_links", computed_while_another_process_writes)
        assert switching.switch_space(THRESHOLD, TOP_K) == 2

        assert_linked_as_written_meanwhile(switching)
        assert_linked_as_written_meanwhile(worker)


def test_a_second_process_finds_the_switch_under_way_and_leaves_it(tmp_path: Path) -> None:
    with embedded(tmp_path) as opened:
        a, b, c = triangle(opened)
        opened.begin_space(NEW_MODEL, NEW_DIM)
        put_all(opened, [a, b, c])
        with spaces.switching(opened.db_path) as first:
            assert first
            assert opened.switch_space(THRESHOLD, TOP_K) == 0  # as another process would
            assert opened.pending_space() is not None
        assert opened.switch_space(THRESHOLD, TOP_K) == 1


def test_a_version_4_store_file_is_migrated_and_keeps_its_images(tmp_path: Path) -> None:
    with embedded(tmp_path) as opened:
        (a, *_) = triangle(opened)
    # A version 4 file is this one without the pending space's table.
    with sqlite3.connect(tmp_path / "store.sqlite3") as connection:
        connection.execute("DROP TABLE pending_embeddings")
        connection.execute("UPDATE meta SET value = 4 WHERE key = 'schema_version'")

    with EmbeddedGraphStore(tmp_path / "store.sqlite3") as migrated:
        assert migrated.describe()["schema_version"] == SCHEMA_VERSION
        assert neighbour_paths(migrated, a.path) == ["/p/b.jpg"]
        migrated.begin_space(NEW_MODEL, NEW_DIM)
        assert put_all(migrated, triangle_records(migrated)) == 3
        assert migrated.switch_space(THRESHOLD, TOP_K) == 1


def triangle_records(store: GraphStore) -> list[ImageRecord]:
    found = store.get_many(NEW_VECTORS)
    return [make_record(path, np.zeros(0), sha256=found[path].sha256) for path in NEW_VECTORS]
