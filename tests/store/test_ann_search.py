"""Searches through the HNSW index once the library is large: exact scores, deletions, rebuilds, processes.

A real store with the size threshold lowered to 500 images, real index files beside it,
a real second process; clustered vectors shaped like photo embeddings.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import imgwatch
from imgwatch.store import EmbeddedGraphStore
from imgwatch.store.embedded import ann_search
from imgwatch.store.embedded.vectors import SlotVectors
from tests.helpers import MODEL, make_record
from tests.helpers import clustered_unit_vectors as library_vectors

DIM = 256
IMAGES = 3000
THRESHOLD = 500
K = 10
SRC_DIR = str(Path(imgwatch.__file__).resolve().parents[1])
ENV = {**os.environ, "PYTHONPATH": SRC_DIR, "OPENBLAS_NUM_THREADS": "1"}

# Another process answering nearest() on the same store: one JSON line in, one out.
READER_SCRIPT = r"""
import json, sys
import numpy as np
from imgwatch.store import EmbeddedGraphStore

store = EmbeddedGraphStore(sys.argv[1], ann_min_images=int(sys.argv[2]))
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    matches = store.nearest(np.asarray(request["vector"], dtype=np.float32), request["k"])
    print(json.dumps({"matches": [[m.path, m.score] for m in matches], "index_revision": store.ann.index_revision,
                      "saves": store.ann.saves}), flush=True)
"""


def clustered_unit_vectors(count: int, seed: int, topics: int = 40) -> np.ndarray:
    return library_vectors(count, seed, topics, DIM, centre_seed=99)


def path_of(number: int) -> str:
    return f"/photos/{number:05d}.jpg"


def fill(store: EmbeddedGraphStore, vectors: np.ndarray, first: int = 0, batch: int = 1000) -> None:
    for start in range(0, len(vectors), batch):
        store.upsert([make_record(path_of(first + start + i), vector)
                      for i, vector in enumerate(vectors[start : start + batch])])


def indexed(store: EmbeddedGraphStore) -> int:
    """Let the store notice it needs an index, wait for the build, and return the index's revision."""
    store.nearest(np.ones(DIM, dtype=np.float32), 1)
    store.ann.wait_for_maintenance(60)
    store.nearest(np.ones(DIM, dtype=np.float32), 1)  # opens the saved index
    revision = store.ann.index_revision
    assert revision is not None
    return revision


def brute_force(library: dict[str, np.ndarray], query: np.ndarray, k: int) -> list[str]:
    paths = sorted(library)
    scores = np.stack([library[p] for p in paths]) @ query
    return [paths[i] for i in np.lexsort((np.arange(len(paths)), -scores))[:k]]


def recall(store: EmbeddedGraphStore, library: dict[str, np.ndarray], queries: np.ndarray) -> float:
    hits = 0
    for query in queries:
        found = store.nearest(query, K)
        for match in found:  # every score is the exact dot product of the stored vector
            assert match.score == pytest.approx(float(library[match.path] @ query), abs=1e-5)
        hits += len({m.path for m in found} & set(brute_force(library, query, K)))
    return hits / (K * len(queries))


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered_unit_vectors(IMAGES, seed=1)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return clustered_unit_vectors(60, seed=2)


@pytest.fixture
def ann_store(db_path: Path, vectors: np.ndarray) -> Iterator[EmbeddedGraphStore]:
    """An EmbeddedGraphStore holding ``vectors``, past the size (THRESHOLD) where searches go through the index."""
    opened = EmbeddedGraphStore(db_path, ann_min_images=THRESHOLD)
    opened.ensure_model(MODEL, DIM)
    fill(opened, vectors)
    try:
        yield opened
    finally:
        opened.close()


def library_of(vectors: np.ndarray, first: int = 0) -> dict[str, np.ndarray]:
    return {path_of(first + i): vector for i, vector in enumerate(vectors)}


def test_below_the_threshold_search_stays_exact_and_builds_nothing(db_path: Path, vectors: np.ndarray) -> None:
    with EmbeddedGraphStore(db_path, ann_min_images=len(vectors) + 1) as store:
        store.ensure_model(MODEL, DIM)
        fill(store, vectors)
        store.nearest(vectors[0], K)
        store.ann.wait_for_maintenance(10)
        assert store.ann.index_revision is None
        assert not store.ann.directory.exists()


def test_nearest_through_the_index_finds_the_exact_top_10_with_exact_scores(
    ann_store: EmbeddedGraphStore, vectors: np.ndarray, queries: np.ndarray
) -> None:
    indexed(ann_store)
    assert recall(ann_store, library_of(vectors), queries) >= 0.99
    assert ann_store.ann.untrusted <= len(queries) // 2  # the index answered most of them itself


