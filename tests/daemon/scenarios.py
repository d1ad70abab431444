"""What the daemon's tests run in a child process of their own (a user namespace with its own inotify limit)."""

from __future__ import annotations

import traceback
from pathlib import Path

from imgwatch.daemon.service import Daemon
from imgwatch.store import open_store
from imgwatch.workqueue import FailureLedger, WorkQueue
from imgwatch.workqueue.root_states import MISSING, NOT_WATCHABLE, WATCHING, RootState, RootStates
from tests.daemon.conftest import RunningDaemon
from tests.helpers import make_config, wait_until


def not_watchable_scenario(argv: list[str]) -> int:
    """Runs in a user namespace of its own; prints "ok" or what went wrong."""
    tmp, redis_url, queue_name = argv
    tmp_path = Path(tmp)
    config = make_config(tmp_path / "data", **{"queue.redis_url": redis_url, "queue.name": queue_name})
    root = tmp_path / "photos"
    root.mkdir()
    config.general.roots = [str(root)]
    work_queue = WorkQueue.from_config(config)
    published = RootStates.for_queue(work_queue)

    def watch_limit(value: int) -> None:  # this namespace's own limit
        Path("/proc/sys/user/max_inotify_watches").write_text(f"{value}\n")

    def state() -> RootState:
        [only] = published.current() or [RootState(str(root), "none published")]
        return only

    with open_store(config) as store:
        daemon = Daemon(config, store, FailureLedger.for_queue(work_queue), work_queue)
        daemon.root_check_seconds = 0.3
        running = RunningDaemon(daemon)
        try:
            assert wait_until(lambda: state().state == WATCHING and not state().detail), state()
            watch_limit(0)
            (root / "album").mkdir()  # a folder below the root cannot be watched: the root still is
            assert wait_until(lambda: "1 folder(s) below it could not be watched" in state().detail, timeout=5), state()
            assert state().state == WATCHING and "sysctl fs.inotify.max_user_watches=" in state().detail
            away = tmp_path / "unmounted"
            root.rename(away)
            assert wait_until(lambda: state().state == MISSING, timeout=5), state()
            away.rename(root)  # back while no watch can be added
            assert wait_until(lambda: state().state == NOT_WATCHABLE, timeout=5), state()
            assert "sysctl fs.inotify.max_user_watches=" in state().detail and "rescans" in state().detail
            watch_limit(10_000)
            assert wait_until(lambda: state() == RootState(str(root), WATCHING), timeout=5), state()
        except AssertionError:
            traceback.print_exc()
            return 1
        finally:
            running.close()
    print("ok")
    return 0
