"""The Redis/RQ work queue shared by the daemon, the workers and the CLI.

Jobs carry paths only (JSON-serialised, never pickled); a worker looks at each
path when the job runs. Files that could not be indexed are kept in a Redis
hash with their reason, so `imgwatch status` can show them and reconciliation
does not retry an unchanged bad file on every start.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import redis
from rq import Queue, Retry
from rq.job import Job
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.worker import BaseWorker

from imgwatch.config import Config, read_secret_file
from imgwatch.errors import QueueUnavailable

INDEX_JOB = "imgwatch.workers.jobs.index_paths"
JOB_RETRIES = 2
_FAILED_FILES_KEY = "imgwatch:{queue}:failed-files"


def redis_url_for(config: Config) -> str:
    return config.queue.redis_url or f"unix://{config.data_dir.queue_socket}"


def connect(config: Config, timeout: float = 5.0) -> redis.Redis:
    """A checked connection to the configured Redis (or the embedded server)."""
    url = redis_url_for(config)
    password_file = config.queue.password_file
    password = read_secret_file(password_file, "the Redis password") if password_file else None
    kwargs: dict[str, object] = {"socket_connect_timeout": timeout, "health_check_interval": 30}
    if password is not None:
        kwargs["password"] = password
    try:
        connection = redis.Redis.from_url(url, **kwargs)  # type: ignore[arg-type]
        connection.ping()
    except (redis.AuthenticationError, redis.AuthenticationWrongNumberOfArgsError, redis.ResponseError) as exc:
        raise QueueUnavailable(
            f"the queue at {url} refused the credentials ({exc}); check queue.password_file or the URL"
        ) from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        if config.queue.redis_url:
            hint = "check that the server is running and queue.redis_url (IMGWATCH_QUEUE_REDIS_URL) is right"
        else:
            hint = "start `imgwatch run` (it starts the embedded queue) or set queue.redis_url to an external Redis"
        raise QueueUnavailable(f"cannot reach the queue at {url}: {exc}; {hint}") from None
    return connection


@dataclass
class FailedFile:
    path: str
    reason: str
    size: int | None
    mtime_ns: int | None
    at: float


@dataclass
class FailedJob:
    job_id: str
    paths: int
    reason: str


@dataclass
class QueueSnapshot:
    queued_jobs: int
    queued_paths: int
    running_jobs: int
    running_paths: int
    workers: int
    failed_jobs: list[FailedJob] = field(default_factory=list)
    failed_files: list[FailedFile] = field(default_factory=list)


class WorkQueue:
    def __init__(self, connection: redis.Redis, name: str = "imgwatch", job_timeout: int = 1800) -> None:
        self.connection = connection
        self.name = name
        self.job_timeout = job_timeout
        self.rq_queue = Queue(name, connection=connection, serializer=JSONSerializer)
        self._failed_key = _FAILED_FILES_KEY.format(queue=name)

    @classmethod
    def from_config(cls, config: Config) -> WorkQueue:
        return cls(connect(config), config.queue.name, config.queue.job_timeout)

    # -- enqueueing ---------------------------------------------------------
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

    # -- failed files -------------------------------------------------------
    def record_failure(self, path: str, reason: str, size: int | None, mtime_ns: int | None) -> None:
        value = json.dumps({"reason": reason, "size": size, "mtime_ns": mtime_ns, "at": time.time()})
        # fsencode: a file name that is not valid UTF-8 still gets its record.
        self.connection.hset(self._failed_key, os.fsencode(path), value)

    def clear_failures(self, paths: Iterable[str]) -> None:
        keys = [os.fsencode(p) for p in paths]
        if keys:
            self.connection.hdel(self._failed_key, *keys)

    def failed_files(self) -> list[FailedFile]:
        files = []
        for raw_path, raw_value in self.connection.hscan_iter(self._failed_key):
            value = json.loads(raw_value)
            files.append(FailedFile(os.fsdecode(raw_path), value["reason"], value.get("size"),
                                    value.get("mtime_ns"), value.get("at", 0.0)))
        return sorted(files, key=lambda f: f.path)

    def failed_signatures(self) -> dict[str, tuple[int, int]]:
        """(size, mtime_ns) each failed file had, for reconciliation."""
        return {
            f.path: (f.size, f.mtime_ns)
            for f in self.failed_files()
            if f.size is not None and f.mtime_ns is not None
        }

    # -- status ---------------------------------------------------------------
    def _paths_in(self, job_ids: Sequence[str]) -> int:
        jobs = Job.fetch_many(list(job_ids), connection=self.connection, serializer=JSONSerializer)
        return sum(len(job.args[0]) for job in jobs if job is not None and job.args)

    def snapshot(self, max_failed_jobs: int = 20) -> QueueSnapshot:
        started = StartedJobRegistry(queue=self.rq_queue)
        failed = FailedJobRegistry(queue=self.rq_queue)
        queued_ids = self.rq_queue.get_job_ids(0, 999)  # counting paths of the first 1000 jobs is enough
        running_ids = started.get_job_ids()
        failed_jobs = []
        for job_id in failed.get_job_ids(0, max_failed_jobs - 1, desc=True):
            job = Job.fetch(job_id, connection=self.connection, serializer=JSONSerializer) if job_id else None
            if job is None:
                continue
            result = job.latest_result()
            reason = (result.exc_string or "").strip().splitlines()[-1:] if result else []
            failed_jobs.append(FailedJob(job.id, len(job.args[0]) if job.args else 0,
                                         reason[0] if reason else "unknown"))
        return QueueSnapshot(
            queued_jobs=self.rq_queue.count,
            queued_paths=self._paths_in(queued_ids),
            running_jobs=len(running_ids),
            running_paths=self._paths_in([entry.split(":")[0] for entry in running_ids]),
            workers=BaseWorker.count(connection=self.connection, queue=self.rq_queue),
            failed_jobs=failed_jobs,
            failed_files=self.failed_files(),
        )

    def recover_abandoned(self) -> int:
        """Requeue jobs left 'started' by workers that died (only safe when none are alive)."""
        started = StartedJobRegistry(queue=self.rq_queue)
        count = started.count
        if count:
            started.cleanup(timestamp=time.time() + 10 * 365 * 24 * 3600)
        return count