def test_a_query_in_a_flat_neighbourhood_is_scanned_exactly_where_the_index_alone_misses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Photos with nothing in common (no topics), full-size embeddings: each query's ten best
    # are near-ties among thousands, where a graph walk picks arbitrarily.
    dim, rng = 2048, np.random.default_rng(3)
    flat = np.maximum(rng.standard_normal((5040, dim), dtype=np.float32), 0)
    flat /= np.linalg.norm(flat, axis=1, keepdims=True)
    stored, queries = flat[:5000], flat[5000:]
    library = library_of(stored)
    with EmbeddedGraphStore(tmp_path / "flat.sqlite3", ann_min_images=THRESHOLD) as store:
        store.ensure_model(MODEL, dim)
        fill(store, stored)
        store.nearest(queries[0], 1)
        store.ann.wait_for_maintenance(120)
        assert recall(store, library, queries) == 1.0
        assert store.ann.index_revision is not None and store.ann.untrusted == len(queries)

        monkeypatch.setattr(ann_search, "TRUSTED_FROM_SD", -np.inf)  # what the index alone answers
        assert recall(store, library, queries) < 0.99

        monkeypatch.undo()
        store.ann.untrusted = 0
        records = [make_record(path_of(i), stored[i]) for i in range(0, 5000, 50)]
        assert store.link(records, 0.9, 10) == 0  # the threshold is far above every score here:
        assert store.ann.untrusted == 0  # the index's answer stands, none of it is linked anyway


def test_writes_after_the_index_are_found_through_the_delta_and_deletions_never_returned(
    ann_store: EmbeddedGraphStore, vectors: np.ndarray, queries: np.ndarray
) -> None:
    revision = indexed(ann_store)
    library = library_of(vectors)
    added = clustered_unit_vectors(300, seed=3)
    fill(ann_store, added, first=IMAGES)
    library.update(library_of(added, first=IMAGES))
    removed = [path_of(i) for i in range(0, IMAGES, 10)]
    ann_store.remove(removed)
    for path in removed:
        del library[path]
    assert ann_store.ann.index_revision == revision  # 600 changes: below the bound, the index is not touched
    assert recall(ann_store, library, queries) >= 0.99
    assert ann_store.ann.untrusted <= len(queries) // 2
    for number in range(0, 300, 7):  # each new image finds itself
        assert ann_store.nearest(added[number], 1)[0].path == path_of(IMAGES + number)
    gone = set(removed)
    for number in range(0, IMAGES, 10):  # a deleted image's own vector does not bring it back
        assert not gone & {m.path for m in ann_store.nearest(vectors[number], K)}


def test_a_re_embedded_image_is_found_by_its_new_vector_only(
    ann_store: EmbeddedGraphStore, vectors: np.ndarray
) -> None:
    indexed(ann_store)
    moved_to = vectors[2000]
    ann_store.upsert([make_record(path_of(7), moved_to)])
    first = ann_store.nearest(moved_to, 2)
    assert {m.path for m in first} == {path_of(7), path_of(2000)}
    assert all(m.score == pytest.approx(1.0, abs=1e-5) for m in first)
    assert path_of(7) not in {m.path for m in ann_store.nearest(vectors[7], 3) if m.score > 0.9999}


