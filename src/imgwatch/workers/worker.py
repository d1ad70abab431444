"""The worker process: loads the model once, then runs index jobs in-process.

RQ's SimpleWorker runs each job in this process instead of a forked child: a
forked child cannot use a CUDA model loaded in the parent, and reloading
ResNet50 per job would cost more than the job.
"""

from __future__ import annotations

import os
import socket

from rq import SimpleWorker
from rq.serializers import JSONSerializer

from imgwatch.config import Config
from imgwatch.embedding import Embedder, load_model, plan_inference
from imgwatch.files import PathFilter
from imgwatch.log import get_logger
from imgwatch.store import open_store
from imgwatch.workers.indexer import Indexer, LinkPolicy
from imgwatch.workers.jobs import install_indexer
from imgwatch.workqueue import FailureLedger, WorkQueue

log = get_logger("imgwatch.worker")


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
        worker = SimpleWorker(
            [work_queue.rq_queue],
            connection=work_queue.connection,
            serializer=JSONSerializer,
            name=name or f"imgwatch-{socket.gethostname()}-{os.getpid()}",
        )
        log.info("worker_ready", worker=worker.name, model=model.identity, device=str(model.device),
                 batch_size=plan.batch_size, streams=plan.streams, threads=plan.threads, queue=work_queue.name)
        worker.work(burst=burst, logging_level="WARNING")
    finally:
        install_indexer(None)
        embedder.close()
        store.close()
