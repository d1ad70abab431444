"""The daemon loop with a real queue, a real store and real watchdog."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from imgwatch.config import Config
from imgwatch.daemon.service import Daemon
from imgwatch.store import GraphStore, ImageRecord, open_store
from imgwatch.valkey_server import EmbeddedValkey
from imgwatch.workqueue import FailureLedger, WorkQueue
from tests.daemon.conftest import RunningDaemon, queued_paths, stored_image
from tests.helpers import RunningImgwatch, logged, make_config, process_env, timed_logs, valkey_pid, wait_until


def test_reconciliation_and_events_reach_the_queue_in_batches(
    start_daemon: Callable[[Path], Daemon], work_queue: WorkQueue, store_with_test_model: GraphStore, tmp_path: Path
) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    unchanged = root / "indexed.jpg"
    unchanged.write_bytes(b"1")
    store_with_test_model.upsert([stored_image(unchanged)])
    store_with_test_model.upsert([ImageRecord(str(root / "gone.jpg"), "0" * 64, 1, 1, 1, 1, "test/model",
                                              np.array([0, 1, 0, 0], dtype=np.float32))])
    (root / "new.jpg").write_bytes(b"2")
    start_daemon(root)
    assert wait_until(lambda: queued_paths(work_queue) == sorted([str(root / "gone.jpg"), str(root / "new.jpg")]))
    for i in range(40):
        (root / f"burst-{i}.png").write_bytes(b"x")
    assert wait_until(lambda: len(queued_paths(work_queue)) == 42)
    # 40 files settling together go out as full jobs, not one job each
    assert work_queue.rq_queue.count <= 1 + 3


def test_an_idle_queue_gets_a_settled_file_at_once_a_busy_one_gets_batches(
    start_daemon: Callable[[Path], Daemon], work_queue: WorkQueue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("imgwatch.daemon.service.LINGER_SECONDS", 600.0)  # only idleness can send early
    root = tmp_path / "photos"
    root.mkdir()
    daemon = start_daemon(root)
    first = root / "first.jpg"
    first.write_bytes(b"1")
    assert wait_until(lambda: queued_paths(work_queue) == [str(first)], timeout=10)
    # The first job is still queued (no worker here): the queue is busy, so later files wait for company.
    second = root / "second.jpg"
    second.write_bytes(b"2")
    assert wait_until(lambda: str(second) in daemon.unsent, timeout=10)
    time.sleep(1)
    assert queued_paths(work_queue) == [str(first)] and str(second) in daemon.unsent


def test_a_queue_outage_is_one_warning_holds_every_path_and_ends_with_a_rescan(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    root = tmp_path / "photos"
    album = root / "album"
    album.mkdir(parents=True)
    config.general.roots = [str(root)]
    config.watch.settle_seconds = 0.2
    config.watch.rescan_seconds = 0
    with EmbeddedValkey(config) as server, open_store(config) as store, timed_logs() as logs:
        config.queue.redis_url = server.url
        work_queue = WorkQueue.from_config(config)
        store.ensure_model("test/model", 4)
        kept = album / "kept.jpg"
        kept.write_bytes(b"1")
        store.upsert([stored_image(kept)])
        running = RunningDaemon(Daemon(config, store, FailureLedger.for_queue(work_queue), work_queue))
        try:
            daemon = running.daemon
            assert wait_until(lambda: bool(logged(logs, "reconciled", reason="start")))
            os.kill(valkey_pid(server.url), signal.SIGKILL)  # the queue server dies
            held = {str(root / f"during-{i}.jpg") for i in range(3)}
            for path in held:
                Path(path).write_bytes(b"x")
            shutil.rmtree(album)  # its stored image must be removed: needs the ledger and the store
            assert wait_until(lambda: set(daemon.unsent) >= held, timeout=5)  # settled, held
            time.sleep(4)  # attempts at 0.25, 0.5, 1, 2 s... and idle probes
            assert len(logged(logs, "queue_unreachable")) == 1
            assert running.thread.is_alive()

            server.stop()
            server.start()  # from its append-only file, on the same socket
            assert wait_until(lambda: set(queued_paths(work_queue)) >= held | {str(kept)}, timeout=40)
            [back] = logged(logs, "queue_back")
            assert back["held_paths"] == 4 and float(back["seconds"]) >= 4  # type: ignore[arg-type]  # 3 + kept.jpg
            assert wait_until(lambda: bool(logged(logs, "reconciled", reason="queue_back")))
            assert len(logged(logs, "queue_unreachable")) == 1
        finally:
            running.close()
        assert not running.thread.is_alive()


def test_a_store_that_cannot_be_read_is_one_warning_and_does_not_stop_the_daemon(
    config: Config, work_queue: WorkQueue, tmp_path: Path
) -> None:
    root = tmp_path / "photos"
    (root / "album").mkdir(parents=True)
    config.general.roots = [str(root)]
    config.watch.settle_seconds = 0.2
    with open_store(config) as store, timed_logs() as logs:
        running = RunningDaemon(Daemon(config, store, FailureLedger.for_queue(work_queue), work_queue))
        try:
            assert wait_until(lambda: bool(logged(logs, "reconciled", reason="start")))
            store.close()  # from now on every read fails: the store is unreachable
            running.daemon.request_rescan(reason="test")
            shutil.rmtree(root / "album")  # expanding a removed folder reads the store too
            assert wait_until(lambda: bool(logged(logs, "store_unreachable")))
            time.sleep(2)  # retried with backoff
            assert len(logged(logs, "store_unreachable")) == 1
            assert running.thread.is_alive()
        finally:
            running.close()
    assert logged(logs, "stopping_with_pending")


def test_ctrl_c_during_a_queue_outage_stops_the_daemon_cleanly(tmp_path: Path) -> None:
    config = make_config(tmp_path / "queue-data")
    root = tmp_path / "photos"
    root.mkdir()
    with EmbeddedValkey(config) as server:
        env = process_env(tmp_path, IMGWATCH_QUEUE_REDIS_URL=server.url)
        daemon = RunningImgwatch(env, root, tmp_path / "daemon.log", command="daemon")
        try:
            assert wait_until(lambda: '"watching"' in daemon.log(), timeout=30), daemon.log()
            os.kill(valkey_pid(server.url), signal.SIGKILL)
            (root / "a.jpg").write_bytes(b"x")
            assert wait_until(lambda: '"queue_unreachable"' in daemon.log(), timeout=10), daemon.log()
            time.sleep(1)
        finally:
            code = daemon.stop()
    log_text = daemon.log()
    assert code == 0, log_text
    assert "Traceback" not in log_text
    assert log_text.count('"queue_unreachable"') == 1 and '"stopping_with_pending"' in log_text
