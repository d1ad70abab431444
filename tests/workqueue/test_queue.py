"""The queue of index jobs (imgwatch.workqueue.queue) against a real embedded Valkey server."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from imgwatch.config import Config
from imgwatch.daemon.scan import reconcile_and_enqueue
from imgwatch.store import open_store
from imgwatch.workqueue import INDEX_JOB, FailureLedger, WorkQueue, job_paths, take_snapshot
from imgwatch.workqueue.queue import MAX_PATHS_PER_JOB, paths_per_job


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
