"""The embedded queue server killed for real (SIGKILL): `imgwatch run` restarts it from its
append-only file and indexing goes on; Ctrl-C during the outage still stops cleanly."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from imgwatch.valkey_server import EmbeddedValkey
from tests.helpers import (
    RunningImgwatch,
    kill_process,
    make_config,
    run_valkey_pid,
    status,
    store_mismatch,
    wait_for,
)

FAULT_TIMEOUT = 40.0


def test_the_helper_notices_its_server_die_and_a_restart_keeps_the_data(tmp_path: Path) -> None:
    with EmbeddedValkey(make_config(tmp_path / "data")) as server:
        client = redis.Redis(unix_socket_path=str(server.socket_path))
        client.rpush("rq:queue:imgwatch", "job-1")
        time.sleep(1.2)  # appendfsync everysec
        server_pid = int(client.info("server")["process_id"])
        assert server.poll() is None

        kill_process(server_pid)

        deadline = time.monotonic() + 5
        while (how := server.poll()) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert how == "was killed by signal SIGKILL"
        server.restart()
        assert server.poll() is None
        assert client.lrange("rq:queue:imgwatch", 0, -1) == [b"job-1"]  # the client reconnects by itself
        client.close()


def log_events(run: RunningImgwatch) -> list[dict[str, object]]:
    events = []
    for line in run.log().splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


def count(run: RunningImgwatch, event: str) -> int:
    return sum(1 for e in log_events(run) if e.get("event") == event)


def wait_until_a_job_runs(data_dir: Path) -> None:
    connection = redis.Redis(unix_socket_path=str(data_dir / "queue" / "redis.sock"))
    try:
        deadline = time.monotonic() + FAULT_TIMEOUT
        while not connection.zcard("rq:wip:imgwatch"):  # RQ's started-job registry
            assert time.monotonic() < deadline, "no job started"
            time.sleep(0.005)
    finally:
        connection.close()


def kill_queue_server(run: RunningImgwatch) -> int:
    pid = run_valkey_pid(run.process.pid)
    assert pid is not None, f"no queue server under imgwatch run; log:\n{run.log()}"
    kill_process(pid)
    return pid


@pytest.mark.e2e
def test_a_killed_queue_server_comes_back_idle_or_mid_batch_and_nothing_is_missed(
    env: dict[str, str], tmp_path: Path, write_photo: Callable[..., Path],
    start_run: Callable[[Path], RunningImgwatch],
) -> None:
    root = tmp_path / "photos"
    write_photo(root / "first.jpg", "astronaut")
    run = start_run(root)
    data_dir = tmp_path / "data"
    wait_for(lambda: store_mismatch(data_dir, root) is None, f"first indexing; log:\n{run.log()}", FAULT_TIMEOUT)
    wait_for(lambda: count(run, "ready") == 1, "ready", FAULT_TIMEOUT)

    # While idle: nothing is running, and the server is found dead and restarted.
    killed = kill_queue_server(run)
    wait_for(lambda: count(run, "queue_restarted") == 1, f"the queue back; log:\n{run.log()}", FAULT_TIMEOUT)
    assert run_valkey_pid(run.process.pid) not in (None, killed)
    write_photo(root / "after-idle-kill.jpg", "coffee")
    wait_for(lambda: store_mismatch(data_dir, root) is None, f"indexing after the restart; log:\n{run.log()}",
             FAULT_TIMEOUT)

    # Mid-batch: photos arrive, the server dies while their job runs.
    for index, name in enumerate(["chelsea", "rocket", "camera", "retina"]):
        write_photo(root / "batch" / f"{index}.jpg", name)
    wait_until_a_job_runs(data_dir)
    kill_queue_server(run)
    write_photo(root / "during-outage.jpg", "hubble_deep_field")  # settles while the queue is down
    wait_for(lambda: count(run, "queue_restarted") == 2, f"the queue back again; log:\n{run.log()}", FAULT_TIMEOUT)
    write_photo(root / "after-batch-kill.jpg", "immunohistochemistry")
    wait_for(lambda: store_mismatch(data_dir, root) is None,
             f"everything indexed: {store_mismatch(data_dir, root)}; log:\n{run.log()}", FAULT_TIMEOUT)

    report = status(env)["queue"]
    assert report["running_jobs"] == 0 and report["workers"] == 1
    assert run.process.poll() is None, "imgwatch run must keep running"
    assert run.stop() == 0
    assert "Traceback" not in run.log()
    assert count(run, "queue_server_died") == 2


@pytest.mark.e2e
def test_ctrl_c_during_a_queue_outage_stops_cleanly(
    env: dict[str, str], tmp_path: Path, write_photo: Callable[..., Path],
    start_run: Callable[[Path], RunningImgwatch],
) -> None:
    root = tmp_path / "photos"
    write_photo(root / "a.jpg", "astronaut")
    run = start_run(root)
    wait_for(lambda: count(run, "ready") == 1 and store_mismatch(tmp_path / "data", root) is None,
             f"ready; log:\n{run.log()}", FAULT_TIMEOUT)
    for index, name in enumerate(["chelsea", "rocket", "coffee"]):
        write_photo(root / f"b{index}.jpg", name)
    wait_until_a_job_runs(tmp_path / "data")

    kill_queue_server(run)  # in the middle of the job
    run.process.send_signal(signal.SIGINT)  # at once: the queue is still down
    started = time.monotonic()
    code = run.process.wait(timeout=FAULT_TIMEOUT)

    assert code == 0, run.log()
    assert time.monotonic() - started < 30, run.log()
    assert "Traceback" not in run.log()
    assert count(run, "stopped") == 1
