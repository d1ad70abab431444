"""Whoever can write to the queue's Redis cannot run code on the workers, nor make them read
files outside the roots; the data dir is private; a Redis password is never shown.

One real `imgwatch worker --burst ROOT` works through a queue that holds, besides
imgwatch's own jobs, everything an intruder might put there with RQ's own API.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from rq import Callback, Queue, Retry
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from imgwatch.datadir import DataDir
from imgwatch.errors import QueueUnavailable
from imgwatch.store.embedded import EmbeddedGraphStore
from imgwatch.valkey_server import EmbeddedValkey
from imgwatch.workqueue import INDEX_JOB, FailureLedger, WorkQueue
from imgwatch.workqueue.connection import redacted
from tests.helpers import CALLED_MARKER_ENV, RunningImgwatch, make_config, process_env, wait_for

REPO = Path(__file__).resolve().parent.parent


class RunsOnUnpickling:
    """Unpickling this runs a shell command: what a pickled job can do to a worker that loads it."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Callable[[str], int], tuple[str]]:
        return (os.system, (self.command,))


@dataclass
class Scenario:
    root: Path
    markers: Path
    data_dir: Path
    work_queue: WorkQueue
    worker: subprocess.CompletedProcess[str]
    jobs: dict[str, str] = field(default_factory=dict)  # what each enqueued job is -> its id
    paths: dict[str, str] = field(default_factory=dict)

    def job(self, name: str) -> Job:
        return Job.fetch(self.jobs[name], connection=self.work_queue.connection, serializer=JSONSerializer)

    def failure(self, name: str) -> str:
        result = self.job(name).latest_result()
        assert result is not None and result.exc_string, f"job {name} has no recorded failure"
        return result.exc_string.strip().splitlines()[-1]

    def attempts(self, name: str) -> int:
        """How many times the worker took the job (RQ logs each failed attempt; results only the last)."""
        return self.worker.stderr.count(f"job {self.jobs[name]}: exception raised while executing")

    def refusal_logs(self, name: str) -> list[dict[str, object]]:
        lines = [json.loads(line) for line in self.worker.stderr.splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("event") == "job_refused" and line.get("job_id") == self.jobs[name]]


ODD_ARGUMENTS = {
    "a dict": (({"paths": ["/x.jpg"]},), {}, "must be a list of paths, not a dict"),
    "relative paths": ((["photos/a.jpg"],), {}, "is not absolute"),
    "non-strings": (([1, 2],), {}, "every path must be a string"),
    "two arguments": ((["/a.jpg"], ["/b.jpg"]), {}, "takes one argument, a list of paths; this one has 2"),
    "keyword arguments": ((), {"paths": ["/a.jpg"]}, "keyword arguments"),
    "a NUL in a path": ((["/photos/a\x00.jpg"],), {}, "NUL character"),
    "too many paths": (([f"/p/{i}.jpg" for i in range(10_001)],), {}, "at most 10000"),
}


