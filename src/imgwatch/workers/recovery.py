"""Requeueing the work of workers that died (SIGKILL, OOM killer, a crashed driver).

RQ only notices a dead worker's started job after the job's timeout (half an hour);
imgwatch looks for started jobs whose worker is gone and puts them back on the queue:

- ``imgwatch run`` sees one of its worker processes die and calls
  :func:`requeue_jobs_of` with the dead worker's name at once;
- every worker calls :func:`requeue_orphaned_jobs` when it starts and every
  maintenance tick: a started job whose worker's registration has expired (no
  heartbeat for ``HEARTBEAT_TTL_SECONDS`` seconds), says it died, or whose execution has
  had no heartbeat for ``STALE_EXECUTION_SECONDS`` is requeued. Workers keep their
  registration alive with a heartbeat while a job runs (imgwatch.workers.heartbeat),
  so a dead worker on another machine is noticed within about two minutes.

Poison files. Each worker death that counts is counted on the job; a job whose files
keep killing workers is split, then its file recorded as failed (imgwatch.workers.poison).

Claiming. Several processes may look at the same started job at once (the
supervisor and any number of workers): whoever removes its entry from the started
registry (ZREM returns 1) handles it; the others leave it alone.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass

import redis
from redis.client import Pipeline
from rq import worker_registration
from rq.exceptions import NoSuchJobError
from rq.executions import Execution, ExecutionRegistry
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.utils import as_text, parse_composite_key
from rq.worker import BaseWorker

from imgwatch.log import get_logger
from imgwatch.workers import guard, poison
from imgwatch.workqueue import WorkQueue, job_paths

log = get_logger("imgwatch.recovery")

# An execution not renewed for this long is not running anywhere (e.g. a queue
# restored from its append-only file remembers a job its live worker has finished).
STALE_EXECUTION_SECONDS = 120.0


def signal_cause(exitcode: int | None) -> str:
    """How a process ended, in words: 'killed by signal SIGKILL', 'exited with code 1'."""
    if exitcode is None:
        return "ended for an unknown reason"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = str(-exitcode)
        return f"killed by signal {name}"
    return f"exited with code {exitcode}"


@dataclass
class Recovery:
    """What was done with one started job of a dead worker."""

    job_id: str
    worker: str
    cause: str
    paths: int
    deaths: int
    action: str  # "requeued", "split", "failed" (a poison file) or "dropped" (nothing left to run)


def requeue_jobs_of(work_queue: WorkQueue, worker_name: str, cause: str, *, crashed: bool = True) -> list[Recovery]:
    """Requeue the started jobs of ``worker_name``, known dead of ``cause``, and forget the worker.

    ``crashed=False`` (it lost the queue, say) does not count the death against the job's files.
    """
    recoveries = _recover(work_queue, dead={worker_name: (cause, crashed)})
    forget_worker(work_queue, worker_name)
    return recoveries


def requeue_orphaned_jobs(work_queue: WorkQueue) -> int:
    """Requeue started jobs whose worker no longer exists; returns how many jobs were handled."""
    worker_registration.clean_worker_registry(work_queue.rq_queue)  # `imgwatch status` counts live workers
    return len(_recover(work_queue, dead={}))


def requeue_abandoned(work_queue: WorkQueue, cause: str, worker_prefix: str) -> list[Recovery]:
    """Requeue the started jobs of every worker named ``worker_prefix``…, all known dead (a fresh
    `imgwatch run` holding the run lock: its previous workers died with the previous run), and
    forget those workers; other workers' jobs get the usual orphan check. These deaths are not
    counted against the files: the previous run stopped, it was not one of them that killed a worker."""
    prefix_key = BaseWorker.redis_worker_namespace_prefix + worker_prefix
    for key in worker_registration.get_keys(queue=work_queue.rq_queue):
        if key.startswith(prefix_key):
            forget_worker(work_queue, key[len(BaseWorker.redis_worker_namespace_prefix):])
    worker_registration.clean_worker_registry(work_queue.rq_queue)
    return _recover(work_queue, dead={}, dead_prefix=(worker_prefix, cause))


def forget_worker(work_queue: WorkQueue, worker_name: str) -> None:
    """Drop a dead worker's registration so that it is no longer counted."""
    key = BaseWorker.redis_worker_namespace_prefix + worker_name
    with work_queue.connection.pipeline() as pipe:
        pipe.srem(worker_registration.REDIS_WORKER_KEYS, key)
        pipe.srem(worker_registration.WORKERS_BY_QUEUE_KEY % work_queue.name, key)
        pipe.delete(key, f"{key}:executions")
        pipe.execute()


# -- the recovery itself -----------------------------------------------------------


@dataclass
class _Started:
    """One entry of the started registry and what its execution record says."""

    entry: str  # "<job id>:<execution id>"
    execution: Execution
    found: bool  # False when the execution record is gone
    last_heartbeat: float

    @property
    def worker(self) -> str:
        return self.execution.worker_name


def _started(work_queue: WorkQueue, registry: StartedJobRegistry) -> list[_Started]:
    connection = work_queue.connection
    items = []
    for entry in (as_text(e) for e in connection.zrange(registry.key, 0, -1)):
        job_id, execution_id = parse_composite_key(entry)
        execution = Execution(execution_id, job_id, connection)
        data = connection.hgetall(execution.key)
        execution.worker_name = as_text(data.get(b"worker_name", b""))
        items.append(_Started(entry, execution, bool(data), float(data.get(b"last_heartbeat", b"0") or 0)))
    return items


