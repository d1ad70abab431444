"""The HNSW candidate index: recall after exact re-score, removals, saved files and their checks.

Real usearch on clustered 2048-d unit vectors shaped like photo embeddings (ReLU'd, a
topic each, near-duplicates among them): the 8-bit graph's own order is approximate, the
exact re-score of its candidates must still find the true top 10.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imgwatch.store.embedded import ann
from imgwatch.store.embedded.ann import (
    CURRENT_FILE,
    HnswIndex,
    IndexFileUnusable,
    candidate_count,
    read_metadata,
)
from tests.helpers import clustered_unit_vectors as library_vectors

DIM = 2048
IMAGES = 3000
QUERIES = 100
K = 10


def clustered_unit_vectors(count: int, seed: int, topics: int = 60) -> np.ndarray:
    return library_vectors(count, seed, topics, DIM, centre_seed=1234)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    """The library's vectors (IMAGES of them)."""
    return clustered_unit_vectors(IMAGES, seed=1)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return clustered_unit_vectors(QUERIES, seed=2)


@pytest.fixture(scope="module")
def built(vectors: np.ndarray) -> HnswIndex:
    """The library under ids 1000.. (ids need not be row numbers), built in chunks."""
    chunks = ((np.arange(start, start + 500) + 1000, vectors[start : start + 500]) for start in range(0, IMAGES, 500))
    return HnswIndex.build(DIM, chunks, revision=7)


