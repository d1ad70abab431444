"""The Redis/RQ work queue shared by the daemon, the workers and the CLI.

One module per noun: ``connection`` (reaching Redis), ``jobs`` (the queue of index
jobs), ``failures`` (the ledger of files that could not be indexed), ``worker_roots``
(the folders running workers index) and ``status`` (a snapshot of the queue).
"""

from __future__ import annotations

from imgwatch.errors import QueueUnavailable
from imgwatch.workqueue.connection import connect, redis_url_for
from imgwatch.workqueue.failures import FailedFile, FailureLedger
from imgwatch.workqueue.queue import INDEX_JOB, JOB_RETRIES, WorkQueue, job_paths
from imgwatch.workqueue.status import FailedJob, QueueSnapshot, queue_is_idle, take_snapshot

__all__ = [
    "INDEX_JOB",
    "JOB_RETRIES",
    "FailedFile",
    "FailedJob",
    "FailureLedger",
    "QueueSnapshot",
    "QueueUnavailable",
    "WorkQueue",
    "connect",
    "job_paths",
    "queue_is_idle",
    "redis_url_for",
    "take_snapshot",
]
