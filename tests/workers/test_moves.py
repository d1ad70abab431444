"""Moves and copies cost no model time: real queue, real watchdog, real files, real ResNet50 code.

Forward passes are counted by a model whose ``embed`` counts the images it is given
before running the real network (:class:`CountingModel`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from imgwatch.config import Config
from imgwatch.daemon.scan import reconcile_and_enqueue
from imgwatch.daemon.service import Daemon
from imgwatch.embedding import Embedder, EmbeddingModel
from imgwatch.files import PathFilter
from imgwatch.store import GraphStore, open_store
from imgwatch.workers.indexer import Indexer, LinkPolicy
from imgwatch.workers.jobs import install_indexer
from imgwatch.workers.worker import ImgwatchWorker
from imgwatch.workqueue import FailureLedger, WorkQueue
from tests.helpers import wait_until

FOLDER_PHOTOS = 20


class CountingModel(EmbeddingModel):
    """The given model, counting the images that go through its network."""

    def __init__(self, model: EmbeddingModel) -> None:  # noqa: D107 - shares the loaded network, no reload
        self.__dict__.update(model.__dict__)
        self.images_embedded = 0

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        self.images_embedded += int(batch.shape[0])
        return super().embed(batch)


@pytest.fixture
def counting_model(calibrated_model: EmbeddingModel) -> CountingModel:
    return CountingModel(calibrated_model)


@pytest.fixture
def counting_indexer(config: Config, counting_model: CountingModel, store: GraphStore, work_queue: WorkQueue,
                     root: Path) -> Iterator[Indexer]:
    """The worker's indexer on ``counting_model``, sending follow-ups through the real queue."""
    config.general.roots = [str(root)]
    store.ensure_model(counting_model.identity, counting_model.dim)
    embedder = Embedder(counting_model, batch_size=8, decode_threads=2)
    indexer = Indexer(embedder, store, FailureLedger.for_queue(work_queue),
                      lambda paths: work_queue.enqueue_paths(paths, batch_size=len(paths)),
                      LinkPolicy(threshold=0.0, top_k=3),  # threshold 0: linked by rank alone
                      PathFilter.create(["jpg", "png"], [".*"]), [str(root)])
    install_indexer(indexer)
    yield indexer
    install_indexer(None)
    embedder.close()


class BurstWorker(ImgwatchWorker):
    """imgwatch's worker without RQ's remote-command channel: its listener thread may outlive a
    busy test by seconds (RQ joins it for 1 s, then closes its connection under it)."""

    def subscribe(self) -> None:
        pass

    def unsubscribe(self) -> None:
        pass


def drain(work_queue: WorkQueue) -> None:
    """Run every queued job (follow-ups included) in this process with a real imgwatch worker."""
    BurstWorker(work_queue, f"test-{uuid.uuid4().hex[:8]}").work(burst=True, logging_level="WARNING")
    assert work_queue.rq_queue.failed_job_registry.count == 0


def variants(photo_arrays: dict[str, object]) -> Iterator[np.ndarray]:
    """Distinct real photos: every sample photo, then crops of them."""
    arrays = [np.asarray(a) for a in photo_arrays.values()]
    yield from arrays
    for step in range(1, 10):
        for array in arrays:
            h, w = array.shape[:2]
            yield array[step * h // 40:, : w - step * w // 30]


def write_photos(photo_arrays: dict[str, object], paths: list[Path]) -> None:
    from PIL import Image

    for path, array in zip(paths, variants(photo_arrays), strict=False):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).resize((96, 96)).save(path, quality=90)


def all_links(store: GraphStore) -> list[tuple[str, str, float]]:
    return sorted((link.a, link.b, link.score) for link in store.links_at_least(-1.0))


def embedding_of(store: GraphStore, path: str) -> np.ndarray:
    [image] = [e for e in store.export_images(path[:-1], 10) if e.record.path == path]
    return image.record.embedding