@pytest.fixture(scope="module")
def scenario(
    tmp_path_factory: pytest.TempPathFactory, queue_server: EmbeddedValkey,
    photo_arrays: dict[str, object],
) -> Iterator[Scenario]:
    from PIL import Image

    base = tmp_path_factory.mktemp("security")
    root, markers, elsewhere = base / "photos", base / "markers", base / "elsewhere"
    for folder in (root, markers, elsewhere):
        folder.mkdir()
    paths = {}
    for name, folder, photo in [("inside", root, "astronaut"), ("last", root, "coffee"),
                                ("outside", elsewhere, "rocket")]:
        paths[name] = str(folder / f"{name}.jpg")
        Image.fromarray(photo_arrays[photo]).save(paths[name])  # type: ignore[arg-type]

    config = make_config(base / "data")
    config.queue.redis_url = queue_server.url
    config.queue.name = f"security-{uuid.uuid4().hex[:8]}"
    work_queue = WorkQueue.from_config(config)
    rq_queue = work_queue.rq_queue  # JSON, like imgwatch's own
    pickle_queue = Queue(config.queue.name, connection=work_queue.connection)  # rq's default serializer
    assert pickle_queue.serializer is not JSONSerializer
    called = Callback("tests.helpers.record_call")

    jobs = {
        "os.system": rq_queue.enqueue("os.system", f"touch {markers / 'os-system'}",
                                      retry=Retry(max=3), on_failure=called, on_success=called),
        "subprocess": rq_queue.enqueue("subprocess.check_call", ["touch", str(markers / "subprocess")]),
        "pickled": pickle_queue.enqueue(INDEX_JOB, [RunsOnUnpickling(f"touch {markers / 'unpickled'}")]),
        "pickled with retries": pickle_queue.enqueue("os.getpid", retry=Retry(max=2), on_failure=called),
        "index job with a callback": rq_queue.enqueue(INDEX_JOB, [paths["inside"]], on_success=called),
    }
    for name, (args, kwargs, _) in ODD_ARGUMENTS.items():
        jobs[name] = rq_queue.enqueue(INDEX_JOB, args=args, kwargs=kwargs, retry=Retry(max=2))
    jobs["inside and outside"] = rq_queue.enqueue(INDEX_JOB, [paths["inside"], paths["outside"]])
    [jobs["last"]] = work_queue.fetch_jobs(work_queue.enqueue_paths([paths["last"]], batch_size=32))

    environ = process_env(base, **{
        "IMGWATCH_QUEUE_REDIS_URL": queue_server.url, "IMGWATCH_QUEUE_NAME": config.queue.name,
        # A callback that ran would be importable (tests.helpers) and would leave this marker.
        CALLED_MARKER_ENV: str(markers), "PYTHONPATH": str(REPO),
    })
    worker = subprocess.run([sys.executable, "-m", "imgwatch", "worker", "--burst", str(root)], env=environ,
                            capture_output=True, text=True, timeout=300, check=False, cwd=base)
    yield Scenario(root, markers, base / "data", work_queue, worker,
                   {name: job.id for name, job in jobs.items()}, paths)
    work_queue.connection.close()


def stored_paths(data_dir: Path) -> set[str]:
    with EmbeddedGraphStore(DataDir(data_dir).store_file) as store:
        return {state.path for state in store.file_states()}


def test_the_worker_refuses_foreign_functions_runs_nothing_and_keeps_going(scenario: Scenario) -> None:
    assert scenario.worker.returncode == 0, scenario.worker.stderr
    ran = sorted(p.name for p in scenario.markers.iterdir())
    assert ran == [], ran
    assert "refused: the job runs 'os.system', not imgwatch's" in scenario.failure("os.system")
    assert "refused: the job runs 'subprocess.check_call'" in scenario.failure("subprocess")
    assert len(scenario.refusal_logs("os.system")) == 1
    failed = set(FailedJobRegistry(queue=scenario.work_queue.rq_queue).get_job_ids())
    assert {scenario.jobs["os.system"], scenario.jobs["subprocess"]} <= failed
    assert scenario.paths["last"] in stored_paths(scenario.data_dir)  # the next real job was indexed
    assert scenario.job("last").get_status() == "finished"


def test_a_refused_job_is_failed_once_never_retried_and_its_callbacks_never_run(scenario: Scenario) -> None:
    job = scenario.job("os.system")
    assert job.get_status() == "failed"
    assert scenario.attempts("os.system") == 1  # though it asked for 3 retries
    assert len(scenario.refusal_logs("os.system")) == 1
    assert not (scenario.markers / f"called-{job.id}").exists()
    assert not (scenario.markers / f"called-{scenario.jobs['index job with a callback']}").exists()
    assert "refused: the job carries a success callback ('tests.helpers.record_call')" in \
        scenario.failure("index job with a callback")


def test_a_pickled_job_is_never_unpickled_and_status_calls_it_unreadable(scenario: Scenario) -> None:
    assert not (scenario.markers / "unpickled").exists()
    assert scenario.job("pickled").get_status() == "failed"
    assert scenario.jobs["pickled"] in FailedJobRegistry(queue=scenario.work_queue.rq_queue).get_job_ids()
    from imgwatch.workqueue import take_snapshot

    snapshot = take_snapshot(scenario.work_queue, FailureLedger.for_queue(scenario.work_queue), 50)
    reasons = {job.job_id: job.reason for job in snapshot.failed_jobs}
    assert reasons[scenario.jobs["pickled"]] == "unreadable job (not an imgwatch job)"
    assert reasons[scenario.jobs["os.system"]].startswith("JobRefused: refused: the job runs 'os.system'")


