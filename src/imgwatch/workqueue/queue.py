"""The RQ queue of index and move jobs.

Jobs carry paths only (JSON-serialised, never pickled); a worker looks at each
path when the job runs. A move job carries ``[old, new]`` pairs (files or folders
moved within the watched roots): the worker renames what the store holds, so the
moved images keep their embeddings and links, then indexes both sides as usual. A reindex
job carries stored paths to embed with the model a reindex changes to (`imgwatch reindex`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import redis
from redis.client import Pipeline
from rq import Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from imgwatch.config import Config
from imgwatch.workqueue.connection import connect

INDEX_JOB = "imgwatch.workers.jobs.index_paths"
MOVE_JOB = "imgwatch.workers.jobs.move_paths"
REINDEX_JOB = "imgwatch.workers.jobs.reindex_paths"
JOB_RETRIES = 2
# Pairs per move job: a moved folder is one pair, so this bounds only many single-file moves.
MOVES_PER_JOB = 1000
# A backlog goes out in jobs of up to this many times watch.batch_size: a worker's pipeline
# (decode pool, GPU) runs full within a job and drains at its end (H100, 1,024 12 MP photos,
# one worker: 149 images/s in jobs of 32, 213 in jobs of 128; bench/RESULTS.md) ...
MAX_JOB_GROWTH = 8
# ... while leaving about this many jobs for each worker, so that every worker gets a share.
JOBS_PER_WORKER = 4
# Workers refuse bigger index jobs (workers/guard.py): whoever can write to the queue must not
# make a worker hold an unbounded list.
MAX_PATHS_PER_JOB = 10_000


def paths_per_job(backlog: int, batch_size: int, workers: int) -> int:
    """Paths per index job for ``backlog`` waiting paths: ``batch_size`` (watch.batch_size),
    or a multiple of it, up to MAX_JOB_GROWTH times, when each of ``workers`` would get over
    JOBS_PER_WORKER jobs of that size. A multiple, so that an even batch_size keeps the
    daemon's [new, old] pairs of missed moves within one job."""
    share = batch_size * math.ceil(backlog / (JOBS_PER_WORKER * max(1, workers) * batch_size))
    return min(MAX_PATHS_PER_JOB, max(batch_size, min(batch_size * MAX_JOB_GROWTH, share)))


def job_paths(job: Job) -> list[str]:
    """The paths a job carries: an index job's argument; for a move job each pair's new and
    old path (indexing those is what a move job ends with, so it is what its recovery redoes)."""
    if not job.args:
        return []
    if job.func_name == MOVE_JOB:
        return [path for pair in job.args[0] for path in reversed(pair)]
    return list(job.args[0])


class WorkQueue:
    """The queue of index jobs.

    ``max_attempts`` is ``workers.max_attempts``: how many times a worker may die on a
    one-path job before its file is recorded as failed (see imgwatch.workers.poison).
    """

    def __init__(self, connection: redis.Redis, name: str = "imgwatch", job_timeout: int = 1800,
                 max_attempts: int = 3) -> None:
        self.connection = connection
        self.name = name
        self.job_timeout = job_timeout
        self.max_attempts = max_attempts
        self.rq_queue = Queue(name, connection=connection, serializer=JSONSerializer)

    @classmethod
    def from_config(cls, config: Config) -> WorkQueue:
        return cls(connect(config), config.queue.name, config.queue.job_timeout, config.workers.max_attempts)

    def enqueue_paths(self, paths: Sequence[str], batch_size: int, *, meta: Mapping[str, object] | None = None,
                      at_front: bool = False, pipeline: Pipeline | None = None) -> list[str]:
        """Enqueue ``paths`` as jobs of at most ``batch_size`` paths; returns the job ids.

        ``meta`` goes into each job's ``job.meta``; ``at_front`` puts the jobs before the
        queued ones; with ``pipeline`` nothing is sent until the caller executes it.
        """
        unique = list(dict.fromkeys(paths))
        return self._enqueue_in_batches(INDEX_JOB, "index", unique, batch_size, meta=meta, at_front=at_front,
                                        pipeline=pipeline)

    def enqueue_reindex(self, paths: Sequence[str], batch_size: int) -> list[str]:
        """Enqueue stored ``paths`` as reindex jobs of at most ``batch_size`` paths; returns the job ids."""
        return self._enqueue_in_batches(REINDEX_JOB, "reindex", list(dict.fromkeys(paths)), batch_size)

    def enqueue_moves(self, moves: Sequence[tuple[str, str]], *, pipeline: Pipeline | None = None) -> list[str]:
        """Enqueue ``(old, new)`` moves, in order, as move jobs; returns the job ids."""
        pairs = [[old, new] for old, new in moves]
        return self._enqueue_in_batches(MOVE_JOB, "move", pairs, MOVES_PER_JOB, pipeline=pipeline)

    def _enqueue_in_batches(self, function: str, verb: str, items: Sequence[object], per_job: int, *,
                            meta: Mapping[str, object] | None = None, at_front: bool = False,
                            pipeline: Pipeline | None = None) -> list[str]:
        job_ids = []
        for start in range(0, len(items), per_job):
            batch = list(items[start : start + per_job])
            job = self.rq_queue.enqueue(
                function,
                batch,
                job_timeout=self.job_timeout,
                retry=Retry(max=JOB_RETRIES),
                result_ttl=600,
                failure_ttl=7 * 24 * 3600,
                description=f"{verb} {len(batch)} path(s)",
                meta=dict(meta) if meta else None,
                at_front=at_front,
                pipeline=pipeline,
            )
            job_ids.append(job.id)
        return job_ids

    def fetch_jobs(self, job_ids: Sequence[str]) -> list[Job]:
        """The jobs still stored under ``job_ids`` (expired ones are left out)."""
        jobs = Job.fetch_many(list(job_ids), connection=self.connection, serializer=JSONSerializer)
        return [job for job in jobs if job is not None]
