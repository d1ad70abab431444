"""Behaviour every GraphStore backend must share, as scenarios that take an empty store with MODEL/DIM recorded.

test_contract.py runs them on each backend; test_neo4j_fake.py runs them on the Neo4j stand-in too.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest

from imgwatch.store import (
    FileState,
    GraphStore,
    ImageNotFound,
    Link,
    Match,
    ModelMismatchError,
    StoredImage,
    StoreError,
)
from tests.helpers import DIM, MODEL, WEIGHTS_FILE, angled, axis, make_record, random_unit_vectors

SCORE_TOLERANCE = 1e-5


def paths_and_scores(matches: list[Match]) -> list[tuple[str, float]]:
    return [(m.path, round(m.score, 5)) for m in matches]


def upsert_then_get_returns_the_node_facts(store: GraphStore) -> None:
    first = make_record("/photos/a.jpg", axis(0), size=11, mtime_ns=22, width=33, height=44)
    second = make_record("/photos/b.jpg", axis(1))
    before = time.time()
    store.upsert([first, second])

    stored = store.get("/photos/a.jpg")
    assert stored is not None and stored.indexed_at is not None
    assert dataclasses.replace(stored, indexed_at=None) == StoredImage(
        path="/photos/a.jpg", sha256=first.sha256, size=11, mtime_ns=22, width=33, height=44, model=MODEL,
        linked=False,
    )
    assert before <= stored.indexed_at <= time.time()
    assert store.get("/photos/missing.jpg") is None
    found = store.get_many(["/photos/b.jpg", "/photos/missing.jpg", "/photos/a.jpg"])
    assert set(found) == {"/photos/a.jpg", "/photos/b.jpg"}
    assert found["/photos/b.jpg"].sha256 == second.sha256
    stats = store.stats()
    assert (stats.images, stats.links, stats.model) == (2, 0, MODEL)


def upsert_of_an_existing_path_replaces_it(store: GraphStore) -> None:
    store.upsert([make_record("/photos/a.jpg", axis(0), sha256="old", size=1)])
    store.upsert([make_record("/photos/a.jpg", axis(1), sha256="new", size=2)])

    stored = store.get("/photos/a.jpg")
    assert stored is not None and (stored.sha256, stored.size) == ("new", 2)
    assert store.stats().images == 1
    # The new embedding is the one searched.
    [match] = store.nearest(axis(1), 1)
    assert match.path == "/photos/a.jpg" and match.score == pytest.approx(1.0, abs=SCORE_TOLERANCE)
    assert store.nearest(axis(0), 1)[0].score == pytest.approx(0.0, abs=SCORE_TOLERANCE)


def update_file_states_changes_only_size_and_mtime(store: GraphStore) -> None:
    record = make_record("/photos/a.jpg", axis(0), size=10, mtime_ns=100)
    store.upsert([record])

    store.update_file_states([FileState("/photos/a.jpg", 20, 200), FileState("/photos/unknown.jpg", 1, 1)])

    stored = store.get("/photos/a.jpg")
    assert stored is not None
    assert (stored.size, stored.mtime_ns) == (20, 200)
    assert (stored.sha256, stored.width) == (record.sha256, record.width)
    assert store.get("/photos/unknown.jpg") is None


def the_whole_file_signature_is_kept_read_back_and_updated(store: GraphStore) -> None:
    big_inode = 2**63 - 5  # inodes use the whole signed 64-bit range (files.signature_of)
    store.upsert([make_record("/photos/a.jpg", axis(0), size=10, mtime_ns=100, ctime_ns=150, inode=big_inode),
                  make_record("/photos/legacy.jpg", axis(1), size=10, mtime_ns=100)])

    assert store.get_many(["/photos/a.jpg"])["/photos/a.jpg"].signature == (10, 100, 150, big_inode)
    assert {s.path: s.signature for s in store.file_states()} == {
        "/photos/a.jpg": (10, 100, 150, big_inode), "/photos/legacy.jpg": (10, 100, None, None)}
    store.update_file_states([FileState("/photos/legacy.jpg", 11, 101, 151, -7)])
    assert store.get_many(["/photos/legacy.jpg"])["/photos/legacy.jpg"].signature == (11, 101, 151, -7)
    [exported, _] = store.export_images("", 10)
    assert exported.record.signature == (10, 100, 150, big_inode)


def link_keeps_neighbours_above_threshold_up_to_top_k(store: GraphStore) -> None:
    store.upsert([
        make_record("/p/anchor.jpg", axis(0)),
        make_record("/p/95.jpg", angled(0.95, 1)),
        make_record("/p/90.jpg", angled(0.90, 2)),
        make_record("/p/85.jpg", angled(0.85, 3)),
        make_record("/p/50.jpg", angled(0.50, 4)),
    ])
    written = store.link([make_record("/p/anchor.jpg", axis(0))], threshold=0.8, top_k=2)

    assert written == 2
    assert paths_and_scores(store.neighbours("/p/anchor.jpg")) == [("/p/95.jpg", 0.95), ("/p/90.jpg", 0.9)]
    # A high threshold leaves fewer than top_k.
    assert store.link([make_record("/p/anchor.jpg", axis(0))], threshold=0.92, top_k=10) == 1
    assert paths_and_scores(store.neighbours("/p/anchor.jpg")) == [("/p/95.jpg", 0.95)]


def links_are_undirected_and_stored_once(store: GraphStore) -> None:
    a, b = make_record("/p/a.jpg", axis(0)), make_record("/p/b.jpg", angled(0.9, 1))
    store.upsert([a, b])

    assert store.link([a], threshold=0.5, top_k=5) == 1
    assert paths_and_scores(store.neighbours("/p/b.jpg")) == [("/p/a.jpg", 0.9)]
    assert paths_and_scores(store.neighbours("/p/a.jpg")) == [("/p/b.jpg", 0.9)]
    assert store.stats().links == 1
    # Linking the other end finds the same pair: still one link.
    assert store.link([b], threshold=0.5, top_k=5) == 1
    assert store.stats().links == 1


def images_in_one_link_call_link_to_each_other(store: GraphStore) -> None:
    a, b = make_record("/p/a.jpg", axis(0)), make_record("/p/b.jpg", angled(0.9, 1))
    far = make_record("/p/far.jpg", axis(5))
    store.upsert([a, b, far])

    written = store.link([a, b, far], threshold=0.5, top_k=5)

    assert written == 1  # a–b found from both ends, stored once
    assert [m.path for m in store.neighbours("/p/a.jpg")] == ["/p/b.jpg"]
    assert [m.path for m in store.neighbours("/p/b.jpg")] == ["/p/a.jpg"]
    assert store.neighbours("/p/far.jpg") == []
    assert store.stats().links == 1


def link_replaces_every_link_of_the_image_at_either_end(store: GraphStore) -> None:
    anchor = make_record("/p/anchor.jpg", axis(0))
    close = make_record("/p/close.jpg", angled(0.95, 1))
    other = make_record("/p/other.jpg", angled(0.85, 2))
    store.upsert([close, other, anchor])  # anchor last, so it is the higher-id end in any backend using ids
    store.link([other], threshold=0.82, top_k=5)  # other–anchor (0.85), not other–close (0.8075)
    assert [m.path for m in store.neighbours("/p/anchor.jpg")] == ["/p/other.jpg"]

    written = store.link([anchor], threshold=0.9, top_k=5)

    # anchor's links are now exactly its own picks; the other–anchor link is gone.
    assert written == 1
    assert [m.path for m in store.neighbours("/p/anchor.jpg")] == ["/p/close.jpg"]
    assert store.neighbours("/p/other.jpg") == []
    assert store.stats().links == 1


def an_image_is_marked_linked_until_its_embedding_changes(store: GraphStore) -> None:
    a, b = make_record("/p/a.jpg", axis(0)), make_record("/p/b.jpg", angled(0.9, 1))
    store.upsert([a, b])
    assert not store.get_many(["/p/a.jpg"])["/p/a.jpg"].linked  # a crash here must be detectable
    store.link([a, b], threshold=0.5, top_k=3)
    assert all(image.linked for image in store.get_many(["/p/a.jpg", "/p/b.jpg"]).values())
    store.upsert([make_record("/p/a.jpg", axis(0), size=2)])  # same embedding: links stay valid
    assert store.get("/p/a.jpg").linked  # type: ignore[union-attr]
    store.upsert([make_record("/p/a.jpg", angled(0.99, 2))])
    assert not store.get("/p/a.jpg").linked  # type: ignore[union-attr]


def relinking_an_image_keeps_the_links_its_neighbours_still_choose(store: GraphStore) -> None:
    x = make_record("/p/x.jpg", axis(0))
    a = make_record("/p/a.jpg", angled(0.95, 1))
    y = make_record("/p/y.jpg", angled(0.99, 2))
    store.upsert([x, a])
    store.link([x, a], threshold=0.5, top_k=1)
    assert [m.path for m in store.neighbours("/p/a.jpg")] == ["/p/x.jpg"]
    store.upsert([y])  # x's new best match
    store.link([x, y], threshold=0.5, top_k=1)
    # x now picks y, but a still picks x: that link survives x's re-link.
    assert [m.path for m in store.neighbours("/p/a.jpg")] == ["/p/x.jpg"]
    assert sorted(m.path for m in store.neighbours("/p/x.jpg")) == ["/p/a.jpg", "/p/y.jpg"]


def link_with_nothing_above_threshold_clears_links(store: GraphStore) -> None:
    a, b = make_record("/p/a.jpg", axis(0)), make_record("/p/b.jpg", angled(0.7, 1))
    store.upsert([a, b])
    assert store.link([a], threshold=0.6, top_k=3) == 1

    assert store.link([a], threshold=0.75, top_k=3) == 0
    assert store.neighbours("/p/a.jpg") == []
    assert store.stats().links == 0


def remove_deletes_the_node_and_its_links(store: GraphStore) -> None:
    a, b, c = (make_record("/p/a.jpg", axis(0)), make_record("/p/b.jpg", angled(0.9, 2)),
               make_record("/p/c.jpg", angled(0.8, 3)))
    store.upsert([a, b, c])
    store.link([a, b, c], threshold=0.5, top_k=5)
    assert store.stats().links == 3

    assert store.remove(["/p/a.jpg", "/p/not-there.jpg"]) == 1

    assert store.get("/p/a.jpg") is None
    assert [m.path for m in store.neighbours("/p/b.jpg")] == ["/p/c.jpg"]
    assert store.stats().images == 2 and store.stats().links == 1
    assert "/p/a.jpg" not in [m.path for m in store.nearest(axis(0), 5)]
    with pytest.raises(ImageNotFound):
        store.neighbours("/p/a.jpg")
    assert store.remove([]) == 0


def file_states_under_a_directory_excludes_prefix_siblings(store: GraphStore) -> None:
    paths = ["/photos/a/b/x.jpg", "/photos/a/b/deep/y.jpg", "/photos/a/bc/z.jpg", "/photos/a/b.jpg",
             "/photos/other.jpg"]
    store.upsert([make_record(p, angled(0.5, 1 + i), size=i, mtime_ns=10 * i) for i, p in enumerate(paths)])

    below = set(store.file_states(under="/photos/a/b"))
    assert below == {FileState("/photos/a/b/x.jpg", 0, 0), FileState("/photos/a/b/deep/y.jpg", 1, 10)}
    assert set(store.file_states(under="/photos/a/b/")) == below
    assert {s.path for s in store.file_states(under="/photos/a")} == set(paths) - {"/photos/other.jpg"}
    assert {s.path for s in store.file_states()} == set(paths)
    assert list(store.file_states(under="/elsewhere")) == []
    # Counted the same way, without reading each path.
    assert [store.count_below(folder) for folder in ("/photos/a/b", "/photos/a/b/", "/photos/a", "/photos/a/b.jpg",
                                                     "/elsewhere", "/")] == [2, 2, 4, 1, 0, 5]


def ensure_model_refuses_another_model_while_images_exist(store: GraphStore) -> None:
    store.ensure_model(MODEL, DIM)  # the same model again is fine
    store.upsert([make_record("/p/a.jpg", axis(0))])

    with pytest.raises(ModelMismatchError) as raised:
        store.ensure_model("other-model/v2", DIM)

    message = str(raised.value)
    assert MODEL in message and "other-model/v2" in message and "1 embeddings" in message
    assert "re-index everything" in message
    assert store.stats().model == MODEL


def ensure_model_switches_when_the_store_is_empty(store: GraphStore) -> None:
    store.upsert([make_record("/p/a.jpg", axis(0))])
    store.remove(["/p/a.jpg"])

    store.ensure_model("other-model/v2", 8)

    assert store.stats().model == "other-model/v2"
    store.upsert([make_record("/p/b.jpg", axis(0, dim=8), model="other-model/v2")])
    assert store.nearest(axis(0, dim=8), 1)[0].path == "/p/b.jpg"




def the_weights_file_is_recorded_with_the_model_and_where_it_moved(store: GraphStore) -> None:
    assert store.recorded_weights_file() is None  # the model was recorded without a file
    store.ensure_model(MODEL, DIM, WEIGHTS_FILE)
    store.upsert([make_record("/p/a.jpg", axis(0))])
    assert store.recorded_weights_file() == WEIGHTS_FILE

    store.ensure_model(MODEL, DIM)  # a caller that does not know the file keeps it
    assert store.recorded_weights_file() == WEIGHTS_FILE
    moved = ("/elsewhere/resnet50.pth", WEIGHTS_FILE[1])
    store.ensure_model(MODEL, DIM, moved)  # configured again where it is now: the images stay
    assert store.recorded_weights_file() == moved and store.stats().images == 1

    with pytest.raises(ModelMismatchError):
        store.ensure_model("other-model/v2", DIM, ("/models/other.pth", "1" * 64))
    assert store.recorded_model() == (MODEL, DIM) and store.recorded_weights_file() == moved


def switching_the_model_of_an_empty_store_forgets_the_old_weights_file(store: GraphStore) -> None:
    store.ensure_model(MODEL, DIM, WEIGHTS_FILE)

    store.ensure_model("other-model/v2", 8)

    assert store.recorded_model() == ("other-model/v2", 8) and store.recorded_weights_file() is None


def upserting_a_record_of_another_model_is_refused(store: GraphStore) -> None:
    with pytest.raises(ModelMismatchError, match="re-index everything"):
        store.upsert([make_record("/p/a.jpg", axis(0), model="other-model/v2")])
    assert store.stats().images == 0


def a_neighbour_keeps_or_drops_its_link_as_a_fresh_pick_would(store: GraphStore) -> None:
    a = make_record("/p/a.jpg", axis(0))
    x = make_record("/p/x.jpg", angled(0.95, 1))
    z = make_record("/p/z.jpg", angled(0.9, 2))
    store.upsert([a, x, z])
    store.link([a, x, z], threshold=0.5, top_k=1)
    assert "/p/x.jpg" in {m.path for m in store.neighbours("/p/a.jpg")}  # a picked x
    # x moves a little away from a (0.92): below a's old bar (0.95) but still a's best pick
    store.upsert([make_record("/p/x.jpg", angled(0.92, 1))])
    store.link([make_record("/p/x.jpg", angled(0.92, 1))], threshold=0.5, top_k=1)
    assert "/p/x.jpg" in {m.path for m in store.neighbours("/p/a.jpg")}
    # x moves next to z (0.6 from a): a now picks z (0.9) and x picks z too, so nothing keeps a–x
    store.upsert([make_record("/p/x.jpg", angled(0.6, 2))])
    store.link([make_record("/p/x.jpg", angled(0.6, 2))], threshold=0.5, top_k=1)
    assert "/p/x.jpg" not in {m.path for m in store.neighbours("/p/a.jpg")}


# -- indexed_at ---------------------------------------------------------------------------


def indexed_at(store: GraphStore, path: str) -> float | None:
    stored = store.get(path)
    assert stored is not None
    return stored.indexed_at


def indexed_at_changes_only_when_the_embedding_is_written(store: GraphStore) -> None:
    store.upsert([make_record("/p/a.jpg", axis(0))])
    first = indexed_at(store, "/p/a.jpg")
    assert first is not None
    time.sleep(0.01)  # so that a new stamp would differ

    store.upsert([make_record("/p/a.jpg", axis(0), size=5, mtime_ns=7)])  # same embedding: a touched file
    store.update_file_states([FileState("/p/a.jpg", 6, 8)])
    store.link([make_record("/p/a.jpg", axis(0))], threshold=0.5, top_k=3)
    assert indexed_at(store, "/p/a.jpg") == first

    store.upsert([make_record("/p/a.jpg", angled(0.9, 1))])  # re-embedded
    second = indexed_at(store, "/p/a.jpg")
    assert second is not None and second > first


# -- links_at_least -----------------------------------------------------------------------


def linked_star(store: GraphStore) -> None:
    """anchor at 0.99, 0.95 and 0.85 from three images, which score 0.99·0.95 = 0.9405,
    0.99·0.85 = 0.8415 and 0.95·0.85 = 0.8075 with each other: six links at 0.8."""
    records = [make_record("/p/anchor.jpg", axis(0)), make_record("/p/99.jpg", angled(0.99, 1)),
               make_record("/p/95.jpg", angled(0.95, 2)), make_record("/p/85.jpg", angled(0.85, 3))]
    store.upsert(records)
    store.link(records, threshold=0.8, top_k=10)


def rounded(links: list[Link]) -> list[tuple[str, str, float]]:
    return sorted((link.a, link.b, round(link.score, 4)) for link in links)


def links_at_least_returns_each_link_at_or_above_the_threshold_once(store: GraphStore) -> None:
    linked_star(store)
    assert store.stats().links == 6

    assert rounded(list(store.links_at_least(0.92))) == [
        ("/p/95.jpg", "/p/99.jpg", 0.9405), ("/p/95.jpg", "/p/anchor.jpg", 0.95), ("/p/99.jpg", "/p/anchor.jpg", 0.99),
    ]
    everything = list(store.links_at_least(-1.0))
    assert len(everything) == 6 and all(link.a < link.b for link in everything)
    assert rounded(everything) == rounded(list(store.links_at_least(0.8)))
    assert list(store.links_at_least(0.995)) == []
    # The bar is inclusive: with a stored score as the threshold, that link is found.
    [strongest] = [link for link in everything if (link.a, link.b) == ("/p/99.jpg", "/p/anchor.jpg")]
    assert [(link.a, link.b) for link in store.links_at_least(strongest.score)] == [("/p/99.jpg", "/p/anchor.jpg")]


def links_at_least_pages_through_ties_without_losing_or_repeating_a_link(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import imgwatch.store.embedded.store as embedded_store
    import imgwatch.store.neo4j.store as neo4j_store

    for module in (embedded_store, neo4j_store):
        monkeypatch.setattr(module, "PAGE_SIZE", 4)
    # Seven exact copies: 21 links, all with the same score, so pages break inside a tie.
    copies = [make_record(f"/p/copy-{i}.jpg", axis(0)) for i in range(7)]
    others = [make_record(f"/p/other-{i}.jpg", v) for i, v in enumerate(random_unit_vectors(6, seed=3))]
    store.upsert(copies + others)
    store.link(copies + others, threshold=-1.0, top_k=6)

    found = list(store.links_at_least(0.999))

    assert len(found) == 21 == len({(link.a, link.b) for link in found})
    assert {p for link in found for p in (link.a, link.b)} == {r.path for r in copies}
    assert len(list(store.links_at_least(-1.0))) == store.stats().links


def links_at_least_refuses_a_threshold_that_is_not_a_cosine(store: GraphStore) -> None:
    for bad in (math.nan, 1.5, -2.0):
        with pytest.raises(StoreError, match="cosine"):
            list(store.links_at_least(bad))


def links_at_least_on_an_empty_store_finds_nothing(store: GraphStore) -> None:
    assert list(store.links_at_least(0.5)) == []


# -- content reuse and moves ---------------------------------------------------------------


def embeddings_by_hash_finds_the_stored_embedding_of_known_content_of_the_model(store: GraphStore) -> None:
    store.upsert([make_record("/p/a.jpg", angled(0.6, 1), sha256="h-a", width=33, height=44),
                  make_record("/p/copy-of-a.jpg", angled(0.6, 1), sha256="h-a", width=33, height=44),
                  make_record("/p/b.jpg", axis(2), sha256="h-b")])

    found = store.embeddings_by_hash(["h-a", "h-unknown", "h-a"], MODEL)

    assert set(found) == {"h-a"}
    assert (found["h-a"].width, found["h-a"].height) == (33, 44)
    np.testing.assert_allclose(found["h-a"].vector, angled(0.6, 1), atol=1e-6)
    assert found["h-a"].vector.dtype == np.float32
    assert store.embeddings_by_hash(["h-a", "h-b"], "another-model/v2") == {}
    assert store.embeddings_by_hash([], MODEL) == {}


def links_of(store: GraphStore) -> list[tuple[str, str, float]]:
    return rounded(list(store.links_at_least(-1.0)))


def renamed_links(links: list[tuple[str, str, float]], old: str, new: str) -> list[tuple[str, str, float]]:
    return sorted((*sorted(new if end == old else end for end in (a, b)), score) for a, b, score in links)


def rename_paths_keeps_the_node_its_embedding_file_state_and_links(store: GraphStore) -> None:
    linked_star(store)
    before, links = store.get("/p/anchor.jpg"), links_of(store)
    assert before is not None

    # "/q/..." sorts after every "/p/..." path: each of its links changes which end is the smaller.
    assert store.rename_paths([("/p/anchor.jpg", "/q/anchor.jpg")]) == 1

    assert store.get("/p/anchor.jpg") is None
    assert store.get("/q/anchor.jpg") == dataclasses.replace(before, path="/q/anchor.jpg")
    assert links_of(store) == renamed_links(links, "/p/anchor.jpg", "/q/anchor.jpg")
    assert all(link.a < link.b for link in store.links_at_least(-1.0))
    assert paths_and_scores(store.neighbours("/q/anchor.jpg")) == [
        ("/p/99.jpg", 0.99), ("/p/95.jpg", 0.95), ("/p/85.jpg", 0.85)]
    assert ("/q/anchor.jpg", 0.99) in paths_and_scores(store.neighbours("/p/99.jpg"))
    assert store.nearest(axis(0), 1)[0].path == "/q/anchor.jpg"
    assert [s.path for s in store.file_states(under="/q")] == ["/q/anchor.jpg"]
    # A relink after the move keeps one link per pair.
    store.link([make_record("/q/anchor.jpg", axis(0))], threshold=0.8, top_k=10)
    assert links_of(store) == renamed_links(links, "/p/anchor.jpg", "/q/anchor.jpg")

    # Applied again (a retried job), or for a path that is not stored: nothing happens.
    assert store.rename_paths([("/p/anchor.jpg", "/q/anchor.jpg"), ("/p/none.jpg", "/p/other.jpg")]) == 0
    assert store.stats().images == 4 and store.stats().links == 6


def a_moved_image_replaces_the_image_at_its_new_path(store: GraphStore) -> None:
    linked_star(store)
    moved = store.get("/p/99.jpg")

    assert store.rename_paths([("/p/99.jpg", "/p/95.jpg")]) == 1

    assert store.get("/p/99.jpg") is None
    assert store.get("/p/95.jpg") == dataclasses.replace(moved, path="/p/95.jpg")  # type: ignore[arg-type]
    assert (store.stats().images, store.stats().links) == (3, 3)  # the replaced image's links went with it
    assert paths_and_scores(store.neighbours("/p/95.jpg")) == [("/p/anchor.jpg", 0.99), ("/p/85.jpg", 0.8415)]
    assert store.nearest(angled(0.99, 1), 1)[0].path == "/p/95.jpg"  # it carries the moved image's embedding


def renames_apply_in_order_so_two_images_can_swap_paths(store: GraphStore) -> None:
    store.upsert([make_record("/p/a.jpg", axis(1), sha256="h-a"), make_record("/p/b.jpg", axis(2), sha256="h-b")])

    swapped = store.rename_paths([("/p/a.jpg", "/p/t.jpg"), ("/p/b.jpg", "/p/a.jpg"), ("/p/t.jpg", "/p/b.jpg")])

    assert swapped == 3
    assert {path: image.sha256 for path, image in store.get_many(["/p/a.jpg", "/p/b.jpg", "/p/t.jpg"]).items()} == {
        "/p/a.jpg": "h-b", "/p/b.jpg": "h-a"}
    assert store.nearest(axis(1), 1)[0].path == "/p/b.jpg"


def move_folder_moves_everything_below_it_and_nothing_beside_it(store: GraphStore) -> None:
    records = [make_record(path, vector) for path, vector in [
        ("/p/x/1.jpg", axis(0)), ("/p/x/sub/2.jpg", angled(0.99, 1)), ("/p/xy/3.jpg", angled(0.95, 2)),
        ("/p/x.jpg", angled(0.9, 3))]]
    store.upsert(records)
    store.link(records, threshold=0.8, top_k=10)
    links = links_of(store)

    assert store.move_folder("/p/x/", "/r/moved") == 2

    assert [s.path for s in store.file_states()] == ["/p/x.jpg", "/p/xy/3.jpg", "/r/moved/1.jpg", "/r/moved/sub/2.jpg"]
    expected = renamed_links(renamed_links(links, "/p/x/1.jpg", "/r/moved/1.jpg"),
                             "/p/x/sub/2.jpg", "/r/moved/sub/2.jpg")
    assert links_of(store) == expected
    assert store.move_folder("/p/x", "/r/moved") == 0  # again: nothing left to move
    assert store.move_folder("/r/moved/1.jpg", "/r/one.jpg") == 1  # a single file is a folder of one
    assert store.get("/r/one.jpg") is not None


def decisions_are_kept_by_content_replaced_and_forgotten(store: GraphStore) -> None:
    h1, h2, h3, h4 = ("1" * 64, "2" * 64, "3" * 64, "4" * 64)
    assert store.decisions_about([h1]) == []
    before = time.time()
    burst = store.record_decision("not_duplicates", [h1, h2, h3])
    kept = store.record_decision("keep", [h4, "5" * 64])

    [found] = store.decisions_about([h2, "9" * 64])
    assert found == burst and found.kind == "not_duplicates" and found.hashes == {h1, h2, h3} and found.keep is None
    assert before <= found.decided_at <= time.time()
    assert store.decisions_about([h1, h4]) == [burst, kept] and kept.keep == h4  # oldest first

    # A content is in one decision at most: a new one about it replaces the old one whole.
    again = store.record_decision("keep", [h3, h1])
    assert store.decisions_about([h1, h2, h3]) == [again] and again.keep == h3 and again.hashes == {h1, h3}

    assert store.forget_decisions([h3, "9" * 64]) == 1
    assert store.decisions_about([h1, h2, h3]) == [] and store.decisions_about([h4]) == [kept]
    assert store.forget_decisions([h1]) == 0
    with pytest.raises(ValueError, match="not_duplicates, keep"):
        store.record_decision("maybe", [h1])

# Every scenario above that takes only the store (the tie-paging one also needs monkeypatch).
SCENARIOS = [
    upsert_then_get_returns_the_node_facts,
    upsert_of_an_existing_path_replaces_it,
    update_file_states_changes_only_size_and_mtime,
    the_whole_file_signature_is_kept_read_back_and_updated,
    link_keeps_neighbours_above_threshold_up_to_top_k,
    links_are_undirected_and_stored_once,
    images_in_one_link_call_link_to_each_other,
    link_replaces_every_link_of_the_image_at_either_end,
    an_image_is_marked_linked_until_its_embedding_changes,
    relinking_an_image_keeps_the_links_its_neighbours_still_choose,
    link_with_nothing_above_threshold_clears_links,
    remove_deletes_the_node_and_its_links,
    file_states_under_a_directory_excludes_prefix_siblings,
    ensure_model_refuses_another_model_while_images_exist,
    ensure_model_switches_when_the_store_is_empty,
    the_weights_file_is_recorded_with_the_model_and_where_it_moved,
    switching_the_model_of_an_empty_store_forgets_the_old_weights_file,
    upserting_a_record_of_another_model_is_refused,
    a_neighbour_keeps_or_drops_its_link_as_a_fresh_pick_would,
    indexed_at_changes_only_when_the_embedding_is_written,
    links_at_least_returns_each_link_at_or_above_the_threshold_once,
    links_at_least_refuses_a_threshold_that_is_not_a_cosine,
    links_at_least_on_an_empty_store_finds_nothing,
    embeddings_by_hash_finds_the_stored_embedding_of_known_content_of_the_model,
    rename_paths_keeps_the_node_its_embedding_file_state_and_links,
    a_moved_image_replaces_the_image_at_its_new_path,
    renames_apply_in_order_so_two_images_can_swap_paths,
    move_folder_moves_everything_below_it_and_nothing_beside_it,
    decisions_are_kept_by_content_replaced_and_forgotten,
]
