"""The RQ queue of index jobs.

Jobs carry paths only (JSON-serialised, never pickled); a worker looks at each
path when the job runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import redis
from rq import Queue, Retry
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from imgwatch.config import Config
from imgwatch.workqueue.connection import connect

INDEX_JOB = "imgwatch.workers.jobs.index_paths"
JOB_RETRIES = 2


def job_paths(job: Job) -> list[str]:
    """The paths an index job carries (its one argument)."""
    return list(job.args[0]) if job.args else []


class WorkQueue:
    def __init__(self, connection: redis.Redis, name: str = "imgwatch", job_timeout: int = 1800) -> None:
        self.connection = connection
        self.name = name
        self.job_timeout = job_timeout
        self.rq_queue = Queue(name, connection=connection, serializer=JSONSerializer)

    @classmethod
    def from_config(cls, config: Config) -> WorkQueue:
        return cls(connect(config), config.queue.name, config.queue.job_timeout)

    def enqueue_paths(self, paths: Sequence[str], batch_size: int) -> list[str]:
        """Enqueue ``paths`` as jobs of at most ``batch_size`` paths; returns the job ids."""
        unique = list(dict.fromkeys(paths))
        job_ids = []
        for start in range(0, len(unique), batch_size):
            batch = unique[start : start + batch_size]
            job = self.rq_queue.enqueue(
                INDEX_JOB,
                batch,
                job_timeout=self.job_timeout,
                retry=Retry(max=JOB_RETRIES),
                result_ttl=600,
                failure_ttl=7 * 24 * 3600,
                description=f"index {len(batch)} path(s)",
            )
            job_ids.append(job.id)
        return job_ids

    def fetch_jobs(self, job_ids: Sequence[str]) -> list[Job]:
        """The jobs still stored under ``job_ids`` (expired ones are left out)."""
        jobs = Job.fetch_many(list(job_ids), connection=self.connection, serializer=JSONSerializer)
        return [job for job in jobs if job is not None]

    def recover_abandoned(self) -> int:
        """Requeue jobs left 'started' by workers that died (only safe when none are alive)."""
        started = StartedJobRegistry(queue=self.rq_queue)
        count = started.count
        if count:
            started.cleanup(timestamp=time.time() + 10 * 365 * 24 * 3600)
        return count
