"""What the daemon's tests share: a store with a model, a daemon thread, the paths on the queue."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from imgwatch.config import Config
from imgwatch.daemon.service import Daemon
from imgwatch.files import signature_of
from imgwatch.store import GraphStore, ImageRecord
from imgwatch.workqueue import FailureLedger, WorkQueue, job_paths


def queued_paths(work_queue: WorkQueue) -> list[str]:
    """The paths of the jobs on the queue, sorted."""
    jobs = work_queue.fetch_jobs(work_queue.rq_queue.get_job_ids())
    return sorted(path for job in jobs for path in job_paths(job))


def stored_image(path: Path) -> ImageRecord:
    """``path`` as the store holds it once indexed (unchanged on disk since)."""
    size, mtime_ns, ctime_ns, inode = signature_of(path.stat())
    return ImageRecord(str(path), "0" * 64, size, mtime_ns, 1, 1, "test/model",
                       np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32), ctime_ns, inode)


class RunningDaemon:
    """``daemon`` running in a thread until :meth:`close`."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.stop = threading.Event()
        self.thread = threading.Thread(target=daemon.run, args=(self.stop,))
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


@pytest.fixture
def start_daemon(
    config: Config, store_with_test_model: GraphStore, work_queue: WorkQueue
) -> Iterator[Callable[[Path], Daemon]]:
    """start_daemon(root): a Daemon thread watching ``root``, stopped after the test."""
    running: list[RunningDaemon] = []

    def start(root: Path) -> Daemon:
        config.general.roots = [str(root)]
        config.watch.settle_seconds = 0.2
        daemon = Daemon(config, store_with_test_model, FailureLedger.for_queue(work_queue), work_queue)
        running.append(RunningDaemon(daemon))
        return daemon

    yield start
    for item in running:
        item.close()