@pytest.fixture
def start_daemon_with_own_reader(config: Config, work_queue: WorkQueue) -> Iterator[Callable[[], Daemon]]:
    """start(): a Daemon thread on a store connection of its own, stopped after the test."""
    stops: list[tuple[threading.Event, threading.Thread, GraphStore]] = []

    def start() -> Daemon:
        config.watch.settle_seconds = 0.2
        reader = open_store(config)  # the daemon only reads the store, as its own process would
        daemon = Daemon(config, reader, FailureLedger.for_queue(work_queue), work_queue)
        stop = threading.Event()
        thread = threading.Thread(target=daemon.run, args=(stop,))
        thread.start()
        stops.append((stop, thread, reader))
        assert daemon.watching.wait(10)
        return daemon

    yield start
    for stop, thread, reader in stops:
        stop.set()
        thread.join(timeout=30)
        reader.close()


def test_a_watched_folder_move_is_a_rename_with_no_forward_pass_and_the_same_links(
    counting_indexer: Indexer, store: GraphStore, counting_model: CountingModel, work_queue: WorkQueue, root: Path,
    photo_arrays: dict[str, object], start_daemon_with_own_reader: Callable[[], Daemon],
) -> None:
    album = root / "album"
    paths = [album / f"{i:02d}.jpg" for i in range(FOLDER_PHOTOS)] + [root / f"other-{i}.jpg" for i in range(6)]
    write_photos(photo_arrays, paths)
    counting_indexer.index([str(p) for p in paths])
    links_before = all_links(store)
    first_before = store.get(str(album / "00.jpg"))
    inside = [link for link in links_before if "/album/" in link[0] and "/album/" in link[1]]
    across = [link for link in links_before if ("/album/" in link[0]) != ("/album/" in link[1])]
    assert inside and across  # linked to each other and to the others
    start_daemon_with_own_reader()
    wait_until(lambda: work_queue.rq_queue.count == 0, timeout=5)  # its start rescan: nothing changed
    drain(work_queue)
    counting_model.images_embedded = 0

    moved = root / "2024" / "summer"
    moved.parent.mkdir()
    time.sleep(1.0)  # inotify watches a new folder once its creation is read: only then can it see a move in
    album.rename(moved)

    assert wait_until(lambda: work_queue.rq_queue.count > 0, timeout=10), "the move was not enqueued"
    assert wait_until(lambda: (drain(work_queue), store.get(str(moved / "00.jpg")))[1] is not None, timeout=20)
    drain(work_queue)  # the follow-ups: every path at both ends, unchanged
    assert counting_model.images_embedded == 0
    first = store.get(str(moved / "00.jpg"))  # the same node, renamed (a re-upsert would stamp a new indexed_at)
    assert first is not None and first_before is not None and first.indexed_at == first_before.indexed_at
    assert [s.path for s in store.file_states(under=str(album))] == []
    assert len(list(store.file_states(under=str(moved)))) == FOLDER_PHOTOS
    renamed = {str(album / p.name): str(moved / p.name) for p in paths if p.parent == album}
    expected = sorted((*sorted((renamed.get(a, a), renamed.get(b, b))), score) for a, b, score in links_before)
    assert all_links(store) == expected


def test_a_copy_gets_the_same_embedding_without_a_forward_pass(
    counting_indexer: Indexer, store: GraphStore, counting_model: CountingModel, root: Path,
    photo_arrays: dict[str, object],
) -> None:
    original = root / "a.jpg"
    write_photos(photo_arrays, [original, root / "b.jpg"])
    counting_indexer.index([str(original), str(root / "b.jpg")])
    counting_model.images_embedded = 0

    copy = root / "backup" / "a-copy.jpg"
    copy.parent.mkdir()
    shutil.copy(original, copy)
    outcome = counting_indexer.index([str(copy)])

    assert counting_model.images_embedded == 0 and outcome.reused == [str(copy)]
    np.testing.assert_array_equal(embedding_of(store, str(copy)), embedding_of(store, str(original)))
    stored, source = store.get(str(copy)), store.get(str(original))
    assert stored is not None and source is not None
    assert (stored.sha256, stored.width, stored.height, stored.linked) == (source.sha256, source.width,
                                                                         source.height, True)
    assert [m.path for m in store.neighbours(str(copy))][0] == str(original)  # identical: its best link