def test_a_pickled_job_is_not_retried_and_its_callback_never_runs(scenario: Scenario) -> None:
    assert not (scenario.markers / f"called-{scenario.jobs['pickled with retries']}").exists()
    assert scenario.attempts("pickled with retries") == 1
    assert "not a JSON imgwatch job" in scenario.failure("pickled with retries")


@pytest.mark.parametrize("name", sorted(ODD_ARGUMENTS))
def test_odd_arguments_are_refused(scenario: Scenario, name: str) -> None:
    assert ODD_ARGUMENTS[name][2] in scenario.failure(name)
    assert scenario.job(name).get_status() == "failed"
    assert scenario.attempts(name) == 1  # imgwatch's own jobs carry retries: a refused one is not retried


def test_a_path_outside_the_roots_is_refused_and_the_rest_of_its_job_indexed(scenario: Scenario) -> None:
    stored = stored_paths(scenario.data_dir)
    assert scenario.paths["inside"] in stored and scenario.paths["outside"] not in stored
    ledger = {f.path: f.reason for f in FailureLedger.for_queue(scenario.work_queue).failed_files()}
    assert list(ledger) == [scenario.paths["outside"]]
    assert "outside the folders this worker indexes" in ledger[scenario.paths["outside"]]
    assert str(scenario.root) in ledger[scenario.paths["outside"]]


def test_a_worker_without_roots_refuses_to_start(tmp_path: Path, queue_server: EmbeddedValkey) -> None:
    environ = process_env(tmp_path, IMGWATCH_QUEUE_REDIS_URL=queue_server.url, IMGWATCH_QUEUE_NAME="no-roots")
    result = subprocess.run([sys.executable, "-m", "imgwatch", "worker", "--burst"], env=environ,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert "set general.roots" in result.stderr and "pass ROOT" in result.stderr
    assert "Traceback" not in result.stderr


# -- the data dir is private ---------------------------------------------------------------


def open_modes(folder: Path) -> list[str]:
    """Everything under ``folder`` (itself included) that group or others may use."""
    found = []
    for path in [folder, *folder.rglob("*")]:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode) and mode & 0o077:
            found.append(f"{path.relative_to(folder.parent)} {oct(stat.S_IMODE(mode))}")
    return found


def test_a_real_run_keeps_its_data_dir_private(
    tmp_path: Path, write_photo: Callable[..., Path]
) -> None:
    root = tmp_path / "photos"
    write_photo(root / "a.jpg", "chelsea")
    data = tmp_path / "data"
    env = process_env(tmp_path)
    previous = os.umask(0o022)  # the usual umask, whatever earlier tests left: imgwatch must not rely on it
    try:
        run = RunningImgwatch(env, root, tmp_path / "run.log")
    finally:
        os.umask(previous)
    try:
        wait_for(lambda: (data / "store.sqlite3").exists() and str(root / "a.jpg") in stored_paths(data),
                 f"the photo to be indexed; log:\n{run.log() if (tmp_path / 'run.log').exists() else ''}")
        names = {p.name for p in data.rglob("*")}
        assert {"store.sqlite3-wal", "store.sqlite3-shm", "queue", "valkey.log", "run.lock"} <= names, names
        assert any(p.parent.name.startswith("appendonly") for p in data.rglob("*")), names
        assert open_modes(data) == []  # while running: WAL and shared memory included
    finally:
        assert run.stop() == 0, run.log()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "store.sqlite3").stat().st_mode) == 0o600
    assert open_modes(data) == []  # after a clean stop: snapshot and append-only files too


def test_an_open_data_dir_left_by_an_older_version_is_closed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    (data / "queue").mkdir(parents=True)
    data.chmod(0o755)
    (data / "queue").chmod(0o755)
    (data / "store.sqlite3").write_bytes(b"")
    (data / "store.sqlite3").chmod(0o644)
    (data / "queue" / "valkey.log").write_text("old log\n")
    (data / "queue" / "valkey.log").chmod(0o644)
    (data / "notes.txt").write_text("not imgwatch's\n")
    (data / "notes.txt").chmod(0o644)

    DataDir(data).create()

    assert open_modes(data) == ["data/notes.txt 0o644"]  # only imgwatch's own files are changed
    assert stat.S_IMODE((data / "store.sqlite3").stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "queue").stat().st_mode) == 0o700
    logged = capsys.readouterr()
    assert (logged.out + logged.err).count("data_dir_made_private") == 1  # one log line says so
    DataDir(data).create()
    logged = capsys.readouterr()
    assert "data_dir_made_private" not in logged.out + logged.err  # and only when there was something to do


