"""What the workers' tests share: workers that take jobs through RQ's own API, and what the queue holds.

Workers take jobs exactly as a worker process does (register, dequeue, start the execution);
a worker "dies" as it does for other workers: its registration expires (a real PEXPIRE) or
its name is reported dead by `imgwatch run`.
"""

from __future__ import annotations

import time

from rq import SimpleWorker
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from imgwatch.workqueue import WorkQueue

KILLED = "killed by signal SIGKILL"


def take_job(work_queue: WorkQueue, name: str) -> tuple[SimpleWorker, Job]:
    """A registered worker called ``name`` that has dequeued and started the next job."""
    worker = SimpleWorker([work_queue.rq_queue], connection=work_queue.connection, serializer=JSONSerializer,
                          name=name)
    worker.register_birth()
    result = work_queue.rq_queue.dequeue_any([work_queue.rq_queue], None, connection=work_queue.connection,
                                             serializer=JSONSerializer)
    assert result is not None, "nothing to dequeue"
    job, _ = result
    worker.prepare_execution(job)
    worker.prepare_job_execution(job, remove_from_intermediate_queue=True)
    return worker, job


def expire_registration(work_queue: WorkQueue, worker: SimpleWorker) -> None:
    """What happens when a worker stops heartbeating: its registration key expires."""
    work_queue.connection.pexpire(worker.key, 1)
    time.sleep(0.02)


def queued(work_queue: WorkQueue) -> list[Job]:
    return work_queue.fetch_jobs(work_queue.rq_queue.get_job_ids())


def started_count(work_queue: WorkQueue) -> int:
    return work_queue.connection.zcard(StartedJobRegistry(queue=work_queue.rq_queue).key)
