"""Neo4jGraphStore's own logic against an in-memory stand-in for the server.

The stand-in (tests/store/neo4j_stand_in.py) logs every statement with its transaction,
so these tests check what the store sends, in which transaction and in
which order: the link lock after the candidate searches, embeddings only when changed,
schema looked at before anything is created. Whether the Cypher itself is right needs a
real server: test_contract.py runs there when IMGWATCH_TEST_NEO4J_URI is set. Its shared
scenarios (contract_cases.py) also run here on the stand-in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from imgwatch.store import GraphStore, StoreError
from imgwatch.store.neo4j import cosine_to_score
from imgwatch.store.neo4j import cypher as q
from imgwatch.store.neo4j.schema import MAX_VECTOR_DIMENSIONS
from tests.helpers import DIM, MODEL, WEIGHTS_FILE, angled, axis, make_record
from tests.store import contract_cases
from tests.store.neo4j_stand_in import FakeServer, Row, fake_store


@pytest.fixture
def neo4j_store_on_stand_in() -> GraphStore:
    opened, _ = fake_store()
    opened.ensure_model(MODEL, DIM)
    return opened


# -- the contract's scenarios, on the stand-in -------------------------------------------

@pytest.mark.parametrize("scenario", contract_cases.SCENARIOS, ids=lambda scenario: scenario.__name__)
def test_contract_scenarios_hold_on_the_stand_in(
    scenario: Callable[[GraphStore], None], neo4j_store_on_stand_in: GraphStore
) -> None:
    scenario(neo4j_store_on_stand_in)


def test_links_at_least_pages_through_ties_on_the_stand_in(
    neo4j_store_on_stand_in: GraphStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    contract_cases.links_at_least_pages_through_ties_without_losing_or_repeating_a_link(
        neo4j_store_on_stand_in, monkeypatch)


# -- indexed_at and links_at_least ------------------------------------------------------------


def test_links_at_least_reads_one_page_per_read_transaction_after_the_last_row(monkeypatch: pytest.MonkeyPatch) -> None:
    import imgwatch.store.neo4j.store as neo4j_store

    monkeypatch.setattr(neo4j_store, "PAGE_SIZE", 2)
    store, server = fake_store()
    store.ensure_model(MODEL, DIM)
    contract_cases.linked_star(store)  # six links
    pages: list[dict[str, Any]] = []
    original = server.answer

    def answer(statement: str, p: dict[str, Any]) -> list[Row]:
        if statement == q.LINKS_AT_LEAST:
            pages.append(dict(p))
        return original(statement, p)

    server.answer = answer  # type: ignore[method-assign]
    server.log.clear()

    found = list(store.links_at_least(0.8))

    assert len(found) == 6
    assert server.log == [("read", q.LINKS_AT_LEAST)] * 4  # 2 + 2 + 2 + an empty page
    assert (pages[0]["score"], pages[0]["a"], pages[0]["b"]) == (0.8, "", "")
    second = sorted((link.score, link.a, link.b) for link in found)[1]
    assert (pages[1]["score"], pages[1]["a"], pages[1]["b"]) == second


def test_a_migration_between_stand_ins_copies_indexed_at() -> None:
    from imgwatch.store.migrate import migrate

    source, _ = fake_store()
    target, _ = fake_store()
    source.ensure_model(MODEL, DIM)
    contract_cases.linked_star(source)
    paths = ["/p/anchor.jpg", "/p/99.jpg", "/p/95.jpg", "/p/85.jpg"]

    report = migrate(source, target)

    assert report.images_copied == 4 and report.links_copied == 6
    assert target.get_many(paths) == source.get_many(paths)
    assert all(image.indexed_at is not None for image in target.get_many(paths).values())
    assert migrate(source, target).images_skipped == 4


def test_the_score_index_is_created_once_and_a_user_who_may_not_create_it_still_opens_the_store() -> None:
    server = FakeServer()
    fake_store(server)[0].ensure_model(MODEL, DIM)
    assert server.statements().count(q.CREATE_SCORE_INDEX) == 1
    server.log.clear()
    fake_store(server)
    assert q.CREATE_SCORE_INDEX not in server.statements()

    editor = FakeServer()
    fake_store(editor)[0].ensure_model(MODEL, DIM)
    editor.indexes = [i for i in editor.indexes if i["name"] != q.SCORE_INDEX]  # a store from before the index
    editor.refuse_schema.add(q.CREATE_SCORE_INDEX)
    store, _ = fake_store(editor)
    store.upsert([make_record("/p/a.jpg", axis(0))])
    assert store.describe()["link_score_index"].startswith("MISSING")


# -- linking: searches outside the lock, pairs within a batch scored in Python ------------


def test_link_searches_before_taking_the_lock_and_holds_it_only_to_read_former_links_and_write() -> None:
    store, server = fake_store()
    store.ensure_model(MODEL, DIM)
    a, b, c = (make_record("/p/a.jpg", axis(0)), make_record("/p/b.jpg", angled(0.9, 1)),
               make_record("/p/c.jpg", angled(0.8, 2)))
    store.upsert([a, b, c])
    server.log.clear()

    assert store.link([a, b], threshold=0.5, top_k=5) == 3

    reads, writes = server.statements("read"), server.statements("write")
    assert q.CANDIDATES in reads and q.SERIALISE not in reads
    assert writes[0] == q.SERIALISE  # the lock comes first in the write transaction...
    assert q.CANDIDATES not in writes  # ...which searches nothing when nothing changed
    assert writes[1:3] == [q.CHANGED_SINCE, q.FORMER_LINKS]  # former links are read under the lock
    # Pairs within the batch are scored in Python: no statement reads a pair of batch images.
    assert all("UNWIND $paths AS other" not in s for s in server.statements())


def test_images_of_one_batch_link_even_where_the_approximate_index_misses_their_pair() -> None:
    store, server = fake_store()
    store.ensure_model(MODEL, DIM)
    a, b = make_record("/p/a.jpg", axis(0)), make_record("/p/b.jpg", angled(0.9, 1))
    store.upsert([a, b])
    server.ann_misses.add(frozenset(("/p/a.jpg", "/p/b.jpg")))

    assert store.link([a, b], threshold=0.5, top_k=5) == 1
    assert [(m.path, round(m.score, 5)) for m in store.neighbours("/p/a.jpg")] == [("/p/b.jpg", 0.9)]


def test_a_neighbour_changed_between_the_search_and_the_lock_is_searched_again_under_the_lock() -> None:
    store, server = fake_store()
    store.ensure_model(MODEL, DIM)
    a, b = make_record("/p/a.jpg", axis(0)), make_record("/p/b.jpg", angled(0.9, 1))
    store.upsert([a, b])
    store.link([a, b], threshold=0.5, top_k=5)
    # Another worker re-embeds b after a's search, before a's relink takes the lock.
    server.before_write = lambda: store.upsert([make_record("/p/b.jpg", angled(0.6, 1))])
    server.log.clear()

    store.link([a], threshold=0.5, top_k=5)

    assert q.CANDIDATES in server.statements("write")  # the stale search was redone under the lock
    assert [(m.path, round(m.score, 5)) for m in store.neighbours("/p/a.jpg")] == [("/p/b.jpg", 0.6)]


def test_a_candidate_just_below_the_threshold_is_fetched_but_not_linked() -> None:
    store, server = fake_store()
    store.ensure_model(MODEL, DIM)
    threshold = 0.8
    below = make_record("/p/below.jpg", angled(threshold - 1e-6, 1))
    above = make_record("/p/above.jpg", angled(threshold + 1e-6, 2))
    anchor = make_record("/p/anchor.jpg", axis(0))
    store.upsert([anchor, below, above])

    written = store.link([anchor], threshold=threshold, top_k=5)

    assert written == 1 and [m.path for m in store.neighbours("/p/anchor.jpg")] == ["/p/above.jpg"]
    # The search did return the one below (its score passes the fetch bound): the rule refused it.
    assert server.score("/p/anchor.jpg", "/p/below.jpg") >= cosine_to_score(threshold) - 1e-6


def test_link_with_top_k_zero_drops_links_marks_linked_and_keeps_recorded_bars() -> None:
    store, server = fake_store()
    store.ensure_model(MODEL, DIM)
    a, b = make_record("/p/a.jpg", axis(0)), make_record("/p/b.jpg", angled(0.9, 1))
    store.upsert([a, b])
    store.link([a, b], threshold=0.5, top_k=1)
    bar = server.images["/p/a.jpg"]["pick_bar"]

    assert store.link([a], threshold=0.5, top_k=0) == 0

    assert store.stats().links == 0 and server.images["/p/a.jpg"]["linked"]
    assert server.images["/p/a.jpg"]["pick_bar"] == bar and q.CANDIDATES not in server.statements("write")


# -- upsert sends embeddings only when they changed --------------------------------------


def test_upsert_sends_an_embedding_only_for_new_or_changed_images() -> None:
    store, server = fake_store()
    store.ensure_model(MODEL, DIM)
    store.upsert([make_record("/p/a.jpg", axis(0)), make_record("/p/b.jpg", axis(1))])
    assert sorted(row["path"] for row in server.sent) == ["/p/a.jpg", "/p/b.jpg"]
    server.sent.clear()
    server.log.clear()

    store.upsert([make_record("/p/a.jpg", axis(0), size=5), make_record("/p/b.jpg", axis(2))])

    assert [row["path"] for row in server.sent] == ["/p/b.jpg"]
    assert server.images["/p/a.jpg"]["size"] == 5
    writes = server.statements("write")
    assert writes.count(q.UPSERT_FACTS) == 1 and writes.count(q.SET_EMBEDDINGS) == 1  # one transaction


def test_an_unchanged_upsert_sends_no_embedding_at_all() -> None:
    store, server = fake_store()
    store.ensure_model(MODEL, DIM)
    store.upsert([make_record("/p/a.jpg", axis(0))])
    server.sent.clear()
    server.log.clear()

    store.upsert([make_record("/p/a.jpg", axis(0), mtime_ns=7)])

    assert server.sent == [] and q.SET_EMBEDDINGS not in server.statements()


# -- schema: look first, create only what is missing -------------------------------------


def test_opening_a_complete_schema_creates_nothing() -> None:
    server = FakeServer()
    fake_store(server)[0].ensure_model(MODEL, DIM)
    server.log.clear()

    store, _ = fake_store(server)
    store.ensure_model(MODEL, DIM)

    sent = server.statements()
    assert not [s for s in sent if s.startswith(("CREATE", "MERGE", "DROP")) or "awaitIndex" in s
                or s in (q.LOCK_STORE_MODEL, q.SET_MODEL)]
    assert q.SHOW_CONSTRAINTS in sent and q.SHOW_INDEXES in sent


def test_opening_an_empty_database_creates_the_constraints_the_store_node_and_the_index() -> None:
    store, server = fake_store()
    store.ensure_model(MODEL, DIM)

    sent = server.statements()
    assert q.CREATE_PATH_CONSTRAINT in sent and q.CREATE_STORE_CONSTRAINT in sent and q.CREATE_STORE in sent
    assert q.CREATE_VECTOR_INDEX.format(dim=DIM) in sent and q.AWAIT_INDEX in sent


def test_a_constraint_under_another_name_counts_as_present() -> None:
    server = FakeServer()
    server.constraints.append({"name": "my_own", "type": "NODE_PROPERTY_UNIQUENESS", "entityType": "NODE",
                               "labelsOrTypes": ["Image"], "properties": ["path"]})
    fake_store(server)

    assert q.CREATE_PATH_CONSTRAINT not in server.statements()
    assert q.CREATE_STORE_CONSTRAINT in server.statements()


def test_another_vector_index_on_image_embedding_is_named_instead_of_blaming_another_model() -> None:
    server = FakeServer()
    server.add_index(DIM, name="someone_elses_index")
    store, _ = fake_store(server)

    with pytest.raises(StoreError) as raised:
        store.ensure_model(MODEL, DIM)

    message = str(raised.value)
    assert "someone_elses_index" in message and "DROP INDEX `someone_elses_index`" in message
    assert "another model" not in message
    assert not [s for s in server.statements() if s.startswith("CREATE VECTOR INDEX")]


def test_a_model_larger_than_a_vector_index_holds_is_refused_before_anything_is_recorded() -> None:
    store, server = fake_store()
    server.log.clear()

    with pytest.raises(StoreError, match=r"4097-dimensional embeddings.* at most 4096") as raised:
        store.ensure_model("big-model", MAX_VECTOR_DIMENSIONS + 1)

    assert "embedded" in str(raised.value) and server.location in str(raised.value)
    assert server.store is not None and server.store["model"] is None and server.statements("write") == []
    assert not [s for s in server.statements() if s.startswith("CREATE VECTOR INDEX")]
    store.ensure_model("big-model", MAX_VECTOR_DIMENSIONS)  # the largest one fits
    assert q.CREATE_VECTOR_INDEX.format(dim=MAX_VECTOR_DIMENSIONS) in server.statements()


def test_a_read_only_store_never_creates_anything() -> None:
    server = FakeServer()
    with pytest.raises(StoreError, match="no imgwatch store yet"):
        fake_store(server, writable=False)
    assert not [s for s in server.statements() if s.startswith(("CREATE", "MERGE"))]


# -- stats and recorded_model in one read each, file_states as one range -----------------


def test_stats_count_links_without_labels_and_recorded_model_is_one_read() -> None:
    store, server = fake_store()
    assert store.recorded_model() is None
    store.ensure_model(MODEL, DIM)
    server.log.clear()

    assert store.recorded_model() == (MODEL, DIM)
    assert server.log == [("read", q.STORE_STATE)]
    stats = store.stats()
    assert (stats.backend, stats.images, stats.links, stats.model, stats.dim) == ("neo4j", 0, 0, MODEL, DIM)
    assert q.COUNT_LINKS in server.statements()


def test_the_weights_file_is_written_only_when_it_changes_and_read_in_one_statement() -> None:
    store, server = fake_store()
    store.ensure_model(MODEL, DIM, WEIGHTS_FILE)
    server.log.clear()

    store.ensure_model(MODEL, DIM, WEIGHTS_FILE)
    store.ensure_model(MODEL, DIM)
    assert server.statements() == [q.STORE_STATE, q.STORE_STATE]  # nothing written
    moved = ("/elsewhere/resnet50.pth", WEIGHTS_FILE[1])
    store.ensure_model(MODEL, DIM, moved)
    assert server.statements("write") == [q.LOCK_STORE_MODEL, q.SET_MODEL]
    server.log.clear()
    assert store.recorded_weights_file() == moved
    assert server.log == [("read", q.STORE_STATE)]


def test_file_states_under_a_directory_use_an_equality_and_one_range() -> None:
    store, server = fake_store()
    store.ensure_model(MODEL, DIM)
    paths = ["/a/b", "/a/b/x.jpg", "/a/b/y/z.jpg", "/a/b.jpg", "/a/bc.jpg", "/a/b0.jpg"]
    store.upsert([make_record(p, angled(0.5, 1 + i)) for i, p in enumerate(paths)])
    server.log.clear()

    assert [s.path for s in store.file_states(under="/a/b/")] == ["/a/b", "/a/b/x.jpg", "/a/b/y/z.jpg"]
    assert server.statements() == [q.FILE_STATE_AT, q.FILE_STATES_BELOW]


def test_file_states_page_through_everything_in_path_order(monkeypatch: pytest.MonkeyPatch) -> None:
    store, server = fake_store()
    store.ensure_model(MODEL, DIM)
    paths = [f"/p/{i:03d}.jpg" for i in range(7)]
    store.upsert([make_record(p, angled(0.5, 1 + i % 10)) for i, p in enumerate(paths)])
    from imgwatch.store import batching

    monkeypatch.setattr(batching.keyset_pages, "__defaults__", (3,))
    server.log.clear()

    assert [s.path for s in store.file_states()] == paths
    assert server.statements() == [q.FILE_STATES_ALL] * 3


def test_export_reads_vector_values_through_to_numpy() -> None:
    store, server = fake_store()
    store.ensure_model(MODEL, DIM)
    store.upsert([make_record("/p/a.jpg", axis(0))])
    # export reads n.embedding; with Cypher 25 VECTOR values it is an object with to_numpy().

    class Vec:
        def __init__(self, values: np.ndarray) -> None:
            self.values = values.astype(">f4")

        def to_numpy(self) -> np.ndarray:
            return self.values

    original = server.answer

    def answer(statement: str, p: dict[str, Any]) -> list[Row]:
        if statement == q.EXPORT_IMAGES:
            return [{"path": path, **node, "embedding": Vec(node["embedding"])} for path, node in
                    sorted(server.images.items()) if path > p["after"]][: p["limit"]]
        return original(statement, p)

    server.answer = answer  # type: ignore[method-assign]
    [exported] = store.export_images("", 10)
    assert exported.record.embedding.dtype == np.float32
    np.testing.assert_array_equal(exported.record.embedding, axis(0))


# -- a switch of model of another size: searched exactly while the index is re-created ----------


def test_a_reader_searches_exactly_while_a_switch_re_creates_the_index_for_another_size() -> None:
    store, server = fake_store()
    store.ensure_model(MODEL, DIM)
    records = [make_record(f"/p/{i}.jpg", axis(i)) for i in range(3)]
    store.upsert(records)
    store.begin_space("other/model", DIM - 1)
    store.put_pending([(r.path, r.sha256, np.eye(DIM - 1, dtype=np.float32)[i]) for i, r in enumerate(records)])
    store.switch_space(0.5, 5)
    # The moment after the switch's commit, before the old index is dropped and created anew.
    server.indexes = [index for index in server.indexes if index["name"] != q.VECTOR_INDEX]
    server.add_index(DIM)
    reader, _ = fake_store(server, writable=False)

    matches = reader.nearest(np.eye(DIM - 1, dtype=np.float32)[1], 2)

    assert [m.path for m in matches] == ["/p/1.jpg", "/p/0.jpg"] and matches[0].score == pytest.approx(1.0)
    assert server.log[-1][1] == q.NEAREST_EXACT
    # Dropped, then being built for the new size: answered exactly too, without waiting for it.
    for being_built in (False, True):
        server.indexes = [index for index in server.indexes if index["name"] != q.VECTOR_INDEX]
        if being_built:
            server.add_index(DIM - 1, state="POPULATING")
        assert [m.path for m in reader.nearest(np.eye(DIM - 1, dtype=np.float32)[2], 1)] == ["/p/2.jpg"]
        assert server.log[-1][1] == q.NEAREST_EXACT and q.AWAIT_INDEX not in {s for _, s in server.log[-3:]}
