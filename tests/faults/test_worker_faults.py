"""Worker processes of `imgwatch run` killed for real (SIGKILL, as the OOM killer does): each is
restarted, its job requeued at once, and a file whose job kills its worker every time ends up
in the failure ledger instead of looping forever."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from rq.registry import StartedJobRegistry

from imgwatch.sdnotify import Listener
from imgwatch.workqueue import WorkQueue, job_paths
from tests.helpers import (
    RunningImgwatch,
    kill_process,
    process_env,
    run_worker_pids,
    status,
    store_mismatch,
    wait_for,
)

pytestmark = pytest.mark.e2e

FAULT_TIMEOUT = 40.0


@pytest.fixture
def listener() -> Iterator[Listener]:
    """Where `imgwatch run` sends its systemd notifications."""
    with Listener() as listener:
        yield listener


@pytest.fixture
def env(tmp_path: Path, listener: Listener) -> dict[str, str]:
    return process_env(tmp_path, NOTIFY_SOCKET=listener.address)


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[WorkQueue]:
    """The run's embedded queue, read from the test (once `imgwatch run` has started it)."""
    connection = redis.Redis(unix_socket_path=str(tmp_path / "data" / "queue" / "redis.sock"))
    yield WorkQueue(connection)
    connection.close()


def events(run: RunningImgwatch, event: str) -> list[dict[str, object]]:
    return [e for e in (json.loads(line) for line in run.log().splitlines() if line.startswith("{"))
            if e.get("event") == event]


def running(queue: WorkQueue) -> list[tuple[list[str], int]]:
    """(paths, worker pid) of each job running now."""
    found = []
    for entry in queue.connection.zrange(StartedJobRegistry(queue=queue.rq_queue).key, 0, -1):
        job_id, execution_id = entry.decode().split(":")
        worker = (queue.connection.hget(f"rq:execution:{job_id}:{execution_id}", "worker_name") or b"").decode()
        jobs = queue.fetch_jobs([job_id])
        if jobs and worker.startswith("imgwatch-run-"):
            found.append((job_paths(jobs[0]), int(worker.split("-")[2])))
    return found


_killed: set[int] = set()  # a killed worker's job shows as running until `imgwatch run` requeues it


