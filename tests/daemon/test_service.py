"""The daemon loop with a real queue, a real store and real watchdog."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from imgwatch.config import Config
from imgwatch.daemon.service import Daemon
from imgwatch.redis_server import EmbeddedRedis
from imgwatch.store import GraphStore, ImageRecord, open_store
from imgwatch.workqueue import FailureLedger, WorkQueue, job_paths
from tests.helpers import make_config


def queued_paths(work_queue: WorkQueue) -> list[str]:
    jobs = work_queue.fetch_jobs(work_queue.rq_queue.get_job_ids())
    return sorted(path for job in jobs for path in job_paths(job))


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def store(config: Config) -> Iterator[GraphStore]:
    with open_store(config) as store:
        store.ensure_model("test/model", 4)
        yield store


def stored_image(path: Path) -> ImageRecord:
    st = path.stat()
    return ImageRecord(str(path), "0" * 64, st.st_size, st.st_mtime_ns, 1, 1, "test/model",
                       np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32))


class RunningDaemon:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.stop = threading.Event()
        self.thread = threading.Thread(target=daemon.run, args=(self.stop,))
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


@pytest.fixture
def start_daemon(config: Config, store: GraphStore, work_queue: WorkQueue) -> Iterator[Callable[[Path], Daemon]]:
    running: list[RunningDaemon] = []

    def start(root: Path) -> Daemon:
        config.general.roots = [str(root)]
        config.watch.settle_seconds = 0.2
        daemon = Daemon(config, store, FailureLedger.for_queue(work_queue), work_queue)
        running.append(RunningDaemon(daemon))
        return daemon

    yield start
    for item in running:
        item.close()


def test_reconciliation_and_events_reach_the_queue_in_batches(
    start_daemon: Callable[[Path], Daemon], work_queue: WorkQueue, store: GraphStore, tmp_path: Path
) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    unchanged = root / "indexed.jpg"
    unchanged.write_bytes(b"1")
    store.upsert([stored_image(unchanged)])
    store.upsert([ImageRecord(str(root / "gone.jpg"), "0" * 64, 1, 1, 1, 1, "test/model",
                              np.array([0, 1, 0, 0], dtype=np.float32))])
    (root / "new.jpg").write_bytes(b"2")
    start_daemon(root)
    assert wait_until(lambda: queued_paths(work_queue) == sorted([str(root / "gone.jpg"), str(root / "new.jpg")]))
    for i in range(40):
        (root / f"burst-{i}.png").write_bytes(b"x")
    assert wait_until(lambda: len(queued_paths(work_queue)) == 42)
    # 40 files settling together go out as full jobs, not one job each
    assert work_queue.rq_queue.count <= 1 + 3


def test_work_waits_out_a_queue_outage_and_is_not_lost(tmp_path: Path, write_photo: Callable[..., Path]) -> None:
    config = make_config(tmp_path / "data")
    root = tmp_path / "photos"
    root.mkdir()
    config.general.roots = [str(root)]
    config.watch.settle_seconds = 0
    with EmbeddedRedis(config) as server:
        config.queue.redis_url = server.url
        work_queue = WorkQueue.from_config(config)
        with open_store(config) as store:
            daemon = Daemon(config, store, FailureLedger.for_queue(work_queue), work_queue)
            daemon.settler.closed(str(root / "a.jpg"))
            (root / "a.jpg").write_bytes(b"x")
            server.stop()  # the queue goes away
            for _ in range(3):
                daemon.tick(flush=True)
            assert daemon.unsent == [str(root / "a.jpg")]  # settled, held while the queue is down
            server.start()
            assert wait_until(lambda: (daemon.tick(flush=True), queued_paths(work_queue))[1] == [str(root / "a.jpg")])


def test_a_vanished_root_holds_removals_and_is_watched_again_when_back(
    start_daemon: Callable[[Path], Daemon], work_queue: WorkQueue, store: GraphStore, tmp_path: Path
) -> None:
    root = tmp_path / "share"
    root.mkdir()
    photo = root / "a.jpg"
    photo.write_bytes(b"1")
    store.upsert([stored_image(photo)])
    start_daemon(root)
    time.sleep(1.0)
    assert queued_paths(work_queue) == []  # reconciled: nothing to do
    root.rename(tmp_path / "unmounted")  # the share goes away
    time.sleep(3.0)  # a root check and several ticks pass
    assert queued_paths(work_queue) == []  # its images are not queued for removal
    (tmp_path / "unmounted").rename(root)  # and comes back, as a new directory watch
    (root / "b.jpg").write_bytes(b"2")  # added while it was away: found by the catch-up reconcile
    assert wait_until(lambda: str(root / "b.jpg") in queued_paths(work_queue))
    (root / "c.jpg").write_bytes(b"3")  # the new watch sees new files
    assert wait_until(lambda: str(root / "c.jpg") in queued_paths(work_queue))
