"""What the missed-event tests share, and run in a child process of their own (a user namespace
with its own inotify limit, see test_missed_events.py)."""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from imgwatch.daemon.service import Daemon
from imgwatch.store import open_store
from imgwatch.workqueue import FailureLedger, WorkQueue, job_paths
from tests.helpers import logged, make_config, timed_logs, wait_until


def queued_paths(work_queue: WorkQueue) -> set[str]:
    jobs = work_queue.fetch_jobs(work_queue.rq_queue.get_job_ids())
    return {path for job in jobs for path in job_paths(job)}


def reconciled_because(logs: list[dict[str, object]], reason: str) -> list[dict[str, object]]:
    return [e for e in logged(logs, "reconciled") if reason in str(e["reason"]).split(",")]


def watch_limit_scenario(argv: list[str]) -> int:
    """Runs in a user namespace of its own (see test_missed_events.py); prints "ok" or what went wrong and the logs."""
    scenario, tmp, redis_url, queue_name = argv
    tmp_path = Path(tmp)
    config = make_config(tmp_path / "data", **{"queue.redis_url": redis_url, "queue.name": queue_name})
    root = tmp_path / "photos"
    root.mkdir()
    config.general.roots = [str(root)]
    config.watch.settle_seconds = 0.2
    config.watch.rescan_seconds = 2 if scenario == "watched_again" else 0
    work_queue = WorkQueue.from_config(config)

    def watch_limit(value: int) -> None:  # this namespace's own limit
        Path("/proc/sys/user/max_inotify_watches").write_text(f"{value}\n")

    stop = threading.Event()
    with open_store(config) as store, timed_logs() as logs:
        store.ensure_model("test/model", 4)
        daemon = Daemon(config, store, FailureLedger.for_queue(work_queue), work_queue)
        daemon.root_check_seconds = 0.3
        thread = threading.Thread(target=daemon.run, args=(stop,))
        thread.start()
        try:
            assert wait_until(lambda: bool(reconciled_because(logs, "start")))
            if scenario == "reported_once":
                _reported_once(daemon, root, tmp_path, work_queue, logs, watch_limit)
            else:
                _watched_again(daemon, root, logs, watch_limit)
        except AssertionError:
            traceback.print_exc()
            print("\n".join(str(entry) for entry in logs))
            return 1
        finally:
            stop.set()
            thread.join(30)
    print("ok")
    return 0


def _reported_once(daemon: Daemon, root: Path, tmp_path: Path, work_queue: WorkQueue,
                   logs: list[dict[str, object]], watch_limit: Callable[[int], None]) -> None:
    watch_limit(0)  # no new inotify watch in this namespace
    (root / "new-album").mkdir()
    (root / "another-album").mkdir()
    assert wait_until(lambda: bool(logged(logs, "watch_limit_reached")), timeout=5)
    time.sleep(0.3)
    [reported] = logged(logs, "watch_limit_reached")
    assert "sysctl fs.inotify.max_user_watches=" in str(reported["note"])

    # A root that comes back while the limit is reached: reported once, watched once it can be.
    away = tmp_path / "unmounted"
    root.rename(away)
    assert wait_until(lambda: bool(logged(logs, "root_missing")), timeout=5)
    away.rename(root)
    assert wait_until(lambda: bool(logged(logs, "root_unwatchable")), timeout=5)
    time.sleep(1)  # more root checks fail the same way
    [unwatchable] = logged(logs, "root_unwatchable")
    assert "sysctl fs.inotify.max_user_watches=" in str(unwatchable["error"])
    watch_limit(10_000)
    assert wait_until(lambda: bool(logged(logs, "root_back", root=str(root))), timeout=5)
    later = root / "new-album" / "later.jpg"
    later.write_bytes(b"x")
    assert wait_until(lambda: str(later) in queued_paths(work_queue), timeout=5)


def _watched_again(daemon: Daemon, root: Path, logs: list[dict[str, object]],
                   watch_limit: Callable[[int], None]) -> None:
    watch_limit(0)
    (root / "album").mkdir()
    assert wait_until(lambda: bool(logged(logs, "watch_limit_reached")), timeout=5)
    watch_limit(10_000)  # raised: the next periodic rescan starts a new watcher, which watches the album
    # The restart's rescan is logged once the new watcher watches every folder again.
    assert wait_until(lambda: bool(reconciled_because(logs, "watcher_restarted")), timeout=5)
    photo = root / "album" / "photo.jpg"
    photo.write_bytes(b"x")
    assert wait_until(lambda: str(photo) in daemon.settler.pending_paths(), timeout=2)  # an event, not a rescan
    [restart] = logged(logs, "watcher_restarting")
    assert restart["log_level"] == "info" and "could not be watched" in str(restart["trouble"])
