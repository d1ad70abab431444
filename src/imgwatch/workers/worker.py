"""The worker process: loads the model once, then runs index jobs in-process.

RQ's SimpleWorker runs each job in this process instead of a forked child: a
forked child cannot use a CUDA model loaded in the parent, and reloading
ResNet50 per job would cost more than the job.
"""

from __future__ import annotations

import os
import socket

from rq import SimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer

from imgwatch.config import Config
from imgwatch.embedding import Embedder, load_model, plan_inference
from imgwatch.errors import ImgwatchError
from imgwatch.files import PathFilter
from imgwatch.log import get_logger
from imgwatch.store import open_store
from imgwatch.workers import guard, recovery
from imgwatch.workers.indexer import Indexer, LinkPolicy
from imgwatch.workers.jobs import install_indexer
from imgwatch.workqueue import FailureLedger, WorkQueue

log = get_logger("imgwatch.worker")

# How often a worker looks for jobs left behind by dead workers (RQ's maintenance tick).
MAINTENANCE_SECONDS = 60


class JobRefused(ImgwatchError):
    """A job on the queue is not one imgwatch runs; it is failed, never executed."""


class GuardedJob(Job):
    """An RQ job that runs only if the guard accepts it (checked before any import)."""

    def perform(self) -> object:
        reason = guard.refusal(self)
        if reason is not None:
            log.error("job_refused", job_id=self.id, reason=reason)
            raise JobRefused(reason)
        return super().perform()


class ImgwatchWorker(SimpleWorker):
    """RQ's in-process worker plus one maintenance duty: requeue dead workers' jobs."""

    def __init__(self, work_queue: WorkQueue, name: str) -> None:
        super().__init__([work_queue.rq_queue], connection=work_queue.connection, serializer=JSONSerializer,
                         job_class=GuardedJob, name=name, maintenance_interval=MAINTENANCE_SECONDS)
        self.work_queue = work_queue

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        recovered = recovery.requeue_orphaned_jobs(self.work_queue)
        if recovered:
            log.info("requeued_orphaned_jobs", jobs=recovered)


def run_worker(config: Config, *, burst: bool = False, name: str | None = None) -> None:
    """Serve index jobs until stopped (or, with ``burst``, until the queue is empty).

    Raises QueueUnavailable, WeightsUnavailable, StoreError or ModelMismatchError
    before taking any job when something it needs is missing.
    """
    work_queue = WorkQueue.from_config(config)
    model = load_model(config.embedding.weights, config.embedding.device, config.embedding.seed)
    plan = plan_inference(model.device, config.embedding.batch_size, config.embedding.streams,
                          config.embedding.threads, processes=config.workers.count)
    embedder = Embedder(model, batch_size=plan.batch_size,
                        decode_threads=config.embedding.decode_threads, streams=plan.streams)
    store = open_store(config)
    try:
        store.ensure_model(model.identity, model.dim)
        indexer = Indexer(
            embedder,
            store,
            FailureLedger.for_queue(work_queue),
            lambda paths: work_queue.enqueue_paths(paths, batch_size=len(paths)),  # they were one batch
            LinkPolicy(config.links.threshold, config.links.top_k),
            PathFilter.create(config.watch.extensions, config.watch.exclude),
            [str(p) for p in config.root_paths],
        )
        install_indexer(indexer)
        worker = ImgwatchWorker(work_queue, name or f"imgwatch-{socket.gethostname()}-{os.getpid()}")
        log.info("worker_ready", worker=worker.name, model=model.identity, device=str(model.device),
                 batch_size=plan.batch_size, streams=plan.streams, threads=plan.threads, queue=work_queue.name)
        worker.work(burst=burst, logging_level="WARNING")
    finally:
        install_indexer(None)
        embedder.close()
        store.close()
