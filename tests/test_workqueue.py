"""The work queue against a real embedded Valkey server."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import pytest

from imgwatch.config import Config, ConfigError
from imgwatch.daemon.scan import reconcile_and_enqueue
from imgwatch.redis_server import EmbeddedRedis
from imgwatch.store import open_store
from imgwatch.workqueue import INDEX_JOB, FailureLedger, QueueUnavailable, WorkQueue, job_paths, take_snapshot
from imgwatch.workqueue.jobs import MAX_PATHS_PER_JOB, paths_per_job
from tests.helpers import make_config


def test_paths_go_out_deduplicated_in_json_jobs_of_batch_size(work_queue: WorkQueue, failures: FailureLedger) -> None:
    paths = [f"/photos/{i}.jpg" for i in range(70)] + ["/photos/0.jpg"]
    job_ids = work_queue.enqueue_paths(paths, batch_size=32)
    assert len(job_ids) == 3
    jobs = work_queue.fetch_jobs(job_ids)
    assert [len(job_paths(job)) for job in jobs] == [32, 32, 6]
    assert jobs[0].func_name == INDEX_JOB
    raw = work_queue.connection.hget(jobs[0].key, "data")
    assert raw is not None
    func, _, args, _ = json.loads(zlib.decompress(raw))  # JSON, never a pickle
    assert func == INDEX_JOB and args[0][0] == "/photos/0.jpg"
    snapshot = take_snapshot(work_queue, failures)
    assert (snapshot.queued_jobs, snapshot.queued_paths, snapshot.running_jobs) == (3, 70, 0)


def test_failed_files_are_kept_with_reason_and_signature_until_cleared(
    work_queue: WorkQueue, failures: FailureLedger
) -> None:
    failures.record("/p/bad.jpg", "cannot decode /p/bad.jpg: truncated", 10, 1234)
    failures.record("/p/gone.jpg", "cannot read", None, None)
    assert [f.path for f in take_snapshot(work_queue, failures).failed_files] == ["/p/bad.jpg", "/p/gone.jpg"]
    assert failures.failed_signatures() == {"/p/bad.jpg": (10, 1234)}
    failures.clear(["/p/bad.jpg"])
    assert [f.path for f in failures.failed_files()] == ["/p/gone.jpg"]


def test_the_ledger_keeps_one_record_per_path_and_names_that_are_not_utf8(failures: FailureLedger) -> None:
    odd = os.fsdecode(b"/p/caf\xe9.jpg")  # a Latin-1 name on a UTF-8 system
    failures.record(odd, "first reason", 1, 1)
    failures.record(odd, "second reason", 2, 2)  # a later failure replaces the record
    [failed] = failures.failed_files()
    assert (failed.path, failed.reason, failed.size, failed.mtime_ns) == (odd, "second reason", 2, 2)
    assert failed.at > 0
    failures.clear([])  # nothing to clear is fine
    failures.clear([odd])
    assert failures.failed_files() == []


def test_each_queue_has_a_ledger_of_its_own(work_queue: WorkQueue, failures: FailureLedger) -> None:
    other = FailureLedger(work_queue.connection, work_queue.name + "-other")
    failures.record("/p/bad.jpg", "bad", 1, 1)
    assert other.failed_files() == []
    assert [f.path for f in FailureLedger.for_queue(work_queue).failed_files()] == ["/p/bad.jpg"]


def test_queued_work_survives_a_restart_of_the_embedded_server(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    with EmbeddedRedis(config):
        WorkQueue.from_config(config).enqueue_paths(["/a.jpg", "/b.jpg"], batch_size=1)
    with EmbeddedRedis(config):
        work_queue = WorkQueue.from_config(config)
        assert take_snapshot(work_queue, FailureLedger.for_queue(work_queue)).queued_paths == 2


def test_an_unreachable_queue_is_one_clear_error(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    with pytest.raises(QueueUnavailable, match="imgwatch run"):
        WorkQueue.from_config(config)
    config.queue.redis_url = "redis://127.0.0.1:1/0"
    with pytest.raises(QueueUnavailable, match="127.0.0.1:1"):
        WorkQueue.from_config(config)


def test_the_password_comes_from_password_file(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    with EmbeddedRedis(config) as server:
        config.queue.redis_url = server.url
        WorkQueue.from_config(config).connection.config_set("requirepass", "s3cret")
        with pytest.raises(QueueUnavailable, match="refused the credentials"):
            WorkQueue.from_config(config)
        secret = tmp_path / "secret"
        secret.write_text("s3cret\n")
        config.queue.password_file = str(secret)
        assert WorkQueue.from_config(config).connection.ping()
        config.queue.password_file = str(tmp_path / "missing")
        with pytest.raises(ConfigError, match="missing"):
            WorkQueue.from_config(config)


@pytest.mark.parametrize(("backlog", "workers", "per_job"), [
    (40, 1, 32),  # a small backlog: watch.batch_size
    (1024, 1, 256),  # a first scan: four jobs for the one worker
    (100_000, 1, 256),  # no bigger than 8 x watch.batch_size
    (1024, 4, 64),  # four jobs for each of four workers
    (1024, 16, 32),  # never smaller than watch.batch_size
    (500, 1, 128),  # a multiple of watch.batch_size (an even one keeps move pairs together)
])
def test_a_backlog_goes_out_in_bigger_jobs_that_every_worker_shares(backlog: int, workers: int, per_job: int) -> None:
    assert paths_per_job(backlog, 32, workers) == per_job


def test_backlog_jobs_stay_within_what_workers_accept() -> None:
    assert paths_per_job(10**6, 2000, 1) == MAX_PATHS_PER_JOB  # 8 x 2000 would be refused by the guard


def test_a_first_scan_of_many_files_is_queued_in_backlog_sized_jobs(config: Config, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    for index in range(90):
        (root / f"{index}.jpg").write_bytes(b"x")
    config.general.roots = [str(root)]
    config.watch.batch_size, config.workers.count = 4, 2
    work_queue = WorkQueue.from_config(config)
    with open_store(config) as store:
        reconcile_and_enqueue(config, store, FailureLedger.for_queue(work_queue), work_queue)
    jobs = work_queue.fetch_jobs(work_queue.rq_queue.get_job_ids())
    assert [len(job_paths(job)) for job in jobs] == [12] * 7 + [6]  # ceil(90 / (4 jobs x 2 workers)) = 12