def kill_the_worker_running(queue: WorkQueue, wanted: Callable[[list[str]], bool], timeout: float,
                            delay: float = 0.0) -> list[str]:
    """SIGKILL the worker the moment it runs a job whose paths satisfy ``wanted`` (or ``delay`` seconds
    after it is seen starting it, to land in the middle of its work); returns those paths."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            jobs = running(queue)
        except redis.ConnectionError:
            jobs = []
        for paths, pid in jobs:
            if wanted(paths) and pid not in _killed:
                time.sleep(delay)
                kill_process(pid)
                _killed.add(pid)
                return paths
        time.sleep(0.005)
    raise AssertionError("no such job started in time")


def registered_workers(env: dict[str, str]) -> int:
    report = status(env)["queue"]
    return -1 if report is None else int(report["workers"])


def notifications(listener: Listener) -> list[dict[str, str]]:
    received = []
    while (message := listener.receive(timeout=0.05)) is not None:
        received.append(message)
    return received


def test_a_worker_killed_three_times_is_restarted_and_every_photo_indexed(
    env: dict[str, str], tmp_path: Path, write_photo: Callable[..., Path],
    start_run: Callable[[Path], RunningImgwatch], queue: WorkQueue, listener: Listener,
) -> None:
    root, data_dir = tmp_path / "photos", tmp_path / "data"
    write_photo(root / "first.jpg", "astronaut")
    run = start_run(root)
    wait_for(lambda: bool(events(run, "ready")) and store_mismatch(data_dir, root) is None,
             f"ready; log:\n{run.log()}", FAULT_TIMEOUT)
    first_worker = run_worker_pids(run.process.pid)

    # 1: mid-batch.
    for name in ["coffee", "chelsea", "rocket"]:
        write_photo(root / "batch" / f"{name}.jpg", name)
    kill_the_worker_running(queue, lambda paths: len(paths) >= 1, FAULT_TIMEOUT)
    wait_for(lambda: len(events(run, "job_requeued")) == 1, f"its job requeued at once; log:\n{run.log()}", 5)
    assert len(events(run, "worker_died")) == 1

    # 2: while it starts again (loading its model), with a photo waiting for it.
    wait_for(lambda: run_worker_pids(run.process.pid) not in ([], first_worker), "a new worker", FAULT_TIMEOUT)
    write_photo(root / "while-restarting.jpg", "camera")
    [restarted] = run_worker_pids(run.process.pid)
    kill_process(restarted)
    _killed.add(restarted)
    wait_for(lambda: len(events(run, "worker_died")) == 2, f"the second death; log:\n{run.log()}", 5)

    # 3: mid-batch again, on whatever job the next worker takes first.
    write_photo(root / "late.jpg", "retina")
    kill_the_worker_running(queue, lambda paths: True, FAULT_TIMEOUT)

    wait_for(lambda: store_mismatch(data_dir, root) is None,
             f"everything indexed: {store_mismatch(data_dir, root)}; log:\n{run.log()}", FAULT_TIMEOUT)
    wait_for(lambda: registered_workers(env) == 1, "one registered worker", 10)
    report = status(env)["queue"]
    assert (report["running_jobs"], report["queued_jobs"], report["failed_files"]) == (0, 0, [])
    died = events(run, "worker_died")
    assert [e["cause"] for e in died] == ["killed by signal SIGKILL"] * 3
    assert [e["restart_in_seconds"] for e in died] == [1.0, 2.0, 4.0]  # backoff
    # The two mid-batch jobs, at once: the second may be the first one again, then split in one job per file.
    assert len(events(run, "job_requeued")) + len(events(run, "job_split")) >= 2
    assert run.stop() == 0
    assert "Traceback" not in run.log()

    sent = notifications(listener)
    assert [m for m in sent if m.get("READY") == "1"] == [{"READY": "1"}]
    statuses = [m["STATUS"] for m in sent if "STATUS" in m]
    assert any("killed by signal SIGKILL; restarting it" in s for s in statuses), statuses
    assert sent[-1] == {"STOPPING": "1"}


def test_a_file_that_kills_its_worker_every_time_ends_up_failed_and_the_rest_is_indexed(
    env: dict[str, str], tmp_path: Path, write_photo: Callable[..., Path], photo_arrays: dict[str, object],
    start_run: Callable[[Path], RunningImgwatch], queue: WorkQueue,
) -> None:
    """The poison file is a phone's 12-megapixel HEIC: libheif takes ~0.3 s to decode it in the worker's
    decode threads, so each kill lands while the decoder runs. The photo after it is a camera's DNG without a
    preview, which the restarted worker develops through LibRaw."""
    from PIL import Image

    from tests.photo_files import write_dng, write_heic

    root, data_dir = tmp_path / "photos", tmp_path / "data"
    indexed = ("jpg", "dng")  # every photo but the poison file
    write_photo(root / "fine.jpg", "astronaut")
    run = start_run(root)
    wait_for(lambda: store_mismatch(data_dir, root, indexed) is None, f"first indexing; log:\n{run.log()}",
             FAULT_TIMEOUT)

    # A decoder crash on this file, say: its worker dies each time it starts on it.
    hubble = Image.fromarray(photo_arrays["hubble_deep_field"])  # type: ignore[call-overload]
    poison = write_heic(hubble.resize((4032, 3024)), root / "IMG_0001.HEIC", quality=50)
    # workers.max_attempts times. The job is seen starting within ~20 ms and its decode takes >= 0.25 s:
    # each kill, 0.1 s in, lands in the middle of libheif's decode.
    for _ in range(3):
        kill_the_worker_running(queue, lambda paths: paths == [str(poison)], FAULT_TIMEOUT, delay=0.1)
    coffee = Image.fromarray(photo_arrays["coffee"])  # type: ignore[call-overload]
    write_dng(coffee.resize((2400, 1600)), root / "after.dng")

    def poison_failed() -> bool:
        failed = status(env)["queue"]["failed_files"]
        return [f["path"] for f in failed] == [str(poison)]

    wait_for(poison_failed, f"the poison file in the failure ledger; log:\n{run.log()}", 10)
    wait_for(lambda: store_mismatch(data_dir, root, indexed) is None,
             f"the other photos indexed: {store_mismatch(data_dir, root, indexed)}; log:\n{run.log()}",
             FAULT_TIMEOUT)
    report = status(env)
    assert report["store"]["images"] == 2  # fine.jpg and after.dng
    [failed] = report["queue"]["failed_files"]
    assert "the worker died 3 times while indexing this file (last: killed by signal SIGKILL)" in failed["reason"]
    assert report["queue"]["running_jobs"] == 0 and report["queue"]["queued_jobs"] == 0
    [logged] = events(run, "file_failed")
    assert logged["path"] == str(poison) and logged["level"] == "error"
    assert run.process.poll() is None
    assert run.stop() == 0
    assert "Traceback" not in run.log()
