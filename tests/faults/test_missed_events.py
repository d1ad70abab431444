"""Events the watcher never delivers, caused for real: the daemon must find those files anyway.

An inotify queue overflow (the queue lowered with /proc/sys/fs/inotify/max_queued_events
while the daemon's observer is created: the kernel fixes it per inotify instance), a
watcher thread that dies, a file the handler never heard of (only the periodic rescan can
find it), and the inotify watch limit (reached for real in a user namespace of its own).
Real watchdog, a real Valkey queue, a real store.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imgwatch.config import Config
from imgwatch.daemon.service import Daemon
from imgwatch.store import GraphStore
from imgwatch.workqueue import FailureLedger, WorkQueue
from tests.faults.scenarios import queued_paths, reconciled_because
from tests.helpers import (
    RunningImgwatch,
    logged,
    lowered_inotify_limit,
    process_env,
    run_scenario_in_own_user_namespace,
    store_mismatch,
    timed_logs,
    wait_for,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def logs() -> Iterator[list[dict[str, object]]]:
    with timed_logs() as entries:
        yield entries


@pytest.fixture
def start_daemon(
    config: Config, store_with_test_model: GraphStore, work_queue: WorkQueue
) -> Iterator[Callable[..., Daemon]]:
    """start_daemon(root, rescan_seconds=0): a Daemon thread watching ``root``, stopped after the test."""
    running: list[tuple[threading.Thread, threading.Event]] = []

    def start(root: Path, rescan_seconds: float = 0, root_check_seconds: float = 2.0) -> Daemon:
        config.general.roots = [str(root)]
        config.watch.settle_seconds = 0.2
        config.watch.rescan_seconds = rescan_seconds
        daemon = Daemon(config, store_with_test_model, FailureLedger.for_queue(work_queue), work_queue)
        daemon.root_check_seconds = root_check_seconds
        stop = threading.Event()
        thread = threading.Thread(target=daemon.run, args=(stop,), name="daemon")
        thread.start()
        running.append((thread, stop))
        assert daemon.watching.wait(10)
        return daemon

    yield start
    for thread, stop in running:
        stop.set()
        thread.join(timeout=30)


def test_an_inotify_overflow_makes_the_daemon_rescan_that_root_at_once(
    start_daemon: Callable[..., Daemon], work_queue: WorkQueue, logs: list[dict[str, object]],
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    caplog.set_level(logging.WARNING, logger="watchdog")
    # The kernel takes an inotify instance's queue size when the instance is created.
    with lowered_inotify_limit("max_queued_events", 8):
        start_daemon(root)  # no periodic rescans: only the overflow can find the lost files
    assert wait_until(lambda: bool(reconciled_because(logs, "start")))
    burst = [root / "album" / f"photo-{i:04}.jpg" for i in range(1000)]
    burst[0].parent.mkdir()
    for path in burst:  # ~4 events each, far beyond a queue of 8, in a loop tight enough to outrun the reader
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(descriptor, b"x")
        os.close(descriptor)

    assert wait_until(lambda: queued_paths(work_queue) >= {str(p) for p in burst}), \
        f"missing: {len({str(p) for p in burst} - queued_paths(work_queue))}"
    overflows = [r for r in caplog.records if "events were lost" in r.getMessage()]
    assert overflows, "the kernel reported no overflow: the test caused none"
    lost = logged(logs, "events_lost", root=str(root))
    rescans = reconciled_because(logs, "events_lost")
    assert lost and rescans
    assert sum(int(str(e["changed"])) for e in rescans) > 0  # files whose every event was lost
    latency = float(str(rescans[0]["timestamp"])) - overflows[0].created
    print(f"\noverflow -> rescan done: {latency * 1000:.0f} ms; rescans: {len(rescans)}; "
          f"walk: {rescans[0]['seconds']} s")
    assert latency < 2.0


@pytest.mark.e2e
def test_imgwatch_run_indexes_every_photo_written_while_its_watcher_was_too_busy_to_read(
    tmp_path: Path, write_photo: Callable[..., Path],
) -> None:
    """The real thing: the process is stopped (busy) while more than max_queued_events events queue up."""
    max_queued = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if max_queued > 100_000:
        pytest.skip(f"fs.inotify.max_queued_events is {max_queued}: too many events to queue in a test")
    env = process_env(tmp_path, IMGWATCH_WATCH_RESCAN_SECONDS="0")
    root = tmp_path / "photos"
    (root / "notes").mkdir(parents=True)
    staging = tmp_path / "staging"
    names = ["astronaut", "coffee", "chelsea", "rocket", "camera", "retina"]
    originals = [write_photo(staging / f"{name}.jpg", name) for name in names]
    run = RunningImgwatch(env, root, tmp_path / "run.log")
    try:
        wait_for(lambda: '"reconciled"' in run.log() or run.process.poll() is not None,
                 "the daemon to watch", timeout=60)
        assert run.process.poll() is None, run.log()
        run.process.send_signal(signal.SIGSTOP)  # the daemon reads no events (the workers run on)
        try:
            # Three events per file (create, open, close): the kernel's queue overflows...
            for i in range(max_queued // 3 + 100):
                (root / "notes" / f"{i}.txt").touch()
            for copy in range(2):  # ...so nothing is heard of the photos copied in next
                for original in originals:
                    shutil.copy(original, root / f"{original.stem}-{copy}.jpg")
        finally:
            run.process.send_signal(signal.SIGCONT)
        wait_for(lambda: store_mismatch(tmp_path / "data", root) is None,
                 f"every photo indexed; log:\n{run.log()[-3000:]}", timeout=90)
        entries = [json.loads(line) for line in run.log().splitlines() if line.startswith("{")]
        rescans = [e for e in entries if e["event"] == "reconciled" and "events_lost" in e["reason"]]
        # Found by the rescan alone: the first finds all 12. On a loaded machine the queue can
        # overflow again before the workers store them, and that rescan finds them again (harmless).
        assert rescans and rescans[0]["changed"] == 12, run.log()[-3000:]
        assert all(e["changed"] <= 12 for e in rescans[1:]), run.log()[-3000:]
    finally:
        assert run.stop() == 0, run.log()[-3000:]
    assert "Traceback" not in run.log()


def test_a_file_the_watcher_never_reported_is_found_by_the_periodic_rescan(
    start_daemon: Callable[..., Daemon], work_queue: WorkQueue, logs: list[dict[str, object]], tmp_path: Path,
) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    daemon = start_daemon(root, rescan_seconds=1.5)
    assert wait_until(lambda: bool(reconciled_because(logs, "start")))
    observer, watch = daemon.observer, daemon.watches[str(root)]
    assert observer is not None
    observer.remove_handler_for_watch(daemon.router, watch)  # events below the root now reach nobody
    unseen = root / "unseen.jpg"
    unseen.write_bytes(b"x")
    time.sleep(0.5)  # its events are dispatched (to no one)
    observer.add_handler_for_watch(daemon.router, watch)
    assert str(unseen) not in daemon.settler.pending_paths()

    assert wait_until(lambda: str(unseen) in queued_paths(work_queue), timeout=5)
    # The pass logs once it has enqueued: its line may follow the job by a moment.
    assert wait_until(lambda: sum(int(str(e["changed"])) for e in reconciled_because(logs, "periodic")) == 1,
                      timeout=5), reconciled_because(logs, "periodic")


@pytest.mark.parametrize("thread", ["emitter", "observer"])
def test_a_dead_watcher_thread_is_restarted_and_its_root_rescanned(
    start_daemon: Callable[..., Daemon], work_queue: WorkQueue, logs: list[dict[str, object]], tmp_path: Path,
    thread: str,
) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    daemon = start_daemon(root)
    assert wait_until(lambda: bool(reconciled_because(logs, "start")))
    observer = daemon.observer
    assert observer is not None
    if thread == "emitter":  # the thread reading the root's events ends
        [emitter] = [e for e in observer.emitters if e.watch == daemon.watches[str(root)]]
        emitter.stop()
        emitter.join(5)
    else:  # the thread dispatching events to the handler ends (and takes the emitters with it)
        observer.stop()
        observer.join(5)
    missed = root / "written-while-dead.jpg"
    missed.write_bytes(b"x")

    assert wait_until(lambda: str(missed) in queued_paths(work_queue), timeout=6)
    [restart] = logged(logs, "watcher_restarting")
    assert "ended" in str(restart["trouble"])
    assert reconciled_because(logs, "watcher_restarted")
    assert daemon.observer is not observer and daemon.observer is not None and daemon.observer.is_alive()
    after = root / "written-after.jpg"  # the new observer delivers events again
    after.write_bytes(b"y")
    assert wait_until(lambda: str(after) in queued_paths(work_queue), timeout=5)
    assert len(logged(logs, "watcher_restarting")) == 1


# -- the inotify watch limit, in a user namespace of its own --------------------------------
#
# fs.inotify.max_user_watches is global: lowering it would break every other inotify user on
# the machine (other test runs included) for as long as it is low. Each user namespace has a
# limit of its own, /proc/sys/user/max_inotify_watches, which its root may lower: the scenarios
# below run in a child process in a new user namespace (`unshare --user --map-root-user`) and
# lower only that. The daemon still gets the kernel's real ENOSPC.


def run_in_own_user_namespace(scenario: str, config: Config, tmp_path: Path) -> None:
    run_scenario_in_own_user_namespace("tests.faults.scenarios:watch_limit_scenario", scenario, str(tmp_path),
                                       str(config.queue.redis_url), config.queue.name)


def test_folders_that_cannot_be_watched_are_reported_once_with_the_sysctl_to_raise(
    config: Config, tmp_path: Path
) -> None:
    run_in_own_user_namespace("reported_once", config, tmp_path)


def test_folders_left_unwatched_are_watched_again_at_the_next_periodic_rescan(config: Config, tmp_path: Path) -> None:
    run_in_own_user_namespace("watched_again", config, tmp_path)