def test_a_renamed_file_keeps_its_node_and_links_without_a_forward_pass(
    counting_indexer: Indexer, store: GraphStore, counting_model: CountingModel, work_queue: WorkQueue, root: Path,
    photo_arrays: dict[str, object],
) -> None:
    paths = [root / f"{name}.jpg" for name in ("a", "b", "c", "d")]
    write_photos(photo_arrays, paths)
    counting_indexer.index([str(p) for p in paths])
    before = store.get(str(paths[0]))
    links = all_links(store)
    counting_model.images_embedded = 0

    renamed = root / "z-renamed.jpg"
    paths[0].rename(renamed)
    work_queue.enqueue_moves([(str(paths[0]), str(renamed))])
    drain(work_queue)
    work_queue.enqueue_moves([(str(paths[0]), str(renamed))])  # delivered twice: harmless
    drain(work_queue)

    assert counting_model.images_embedded == 0
    assert store.get(str(paths[0])) is None
    # The same node under its new name; a rename sets the file's ctime, so its signature was refreshed (by hash).
    assert store.get(str(renamed)) == dataclasses.replace(before, path=str(renamed),  # type: ignore[type-var]
                                                          ctime_ns=renamed.stat().st_ctime_ns)
    moved = {str(paths[0]): str(renamed)}
    assert all_links(store) == sorted((*sorted((moved.get(a, a), moved.get(b, b))), s) for a, b, s in links)


def test_a_moved_file_whose_content_changed_meanwhile_is_embedded_again(
    counting_indexer: Indexer, store: GraphStore, counting_model: CountingModel, work_queue: WorkQueue, root: Path,
    photo_arrays: dict[str, object],
) -> None:
    old, other = root / "a.jpg", root / "b.jpg"
    write_photos(photo_arrays, [old, other])
    counting_indexer.index([str(old), str(other)])
    before = embedding_of(store, str(old))
    counting_model.images_embedded = 0

    new = root / "moved" / "a.jpg"
    new.parent.mkdir()
    old.rename(new)
    from PIL import Image

    Image.fromarray(np.asarray(photo_arrays["rocket"])).resize((96, 96)).save(new)  # edited after the move
    os.utime(new, ns=(1_900_000_000_000_000_000, 1_900_000_000_000_000_000))
    work_queue.enqueue_moves([(str(old), str(new))])
    drain(work_queue)

    assert counting_model.images_embedded == 1
    assert store.get(str(old)) is None
    assert not np.allclose(embedding_of(store, str(new)), before, atol=1e-3)
    assert store.get(str(new)).linked  # type: ignore[union-attr]


def test_a_folder_moved_while_nobody_watched_reuses_every_embedding(
    counting_indexer: Indexer, store: GraphStore, counting_model: CountingModel, work_queue: WorkQueue, root: Path,
    config: Config, photo_arrays: dict[str, object],
) -> None:
    album = root / "album"
    paths = [album / f"{i:02d}.jpg" for i in range(10)]
    write_photos(photo_arrays, paths)
    counting_indexer.index([str(p) for p in paths])
    counting_model.images_embedded = 0

    album.rename(root / "renamed-album")
    reconcile_and_enqueue(config, store, FailureLedger.for_queue(work_queue), work_queue, reason="start")
    drain(work_queue)

    assert counting_model.images_embedded == 0  # each new path shared a job with its old one, embedded before removed
    assert [s.path for s in store.file_states()] == sorted(str(root / "renamed-album" / p.name) for p in paths)