# -- passwords are never shown --------------------------------------------------------------

SECRET = "Sup3r-s3cret-pw"


@pytest.mark.parametrize(("url", "shown"), [
    (f"redis://default:{SECRET}@queue-host:6379/0", "redis://default:***@queue-host:6379/0"),
    (f"redis://:{SECRET}@queue-host:6379/0", "redis://:***@queue-host:6379/0"),
    (f"rediss://{SECRET}@queue-host:6380/0?ssl_ca_certs=/etc/ca.pem",
     "rediss://***@queue-host:6380/0?ssl_ca_certs=/etc/ca.pem"),
    (f"redis://queue-host:6379/0?password={SECRET}&db=1", "redis://queue-host:6379/0?password=***&db=1"),
    ("unix:///run/imgwatch/redis.sock", "unix:///run/imgwatch/redis.sock"),
])
def test_redacted_masks_the_password_in_a_redis_url(url: str, shown: str) -> None:
    assert redacted(url) == shown


@pytest.mark.parametrize("url", [
    f"redis://imgwatch:{SECRET}@127.0.0.1:1/0",  # nobody listening
    f"http://:{SECRET}@queue-host/0",  # not a Redis URL
    f"redis://:{SECRET}@queue-host:6379/0?db=notanumber",  # a parameter redis-py rejects
])
def test_queue_errors_never_show_the_password(tmp_path: Path, url: str) -> None:
    config = make_config(tmp_path / "data")
    config.queue.redis_url = url
    with pytest.raises(QueueUnavailable) as caught:
        WorkQueue.from_config(config)
    assert SECRET not in str(caught.value) and "***" in str(caught.value)


def test_refused_credentials_never_show_the_password(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    with EmbeddedValkey(config) as server:
        WorkQueue.from_config(config).connection.config_set("requirepass", "the-right-one")
        config.queue.redis_url = f"unix://:{SECRET}@{server.socket_path}"
        with pytest.raises(QueueUnavailable, match="refused the credentials") as caught:
            WorkQueue.from_config(config)
    assert SECRET not in str(caught.value) and "unix://:***@" in str(caught.value)


def test_status_doctor_and_worker_never_print_the_password(tmp_path: Path) -> None:
    env = process_env(tmp_path, IMGWATCH_QUEUE_REDIS_URL=f"redis://imgwatch:{SECRET}@127.0.0.1:1/0",
                      IMGWATCH_GENERAL_ROOTS=str(tmp_path))
    for args in (["status"], ["status", "--json"], ["doctor"], ["doctor", "--json"], ["worker", "--burst"]):
        result = subprocess.run([sys.executable, "-m", "imgwatch", *args], env=env, capture_output=True,
                                text=True, timeout=120, check=False)
        assert SECRET not in result.stdout + result.stderr, args
        assert "imgwatch:***@127.0.0.1:1" in result.stdout + result.stderr, args


def test_registry_cleanup_never_runs_a_foreign_jobs_failure_callback(
    work_queue: WorkQueue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RQ's maintenance fails expired 'started' jobs and calls their failure callback: through the
    worker's queue that callback must never be imported or called (anyone with Redis access could
    plant such a job)."""
    from rq import Callback
    from rq.registry import StartedJobRegistry, clean_registries

    from imgwatch.workers.worker import ImgwatchWorker
    from tests.helpers import CALLED_MARKER_ENV

    monkeypatch.setenv(CALLED_MARKER_ENV, str(tmp_path))
    planted = work_queue.rq_queue.enqueue("os.getpid", on_failure=Callback("tests.helpers.record_call"))
    worker = ImgwatchWorker(work_queue, "imgwatch-test-cleanup")
    [queue] = worker.queues
    # A job that looks abandoned: started long ago, its registry entry expired.
    planted.set_status("started")
    with work_queue.connection.pipeline() as pipe:
        pipe.zadd(StartedJobRegistry(queue=queue).key, {f"{planted.id}:e": 1})
        pipe.execute()

    clean_registries(queue)  # what run_maintenance_tasks does every minute

    assert list(tmp_path.iterdir()) == []  # the callback never ran
    assert StartedJobRegistry(queue=queue).count == 0  # and the cleanup itself still worked
