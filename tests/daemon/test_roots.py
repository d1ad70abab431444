"""The roots' health, through the daemon loop: roots missing at start, vanishing and coming back,
not watchable (the inotify watch limit), and each root's state as `imgwatch status` reads it.
Real watchdog, a real Valkey queue, a real store."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from imgwatch.config import Config
from imgwatch.daemon.service import Daemon
from imgwatch.store import GraphStore
from imgwatch.workqueue import FailureLedger, WorkQueue
from imgwatch.workqueue.root_states import MISSING, POLLING, WATCHING, RootStates
from tests.daemon.conftest import RunningDaemon, queued_paths, stored_image
from tests.helpers import process_env, run_scenario_in_own_user_namespace, wait_until

REPO = Path(__file__).resolve().parents[2]


def test_a_vanished_root_holds_removals_and_is_watched_again_when_back(
    start_daemon: Callable[[Path], Daemon], work_queue: WorkQueue, store_with_test_model: GraphStore, tmp_path: Path
) -> None:
    root = tmp_path / "share"
    root.mkdir()
    photo = root / "a.jpg"
    photo.write_bytes(b"1")
    store_with_test_model.upsert([stored_image(photo)])
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
    config: Config, store_with_test_model: GraphStore, work_queue: WorkQueue, tmp_path: Path, observer: str,
    watched: str,
) -> None:
    photos, typo = tmp_path / "photos", tmp_path / "nope"
    photos.mkdir()
    config.general.roots = [str(photos), str(typo)]
    config.watch.observer = observer
    config.watch.polling_interval = 0.2
    daemon = Daemon(config, store_with_test_model, FailureLedger.for_queue(work_queue), work_queue)
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
    # the limit is lowered in a user namespace of its own, as tests/faults/test_missed_events.py says why
    run_scenario_in_own_user_namespace("tests.daemon.scenarios:not_watchable_scenario", str(tmp_path),
                                       str(config.queue.redis_url), config.queue.name)


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