def _recover(work_queue: WorkQueue, dead: Mapping[str, tuple[str, bool]],
             dead_prefix: tuple[str, str] | None = None) -> list[Recovery]:
    registry = StartedJobRegistry(queue=work_queue.rq_queue)
    recoveries = []
    for item in _started(work_queue, registry):
        if dead_prefix is not None and item.worker.startswith(dead_prefix[0]):
            verdict: tuple[str, bool] | None = (dead_prefix[1], False)
        else:
            verdict = _orphan_verdict(work_queue.connection, item, dead)
        if verdict is None:
            continue
        score = work_queue.connection.zscore(registry.key, item.entry)
        if score is None or not work_queue.connection.zrem(registry.key, item.entry):
            continue  # another process claimed it first
        try:
            recovery = _handle(work_queue, item, *verdict)
        except BaseException:
            work_queue.connection.zadd(registry.key, {item.entry: score})  # unclaim: the next look retries
            raise
        if recovery is not None:
            recoveries.append(recovery)
    return recoveries


def _orphan_verdict(connection: redis.Redis, item: _Started,
                    dead: Mapping[str, tuple[str, bool]]) -> tuple[str, bool] | None:
    """(cause, whether it counts as a worker death) when ``item`` runs nowhere, else None."""
    if not item.found:
        return ("its execution record is gone", False)
    if item.worker in dead:
        return dead[item.worker]
    key = BaseWorker.redis_worker_namespace_prefix + item.worker
    with connection.pipeline() as pipe:
        pipe.exists(key)
        pipe.hexists(key, "death")
        registered, died = pipe.execute()
    if not registered:
        return (f"worker {item.worker} stopped sending heartbeats", True)
    if died:
        return (f"worker {item.worker} stopped in the middle of it", True)
    if time.time() - item.last_heartbeat > STALE_EXECUTION_SECONDS:
        # The worker lives but does not run this job (a queue restored from its
        # append-only file may remember a job that had finished): run it again.
        return (f"worker {item.worker} is not running it any more", False)
    return None


def _handle(work_queue: WorkQueue, item: _Started, cause: str, counts: bool) -> Recovery | None:
    connection = work_queue.connection
    try:
        job = Job.fetch(item.execution.job_id, connection=connection, serializer=JSONSerializer)
    except NoSuchJobError:
        _delete_execution(connection, item)
        return None
    # QUEUED: the worker died between taking the job and marking it started.
    if job.get_status(refresh=False) not in (JobStatus.STARTED, JobStatus.QUEUED):
        _delete_execution(connection, item)  # it finished; only its entry was left behind
        return None
    # A job that is not imgwatch's (a pickled payload cannot even be read) is dropped, never requeued.
    paths = [] if guard.refusal(job) is not None else job_paths(job)
    deaths = poison.deaths_of(job, counts)
    action = poison.next_step(len(paths), deaths, work_queue.max_attempts) if paths else "dropped"
    recovery = Recovery(job.id, item.worker, cause, len(paths), deaths, action)
    if action == "failed":
        poison.record_failed(work_queue, paths[0], deaths, cause)
    with connection.pipeline() as pipe:
        pipe.multi()  # one transaction (RQ's enqueue_job expects it started)
        _delete_execution(pipe, item)
        pipe.lrem(work_queue.rq_queue.intermediate_queue_key, 0, job.id)  # if it died before RQ took it out
        if recovery.action == "requeued":
            job.meta[poison.DEATHS_META] = deaths
            job.meta[poison.CAUSE_META] = cause
            job.started_at = None
            work_queue.rq_queue.enqueue_job(job, pipeline=pipe, at_front=True)
        else:
            job.delete(pipeline=pipe)
        if recovery.action == "split":
            # One job per path: the next death names the file at fault.
            work_queue.enqueue_paths(paths, 1, meta={poison.DEATHS_META: deaths - 1, poison.CAUSE_META: cause},
                                     at_front=True, pipeline=pipe)
        pipe.execute()
    _log(recovery, paths)
    return recovery


def _delete_execution(connection: redis.Redis | Pipeline, item: _Started) -> None:
    execution = item.execution
    connection.delete(execution.key)
    connection.zrem(ExecutionRegistry(execution.job_id, connection).key, execution.id)
    if execution.worker_name:
        connection.srem(execution.worker_executions_key, item.entry)


def _log(recovery: Recovery, paths: list[str]) -> None:
    fields = {"job_id": recovery.job_id, "worker": recovery.worker, "cause": recovery.cause,
              "paths": recovery.paths, "worker_deaths": recovery.deaths}
    if recovery.action == "failed":
        log.error("file_failed", path=paths[0], reason=f"the worker died {recovery.deaths} times while indexing it",
                  note="skipped until the file changes", **fields)
    elif recovery.action == "split":
        log.warning("job_split", note="its worker died again: one job per file now, to find the file at fault",
                    **fields)
    elif recovery.action == "requeued":
        log.warning("job_requeued", **fields)
