"""Requeueing the work of workers that died (SIGKILL, OOM killer, a crashed driver).

RQ only notices a dead worker's started job after the job's timeout; imgwatch looks
for started jobs whose worker is gone and puts them back on the queue at once.
"""

from __future__ import annotations

from imgwatch.workqueue import WorkQueue


def requeue_orphaned_jobs(work_queue: WorkQueue) -> int:
    """Requeue started jobs whose worker no longer exists; returns how many."""
    return 0  # filled in by the self-healing work (issue 8)
