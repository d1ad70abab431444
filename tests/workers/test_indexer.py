"""Level-triggered indexing with the real model, a real store and a real queue."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from imgwatch.embedding import Embedder, EmbeddingModel, EmbedResult
from imgwatch.embedding.embedder import ReuseLookup
from imgwatch.files import PathFilter
from imgwatch.store import GraphStore, ImageRecord
from imgwatch.store.neo4j import cypher
from imgwatch.workers.indexer import Indexer, LinkPolicy
from imgwatch.workqueue import FailureLedger
from tests.helpers import PHOTO_NAMES
from tests.store.neo4j_stand_in import fake_store


@pytest.fixture
def requeued() -> list[list[str]]:
    """The batches the indexer put back on the queue."""
    return []


@pytest.fixture
def make_indexer(
    random_model: EmbeddingModel, store: GraphStore, failures: FailureLedger, requeued: list[list[str]],
    tmp_path: Path,
) -> Iterator[Callable[[type[Embedder]], Indexer]]:
    embedders: list[Embedder] = []

    def make(embedder_class: type[Embedder] = Embedder) -> Indexer:
        embedder = embedder_class(random_model, batch_size=4, decode_threads=2)
        embedders.append(embedder)
        store.ensure_model(random_model.identity, random_model.dim)
        # Random weights put every pair near cosine 0.998, so a threshold of 0 links by rank alone.
        return Indexer(embedder, store, failures, lambda paths: requeued.append(list(paths)),
                       LinkPolicy(threshold=0.0, top_k=2), PathFilter.create(["jpg", "png"], [".*"]),
                       [str(tmp_path / "photos")])

    yield make
    for embedder in embedders:
        embedder.close()


@pytest.fixture
def indexer(make_indexer: Callable[[type[Embedder]], Indexer]) -> Indexer:
    return make_indexer(Embedder)


def test_new_files_are_embedded_stored_and_linked_within_their_batch(
    indexer: Indexer, store: GraphStore, tmp_path: Path, write_photo: Callable[..., Path]
) -> None:
    root = tmp_path / "photos"
    paths = [str(write_photo(root / f"{name}.jpg", name)) for name in ["astronaut", "coffee", "chelsea"]]
    outcome = indexer.index(paths)
    assert sorted(outcome.indexed) == sorted(paths)
    assert store.stats().images == 3
    for path in paths:
        neighbours = store.neighbours(path)
        assert neighbours and {n.path for n in neighbours} <= set(paths) - {path}
    stored = store.get(paths[0])
    assert stored is not None and (stored.width, stored.height) == (512, 512)
    assert stored.model == indexer.embedder.identity


def test_unchanged_files_are_skipped_and_touched_ones_are_not_reembedded(
    indexer: Indexer, store: GraphStore, tmp_path: Path, write_photo: Callable[..., Path]
) -> None:
    path = str(write_photo(tmp_path / "photos" / "a.jpg", "coffee"))
    indexer.index([path])
    assert indexer.index([path]).unchanged == [path]
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # mtime moved, content identical
    outcome = indexer.index([path])
    assert outcome.unchanged == [path] and outcome.indexed == []
    stored = store.get(path)
    assert stored is not None and stored.mtime_ns == 1_000_000_000


def test_changed_content_is_reembedded(
    indexer: Indexer, store: GraphStore, tmp_path: Path, write_photo: Callable[..., Path]
) -> None:
    path = tmp_path / "photos" / "a.jpg"
    write_photo(path, "coffee")
    indexer.index([str(path)])
    before = store.get(str(path))
    write_photo(path, "rocket")
    assert indexer.index([str(path)]).indexed == [str(path)]
    after = store.get(str(path))
    assert before is not None and after is not None and after.sha256 != before.sha256


def test_missing_and_excluded_paths_are_removed_from_the_store(
    indexer: Indexer, store: GraphStore, tmp_path: Path, write_photo: Callable[..., Path]
) -> None:
    root = tmp_path / "photos"
    keep = str(write_photo(root / "keep.jpg", "coffee"))
    doomed = str(write_photo(root / "doomed.jpg", "rocket"))
    indexer.index([keep, doomed])
    os.remove(doomed)
    outcome = indexer.index([doomed, str(root / "never-existed.jpg")])
    assert doomed in outcome.removed
    assert store.get(doomed) is None and store.get(keep) is not None
    assert all(n.path != doomed for n in store.neighbours(keep))
    hidden = str(write_photo(root / ".hidden" / "x.jpg", "astronaut"))
    assert indexer.index([hidden]).removed == [hidden]


def test_bad_files_fail_alone_with_a_reason_and_are_cleared_once_fixed(
    indexer: Indexer, store: GraphStore, failures: FailureLedger, tmp_path: Path,
    write_photo: Callable[..., Path],
) -> None:
    root = tmp_path / "photos"
    good = str(write_photo(root / "good.jpg", "chelsea"))
    empty = root / "empty.jpg"
    empty.write_bytes(b"")
    text = root / "text.png"
    text.write_text("this is not a picture")
    truncated = root / "truncated.jpg"
    truncated.write_bytes(Path(good).read_bytes()[:2000])
    outcome = indexer.index([str(empty), good, str(text), str(truncated)])
    assert outcome.indexed == [good]
    assert set(outcome.failed) == {str(empty), str(text), str(truncated)}
    recorded = {f.path: f for f in failures.failed_files()}
    assert set(recorded) == {str(empty), str(text), str(truncated)}
    assert str(truncated) in recorded[str(truncated)].reason
    assert recorded[str(empty)].size == 0
    write_photo(truncated, "rocket")  # replaced with a complete copy
    assert indexer.index([str(truncated)]).indexed == [str(truncated)]
    assert str(truncated) not in {f.path for f in failures.failed_files()}


def test_a_file_name_that_is_not_utf8_fails_alone_with_a_clear_reason(
    indexer: Indexer, store: GraphStore, failures: FailureLedger, tmp_path: Path,
    write_photo: Callable[..., Path],
) -> None:
    root = tmp_path / "photos"
    good = str(write_photo(root / "good.jpg", "coffee"))
    odd = os.fsdecode(os.fsencode(str(root)) + b"/caf\xe9.jpg")  # Latin-1 name on a UTF-8 system
    with open(os.fsencode(odd), "wb") as handle:
        handle.write(Path(good).read_bytes())
    outcome = indexer.index([odd, good])
    assert outcome.indexed == [good]
    assert "not valid UTF-8" in outcome.failed[odd]
    assert [f.path for f in failures.failed_files()] == [odd]
    failures.clear([odd])
    assert failures.failed_files() == []


def test_an_image_left_unlinked_by_an_interrupted_job_is_linked_on_retry(
    indexer: Indexer, store: GraphStore, tmp_path: Path, write_photo: Callable[..., Path]
) -> None:
    root = tmp_path / "photos"
    paths = [str(write_photo(root / f"{name}.jpg", name)) for name in ["astronaut", "coffee"]]
    indexer.index(paths)
    # A job that stopped between upsert and link: same facts stored, links gone, flag down.
    stored = {p: store.get(p) for p in paths}
    vectors = {r.facts.path: r.vector for r in indexer.embedder.embed_files(paths)}  # type: ignore[union-attr]
    store.remove(paths)
    store.upsert([ImageRecord(p, s.sha256, s.size, s.mtime_ns, s.width, s.height, s.model, vectors[p])
                  for p, s in stored.items() if s is not None])
    assert store.stats().links == 0
    outcome = indexer.index(paths)
    assert sorted(outcome.indexed) == sorted(paths)
    assert store.stats().links == 1 and all(store.get(p).linked for p in paths)  # type: ignore[union-attr]


class FileChangedWhileEmbedding(Embedder):
    """Each file changes right after it is read, as when a copy overwrites it meanwhile."""

    def embed_files(
        self, paths: Sequence[str], known_sha256: Mapping[str, str] | None = None, reuse: ReuseLookup | None = None,
    ) -> Iterator[EmbedResult]:
        yield from super().embed_files(paths, known_sha256, reuse)
        for path in paths:
            os.utime(path, ns=(2_000_000_000, 2_000_000_000))


def test_a_file_that_changed_while_it_was_embedded_is_requeued(
    make_indexer: Callable[[type[Embedder]], Indexer], indexer: Indexer, requeued: list[list[str]],
    tmp_path: Path, write_photo: Callable[..., Path],
) -> None:
    root = tmp_path / "photos"
    steady = str(write_photo(root / "steady.jpg", "coffee"))
    assert indexer.index([steady]).indexed == [steady]
    assert requeued == []
    changing = str(write_photo(root / "changing.jpg", "rocket"))
    outcome = make_indexer(FileChangedWhileEmbedding).index([changing])
    assert outcome.indexed == [changing]  # stored as read; the requeued job stores the newer state
    assert requeued == [[changing]]


def test_links_are_followed_only_within_the_roots_and_a_refused_path_is_never_looked_at(
    indexer: Indexer, store: GraphStore, failures: FailureLedger, tmp_path: Path,
    write_photo: Callable[..., Path],
) -> None:
    root, elsewhere = tmp_path / "photos", tmp_path / "elsewhere"
    inside = str(write_photo(root / "album" / "inside.jpg", "coffee"))
    secret = write_photo(elsewhere / "secret.jpg", "rocket")
    (root / "to-inside.jpg").symlink_to(inside)
    (root / "retargeted.jpg").symlink_to(inside)
    (root / "linked-folder").symlink_to(elsewhere)
    assert sorted(indexer.index([inside, str(root / "to-inside.jpg"), str(root / "retargeted.jpg")]).indexed) == \
        sorted([inside, str(root / "to-inside.jpg"), str(root / "retargeted.jpg")])

    (root / "retargeted.jpg").unlink()
    (root / "retargeted.jpg").symlink_to(secret)  # an indexed link now leads outside
    (root / "to-secret.jpg").symlink_to(secret)
    refused = [str(root / "to-secret.jpg"), str(root / "linked-folder" / "secret.jpg"), str(root / "retargeted.jpg")]
    outcome = indexer.index(refused)

    assert outcome.indexed == [] and set(outcome.failed) == set(refused)
    assert all("leading outside the watched folders" in outcome.failed[path] for path in refused)
    assert store.get(str(root / "retargeted.jpg")) is None  # its old node goes
    assert store.get(inside) is not None
    recorded = {f.path: f for f in failures.failed_files()}
    assert all((recorded[path].size, recorded[path].mtime_ns) == (None, None) for path in refused)


def test_a_path_outside_the_roots_is_refused_without_being_stat(
    indexer: Indexer, failures: FailureLedger, tmp_path: Path, write_photo: Callable[..., Path],
) -> None:
    existing = str(write_photo(tmp_path / "elsewhere" / "exists.jpg", "coffee"))
    missing = str(tmp_path / "elsewhere" / "missing.jpg")
    outcome = indexer.index([existing, missing])
    assert set(outcome.failed) == {existing, missing}
    recorded = {f.path: f for f in failures.failed_files()}
    # Whoever reads the ledger cannot tell which of the two exists.
    assert all((recorded[path].size, recorded[path].mtime_ns) == (None, None) for path in (existing, missing))
    assert outcome.failed[existing].replace("exists", "missing") == outcome.failed[missing]


def test_a_file_rewritten_with_its_old_size_and_mtime_is_reembedded(
    indexer: Indexer, store: GraphStore, tmp_path: Path, photo_arrays: dict[str, object],
) -> None:
    from PIL import Image

    path = tmp_path / "photos" / "a.png"
    path.parent.mkdir(parents=True)

    def save(name: str) -> None:  # uncompressed: every 300x200 RGB photo has the same size
        Image.fromarray(photo_arrays[name]).convert("RGB").resize((300, 200)).save(path, compress_level=0)  # type: ignore[arg-type]

    save("coffee")
    indexer.index([str(path)])
    before = store.get(str(path))
    assert before is not None
    old = path.stat()
    save("rocket")
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))  # the mtime set back, as `touch -r` or a restore does
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.size, before.mtime_ns)

    outcome = indexer.index([str(path)])

    after = store.get(str(path))
    assert outcome.indexed == [str(path)]
    assert after is not None and after.sha256 != before.sha256


def test_a_job_sends_neo4j_as_many_round_trips_whatever_its_number_of_files(
    random_model: EmbeddingModel, failures: FailureLedger, tmp_path: Path, write_photo: Callable[..., Path],
) -> None:
    """Content lookups too go to the server once per job (one UNWIND over the job's hashes), not once a file."""
    store, server = fake_store()
    store.ensure_model(random_model.identity, random_model.dim)
    root = tmp_path / "photos"
    two = [str(write_photo(root / f"{name}.jpg", name)) for name in PHOTO_NAMES[:2]]
    six = [str(write_photo(root / f"{name}.png", name)) for name in PHOTO_NAMES[2:]]
    copies = [str(shutil.copyfile(path, root / f"copy-{os.path.basename(path)}")) for path in six]
    sent: dict[str, tuple[int, int]] = {}
    with Embedder(random_model, batch_size=4, decode_threads=2) as embedder:
        indexer = Indexer(embedder, store, failures, lambda paths: None, LinkPolicy(threshold=0.0, top_k=2),
                          PathFilter.create(["jpg", "png"], [".*"]), [str(root)])
        for job, paths in {"two new": two, "six new": six, "six copies": copies}.items():
            server.forget_sent()
            outcome = indexer.index(paths)
            sent[job] = server.round_trips(), server.statements().count(cypher.EMBEDDINGS_BY_HASH)

    assert sent["two new"] == sent["six new"] == sent["six copies"]
    assert sent["six copies"][1] == 1
    assert sorted(outcome.reused) == sorted(copies)  # each copy got its original's embedding, as before
    for original, copy in zip(six, copies, strict=True):
        np.testing.assert_array_equal(server.images[copy]["embedding"], server.images[original]["embedding"])