def test_link_never_takes_candidates_from_the_index(
    tmp_path: Path, vectors: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A graph's answer is not exact (bench/RESULTS.md, issue 26): links scan, the index only serves nearest()."""
    records = [make_record(path_of(i), vector) for i, vector in enumerate(vectors)]
    rescored = []
    original = SlotVectors._rescored
    monkeypatch.setattr(SlotVectors, "_rescored", lambda *args: rescored.append(1) or original(*args))
    found = []
    for threshold in (THRESHOLD, IMAGES * 10):  # with an index, then without
        with EmbeddedGraphStore(tmp_path / f"{threshold}.sqlite3", ann_min_images=threshold,
                                compact_min_images=10**9) as store:
            store.ensure_model(MODEL, DIM)
            store.upsert(records[:2500])
            if threshold == THRESHOLD:
                indexed(store)
                rescored.clear()
            store.upsert(records[2500:])
            for start in range(0, IMAGES, 250):
                store.link(records[start : start + 250], 0.5, 5)
            found.append({(link.a, link.b): link.score for link in store.links_at_least(0.0)})
        assert rescored == []  # every batch scanned the vectors, none re-scored the graph's proposal
    with_index, without = found
    assert with_index.keys() == without.keys()


def test_a_deleted_index_directory_is_rebuilt_with_the_same_results(
    ann_store: EmbeddedGraphStore, vectors: np.ndarray, queries: np.ndarray
) -> None:
    indexed(ann_store)
    before = [ann_store.nearest(query, K) for query in queries[:20]]
    shutil.rmtree(ann_store.ann.directory)
    during = [ann_store.nearest(query, K) for query in queries[:20]]  # exact while it is rebuilt
    ann_store.ann.wait_for_maintenance(60)
    assert ann_store.ann.saves == 2
    after = [ann_store.nearest(query, K) for query in queries[:20]]
    assert ann_store.ann.index_revision is not None
    for one, two, three in zip(before, during, after, strict=True):
        assert [m.path for m in one] == [m.path for m in two] == [m.path for m in three]


def test_an_index_of_another_store_is_not_used_but_rebuilt(tmp_path: Path, ann_store: EmbeddedGraphStore,
                                                            vectors: np.ndarray, queries: np.ndarray) -> None:
    indexed(ann_store)
    other_path = tmp_path / "other.sqlite3"
    with EmbeddedGraphStore(other_path, ann_min_images=THRESHOLD) as other:
        other.ensure_model(MODEL, DIM)
        other_vectors = clustered_unit_vectors(IMAGES, seed=5)
        fill(other, other_vectors)
        shutil.copytree(ann_store.ann.directory, other.ann.directory)  # the first store's index, put beside it
        indexed(other)
        assert other.ann.saves == 1  # it built its own
        assert recall(other, library_of(other_vectors), queries[:20]) >= 0.99


def test_a_second_process_shares_the_saved_index_and_sees_the_writes_after_it(
    ann_store: EmbeddedGraphStore, db_path: Path, vectors: np.ndarray
) -> None:
    revision = indexed(ann_store)
    reader = subprocess.Popen([sys.executable, "-c", READER_SCRIPT, str(db_path), str(THRESHOLD)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)
    assert reader.stdin is not None and reader.stdout is not None

    def ask(vector: np.ndarray, k: int = K) -> dict[str, object]:
        assert reader.stdin is not None and reader.stdout is not None
        reader.stdin.write(json.dumps({"vector": vector.tolist(), "k": k}) + "\n")
        reader.stdin.flush()
        answer: dict[str, object] = json.loads(reader.stdout.readline())
        return answer

    try:
        assert json.loads(reader.stdout.readline()) == {"ready": True}
        answer = ask(vectors[5])
        assert answer["index_revision"] == revision and answer["saves"] == 0  # opened, not built
        assert answer["matches"][0][0] == path_of(5)  # type: ignore[index]
        fresh = clustered_unit_vectors(50, seed=4)
        fill(ann_store, fresh, first=IMAGES)
        ann_store.remove([path_of(5)])
        for number in (0, 17, 49):
            answer = ask(fresh[number], 1)
            assert answer["matches"][0][0] == path_of(IMAGES + number)  # type: ignore[index]
            assert answer["index_revision"] == revision  # through the delta
        assert path_of(5) not in {m[0] for m in ask(vectors[5])["matches"]}  # type: ignore[attr-defined]
    finally:
        reader.stdin.close()
        reader.wait(timeout=30)


def test_the_background_build_runs_at_the_lowest_priority_and_nothing_else_does(
    ann_store: EmbeddedGraphStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first ingest's links must not slow down for the index: only the maintenance thread yields."""
    seen = []
    maintain = ann_search.AnnSearch._maintain

    def observed(self: ann_search.AnnSearch, dim: int) -> bool:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return maintain(self, dim)

    monkeypatch.setattr(ann_search.AnnSearch, "_maintain", observed)
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    indexed(ann_store)
    assert seen == [ann_search.IDLE_NICENESS]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before < ann_search.IDLE_NICENESS


def test_a_workers_links_alone_bring_the_index_forward_for_searches(db_path: Path, vectors: np.ndarray) -> None:
    """Links never search the index, but a worker is what writes: its links start the build nearest() needs."""
    records = [make_record(path_of(i), vector) for i, vector in enumerate(vectors)]
    with EmbeddedGraphStore(db_path, ann_min_images=THRESHOLD) as worker:
        worker.ensure_model(MODEL, DIM)
        worker.upsert(records)
        worker.link(records[:10], 0.5, 5)
        worker.ann.wait_for_maintenance(60)
        assert worker.ann.saves == 1
