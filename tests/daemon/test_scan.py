"""One reconciliation pass, as `imgwatch scan` runs it, against a real queue and store."""

from __future__ import annotations

from pathlib import Path

from imgwatch.config import Config
from imgwatch.daemon.scan import scan_and_enqueue
from imgwatch.store import GraphStore
from imgwatch.workqueue import INDEX_JOB, FailureLedger, WorkQueue, job_paths, take_snapshot


def test_a_scan_leaves_out_files_a_waiting_job_holds_so_the_backlog_counts_each_once(
    config: Config, store_with_test_model: GraphStore, work_queue: WorkQueue, tmp_path: Path
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
    scanned = scan_and_enqueue(config, store_with_test_model, failures, work_queue, leave_queued=True)
    assert (scanned.changed, scanned.gone, scanned.already_queued) == (2, 0, 3)
    jobs = work_queue.fetch_jobs(work_queue.rq_queue.get_job_ids())
    assert sorted(path for job in jobs if job.func_name == INDEX_JOB for path in job_paths(job)) == files  # each once
    assert take_snapshot(work_queue, failures).pending_paths == 5
