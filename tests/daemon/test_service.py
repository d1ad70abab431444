"""The daemon loop with a real queue, a real store and real watchdog."""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from imgwatch.config import Config
from imgwatch.daemon.service import Daemon, scan_and_enqueue
from imgwatch.files import signature_of
from imgwatch.redis_server import EmbeddedRedis
from imgwatch.store import GraphStore, ImageRecord, open_store
from imgwatch.workqueue import INDEX_JOB, FailureLedger, WorkQueue, job_paths, take_snapshot
from imgwatch.workqueue.root_states import MISSING, NOT_WATCHABLE, POLLING, WATCHING, RootState, RootStates
from tests.helpers import RunningImgwatch, logged, make_config, process_env, timed_logs, valkey_pid, wait_until


def queued_paths(work_queue: WorkQueue) -> list[str]:
    jobs = work_queue.fetch_jobs(work_queue.rq_queue.get_job_ids())
    return sorted(path for job in jobs for path in job_paths(job))


@pytest.fixture
def store(config: Config) -> Iterator[GraphStore]:
    with open_store(config) as store:
        store.ensure_model("test/model", 4)
        yield store


def stored_image(path: Path) -> ImageRecord:
    size, mtime_ns, ctime_ns, inode = signature_of(path.stat())
    return ImageRecord(str(path), "0" * 64, size, mtime_ns, 1, 1, "test/model",
                       np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32), ctime_ns, inode)


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
    with EmbeddedRedis(config) as server, open_store(config) as store, timed_logs() as logs:
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
    with EmbeddedRedis(config) as server:
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


# -- what `imgwatch status` shows: each root's state -----------------------------------------


@pytest.mark.parametrize(("observer", "watched"), [("inotify", WATCHING), ("polling", POLLING)])
def test_each_roots_state_is_published_for_status_and_withdrawn_when_the_daemon_stops(
    config: Config, store: GraphStore, work_queue: WorkQueue, tmp_path: Path, observer: str, watched: str
) -> None:
    photos, typo = tmp_path / "photos", tmp_path / "nope"
    photos.mkdir()
    config.general.roots = [str(photos), str(typo)]
    config.watch.observer = observer
    config.watch.polling_interval = 0.2
    daemon = Daemon(config, store, FailureLedger.for_queue(work_queue), work_queue)
    daemon.root_check_seconds = 0.3
    published = RootStates.for_queue(work_queue)

    def states() -> dict[str, str]:
        return {state.root: state.state for state in published.current()}

    running = RunningDaemon(daemon)
    try:
        assert wait_until(lambda: states() == {str(photos): watched, str(typo): MISSING}, timeout=10), states()
        [missing] = [state for state in published.current() if state.state == MISSING]
        assert "fix `general.roots` or the ROOT argument" in missing.detail
        typo.mkdir()  # the typo's folder appears: watched from then on
        assert wait_until(lambda: states()[str(typo)] == watched, timeout=10), states()
        photos.rename(tmp_path / "unmounted")  # a share goes away
        assert wait_until(lambda: states()[str(photos)] == MISSING, timeout=10), states()
    finally:
        running.close()
    assert published.current() == []  # a stopped daemon watches nothing


def test_a_root_the_inotify_limit_keeps_unwatched_is_published_as_not_watchable(config: Config, tmp_path: Path) -> None:
    from tests.faults.test_missed_events import REPO, _own_user_namespace_skip_reason

    reason = _own_user_namespace_skip_reason()  # the limit is lowered in a user namespace of its own, as there
    if reason:
        pytest.skip(reason)
    code = ("import sys; from tests.daemon.test_service import not_watchable_scenario; "
            "sys.exit(not_watchable_scenario(sys.argv[1:]))")
    result = subprocess.run(
        ["unshare", "--user", "--map-root-user", sys.executable, "-c", code, str(tmp_path),
         str(config.queue.redis_url), config.queue.name],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stdout + result.stderr


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


def test_a_root_missing_at_start_is_said_on_the_terminal_in_plain_words(tmp_path: Path) -> None:
    typo = tmp_path / "nope"
    env = process_env(tmp_path)  # JSON log lines even on the terminal: the plain line stands apart
    terminal, terminal_end = pty.openpty()
    run = subprocess.Popen([sys.executable, "-m", "imgwatch", "run", str(typo)], env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=terminal_end)
    os.close(terminal_end)
    shown = b""
    expected = f"imgwatch: {typo} does not exist: it is watched once it appears".encode()
    try:
        deadline = time.monotonic() + 60
        while expected not in shown and time.monotonic() < deadline and run.poll() is None:
            if select.select([terminal], [], [], 0.2)[0]:
                shown += os.read(terminal, 65536)
    finally:
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=60) == 0
        os.close(terminal)
    assert expected in shown, shown.decode(errors="replace")
    [line] = [line for line in shown.decode().splitlines() if "does not exist" in line and "{" not in line]
    assert line.endswith("if the path is mistyped, stop imgwatch (Ctrl-C) and fix the ROOT argument or general.roots")


# -- `imgwatch scan` ----------------------------------------------------------------------


def test_a_scan_leaves_out_files_a_waiting_job_holds_so_the_backlog_counts_each_once(
    config: Config, store: GraphStore, work_queue: WorkQueue, tmp_path: Path
) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    config.general.roots = [str(root)]
    files = [str(root / f"{i}.jpg") for i in range(5)]
    for path in files:
        Path(path).write_bytes(b"x")
    work_queue.enqueue_paths(files[:3], 32)  # as the watcher queued them: no worker took them yet
    work_queue.rq_queue.enqueue("os.system", [files[3]])  # not imgwatch's: it holds no path to leave out
    failures = FailureLedger.for_queue(work_queue)
    scanned = scan_and_enqueue(config, store, failures, work_queue, leave_queued=True)
    assert (scanned.changed, scanned.gone, scanned.already_queued) == (2, 0, 3)
    jobs = work_queue.fetch_jobs(work_queue.rq_queue.get_job_ids())
    assert sorted(path for job in jobs if job.func_name == INDEX_JOB for path in job_paths(job)) == files  # each once
    assert take_snapshot(work_queue, failures).pending_paths == 5