def exact_top_k(library: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    scores = library @ query
    order = np.lexsort((ids, -scores))[:k]
    return ids[order].tolist()


def rescored_top_k(library: np.ndarray, candidates: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    """What the store does with candidates: exact float32 scores, best first, ties by id."""
    rows = candidates - 1000
    return exact_top_k(library[rows], candidates, query, k)


def recall_at_k(index: HnswIndex, library: np.ndarray, ids: np.ndarray, queries: np.ndarray) -> float:
    found = index.candidates(queries, candidate_count(K))
    hits = 0
    for query, candidates in zip(queries, found, strict=True):
        assert len(candidates) == candidate_count(K)
        truth = set(exact_top_k(library[ids - 1000], ids, query, K))
        hits += len(truth & set(rescored_top_k(library, candidates, query, K)))
    return hits / (K * len(queries))


def test_recall_after_exact_rescore(built: HnswIndex, vectors: np.ndarray, queries: np.ndarray) -> None:
    assert len(built) == IMAGES and built.revision == 7
    assert recall_at_k(built, vectors, np.arange(IMAGES) + 1000, queries) >= 0.99


def test_exclude_drops_ids_and_still_fills_the_count(built: HnswIndex, vectors: np.ndarray) -> None:
    own_ids = [1000 + row for row in range(5)]
    found = built.candidates(vectors[:5], 12, exclude=[{image_id} for image_id in own_ids])
    for own, candidates in zip(own_ids, found, strict=True):
        assert own not in candidates.tolist() and len(candidates) == 12
    plain = built.candidates(vectors[:1], 12)[0]
    assert plain[0] == 1000  # a stored vector finds itself first
    with pytest.raises(ValueError):
        built.candidates(vectors[:2], 5, exclude=[set()])


def test_removed_ids_are_never_returned(vectors: np.ndarray, queries: np.ndarray) -> None:
    index = HnswIndex.build(DIM, [(np.arange(1000, 1000 + 1500), vectors[:1500])], revision=1)
    # Remove exactly what the queries want most: every query's true top 10.
    wanted = {i for q in queries for i in exact_top_k(vectors[:1500], np.arange(1000, 2500), q, K)}
    assert index.remove([*wanted, 99_999_999]) == len(wanted)  # an unknown id is ignored
    assert index.remove(wanted) == 0
    assert len(index) == 1500 - len(wanted)
    for candidates in index.candidates(queries, 60):
        assert not wanted & set(candidates.tolist())
    assert all(image_id not in index for image_id in wanted)
    # A removed id can come back (a file restored), with its new vector.
    back = next(iter(wanted))
    index.add([back], vectors[2000:2001])
    assert back in index and index.candidates(vectors[2000], 1)[0].tolist() == [back]


def test_add_replaces_the_vector_of_an_id(vectors: np.ndarray) -> None:
    index = HnswIndex(DIM)
    index.add(np.arange(100), vectors[:100])
    index.add([5, 5], vectors[200:202])  # the last of a repeated id wins
    assert len(index) == 100
    assert index.candidates(vectors[201], 1)[0].tolist() == [5]
    assert 5 not in index.candidates(vectors[5], 3, exclude=[set()])[0].tolist()[:1]


def test_empty_index_and_empty_queries() -> None:
    index = HnswIndex(DIM)
    assert [len(c) for c in index.candidates(np.zeros((3, DIM), np.float32) + 0.02, 10)] == [0, 0, 0]
    assert index.candidates(np.zeros((0, DIM), np.float32), 10) == []
    index.add([], np.zeros((0, DIM), np.float32))
    assert index.remove([]) == 0


def test_save_then_view_from_another_process(built: HnswIndex, queries: np.ndarray, tmp_path: Path) -> None:
    directory = tmp_path / "ann"
    data_path = built.save(directory)
    expected = [c.tolist() for c in built.candidates(queries[:20], candidate_count(K))]
    np.save(tmp_path / "queries.npy", queries[:20])
    code = (
        "import sys, json, numpy as np\n"
        "from imgwatch.store.embedded.ann import HnswIndex, candidate_count\n"
        f"index = HnswIndex.open(sys.argv[1], {DIM})\n"
        "assert index.read_only\n"
        "print(json.dumps({'revision': index.revision, 'count': len(index), 'candidates': "
        "[c.tolist() for c in index.candidates(np.load(sys.argv[2]), candidate_count(10))]}))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code, str(directory), str(tmp_path / "queries.npy")],
                               capture_output=True, text=True, check=True)
    answer = json.loads(completed.stdout)
    assert answer == {"revision": 7, "count": IMAGES, "candidates": expected}
    view = HnswIndex.open(directory, DIM)
    with pytest.raises(PermissionError):
        view.add([1], queries[:1])
    with pytest.raises(PermissionError):
        view.remove([1000])
    with pytest.raises(PermissionError):
        view.save(directory)
    # A newer generation replaces the file name in current.json and unlinks the old file;
    # the view opened before keeps answering from its mapping.
    writable = HnswIndex.open(directory, DIM, view=False)
    writable.remove([1000])
    writable.revision = 8
    new_path = writable.save(directory)
    assert new_path != data_path and not data_path.exists()
    assert [c.tolist() for c in view.candidates(queries[:20], candidate_count(K))] == expected
    reopened = HnswIndex.open(directory, DIM)
    assert reopened.revision == 8 and len(reopened) == IMAGES - 1 and 1000 not in reopened
    assert sorted(p.name for p in directory.iterdir()) == sorted([CURRENT_FILE, new_path.name])


def test_unusable_files_are_detected(vectors: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(IndexFileUnusable, match="missing"):
        HnswIndex.open(tmp_path / "nothing-here", DIM)
    directory = tmp_path / "ann"
    index = HnswIndex(DIM, revision=3)
    index.add(np.arange(200), vectors[:200])
    data_path = index.save(directory)
    current = directory / CURRENT_FILE
    good_metadata, good_data = current.read_text(), data_path.read_bytes()

    def reset() -> None:
        current.write_text(good_metadata)
        data_path.write_bytes(good_data)

    def damaged(match: str) -> None:
        with pytest.raises(IndexFileUnusable, match=match):
            HnswIndex.open(directory, DIM)
        with pytest.raises(IndexFileUnusable, match=match):
            HnswIndex.open(directory, DIM, view=False)
        reset()

    assert len(HnswIndex.open(directory, DIM)) == 200
    with pytest.raises(IndexFileUnusable, match="dim"):
        HnswIndex.open(directory, 512)  # another model's embeddings
    current.write_text("{ not json")
    damaged("unreadable")
    current.write_text(json.dumps({**json.loads(good_metadata), "format": 999}))
    damaged("format")
    current.write_text(json.dumps({**json.loads(good_metadata), "dtype": "f16"}))
    damaged("dtype")
    current.write_text(json.dumps({**json.loads(good_metadata), "file": "../elsewhere"}))
    damaged("does not describe")
    data_path.write_bytes(good_data[: len(good_data) // 2])  # truncated: must not reach the mmap
    damaged("bytes")
    data_path.write_bytes(b"\0" * len(good_data))  # same size, garbage
    damaged(str(data_path.name))
    data_path.unlink()
    damaged("missing")
    assert read_metadata(directory)["revision"] == 3


def test_incremental_add_after_load_recalls_like_a_full_build(
    built: HnswIndex, vectors: np.ndarray, queries: np.ndarray, tmp_path: Path
) -> None:
    half = IMAGES // 2
    first = HnswIndex.build(DIM, [(np.arange(half) + 1000, vectors[:half])], revision=1)
    first.save(tmp_path / "ann")
    loaded = HnswIndex.open(tmp_path / "ann", DIM, view=False)
    assert not loaded.read_only and loaded.revision == 1
    # what usearch's restore() does not keep by itself: later inserts are as careful as the build's
    assert (loaded._index.connectivity, loaded._index.expansion_add) == (ann.CONNECTIVITY, ann.EXPANSION_ADD)
    for start in range(half, IMAGES, 32):  # worker-sized batches
        loaded.add(np.arange(start, min(start + 32, IMAGES)) + 1000, vectors[start : start + 32])
    assert len(loaded) == IMAGES
    ids = np.arange(IMAGES) + 1000
    incremental, full = recall_at_k(loaded, vectors, ids, queries), recall_at_k(built, vectors, ids, queries)
    assert incremental >= 0.99 and abs(incremental - full) <= 0.01


def test_a_process_can_load_the_index_module_and_then_onnxruntime() -> None:
    # A worker opens its store (this module) and then loads the ONNX Runtime engine.
    code = "import imgwatch.store.embedded.ann, onnxruntime; print('both loaded')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and "both loaded" in result.stdout, (result.returncode, result.stderr[-2000:])
