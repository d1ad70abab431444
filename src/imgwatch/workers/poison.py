"""Poison files: a file that keeps killing the workers that index it.

Each worker death is counted on the job itself, in ``job.meta[DEATHS_META]`` (stored
with the job in Redis: it survives restarts and goes with the job to whichever worker
takes it next). A job of several paths whose worker dies a second time is split into
one-path jobs, each starting with the count minus one: the next death names the file at
fault. A one-path job whose worker died ``workers.max_attempts`` times is not requeued:
its file goes into the failure ledger with the reason, and is retried when it changes.

The rule and the failure record; imgwatch.workers.recovery applies them to a dead
worker's job.
"""

from __future__ import annotations

from rq.job import Job

from imgwatch.files import file_signature
from imgwatch.workqueue import FailureLedger, WorkQueue

DEATHS_META = "imgwatch_worker_deaths"
CAUSE_META = "imgwatch_last_death"


def deaths_of(job: Job, counts: bool) -> int:
    """How many of ``job``'s workers died on it, its last one included when its death ``counts``."""
    return int(job.meta.get(DEATHS_META, 0)) + (1 if counts else 0)


def next_step(paths: int, deaths: int, max_attempts: int) -> str:
    """What becomes of a dead worker's job of ``paths`` paths after ``deaths`` worker deaths:
    "failed" (its one file is a poison file), "split" (one job per path) or "requeued" (as it is)."""
    if paths == 1 and deaths >= max_attempts:
        return "failed"
    if paths > 1 and deaths >= min(2, max_attempts):
        return "split"
    return "requeued"


def record_failed(work_queue: WorkQueue, path: str, deaths: int, cause: str) -> None:
    """Put a poison file into the failure ledger, to be retried when it changes."""
    reason = (f"the worker died {deaths} times while indexing this file (last: {cause}); "
              f"{path} is retried when it changes")
    signature = file_signature(path)
    size, mtime_ns = signature[:2] if signature else (None, None)
    # permanent: reconciliation does not retry it until the file changes.
    FailureLedger.for_queue(work_queue).record(path, reason, size, mtime_ns, permanent=True, attempts=deaths)
