"""The worker process: loads the model once, then runs index jobs in-process.

RQ's SimpleWorker runs each job in this process instead of a forked child: a
forked child cannot use a CUDA model loaded in the parent, and reloading
ResNet50 per job would cost more than the job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from types import FrameType

import redis
from redis.client import Pipeline
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer

from imgwatch import sdnotify
from imgwatch.config import Config
from imgwatch.embedding import Embedder, inference_device, load_chosen_model, plan_inference
from imgwatch.embedding.embedder import jpeg_decoders
from imgwatch.embedding.identity import ChosenModel, choose_weights, store_model_choice
from imgwatch.errors import EXIT_UNAVAILABLE, ConfigError, ImgwatchError, JobRefused, ModelMismatchError
from imgwatch.files import PathFilter
from imgwatch.log import get_logger
from imgwatch.reindex import third_model_advice
from imgwatch.store import GraphStore, open_store
from imgwatch.workers import guard, heartbeat, outages, recovery
from imgwatch.workers.indexer import Indexer, LinkPolicy
from imgwatch.workers.jobs import install_indexer
from imgwatch.workers.spaces import WHERE, ModelSpaces
from imgwatch.workqueue import FailureLedger, WorkQueue
from imgwatch.workqueue.worker_roots import WorkerRoots

log = get_logger("imgwatch.worker")

# How often a worker looks for jobs left behind by dead workers (RQ's maintenance tick).
MAINTENANCE_SECONDS = 60


class GuardedJob(Job):
    """An RQ job that runs only if the guard accepts it (checked before any import)."""

    def prepare_for_execution(self, worker_name: str, pipeline: Pipeline) -> None:
        # RQ reads the payload here, before perform(): a refused job must lose its retries
        # and callbacks first (refusal() strips them and is idempotent).
        guard.refusal(self)
        super().prepare_for_execution(worker_name, pipeline)

    def perform(self) -> object:
        reason = guard.refusal(self)
        if reason is not None:
            log.error("job_refused", job_id=self.id, reason=reason)
            raise JobRefused(reason)
        return super().perform()

    # imgwatch sets no callbacks (the guard refuses a job naming one), so none is ever
    # imported, not even by RQ's registry cleanup, which fetches jobs through this class.
    success_callback = failure_callback = stopped_callback = property(lambda self: None)  # type: ignore[assignment]


class ImgwatchWorker(SimpleWorker):
    """RQ's in-process worker plus one maintenance duty: requeue dead workers' jobs.

    Its registration lives heartbeat.HEARTBEAT_TTL_SECONDS seconds and is renewed while a job
    runs too, so other workers notice within about two minutes that it died.
    """

    def __init__(self, work_queue: WorkQueue, name: str) -> None:
        # Its own view of the queue, with GuardedJob as the job class for everything RQ fetches.
        guarded = Queue(work_queue.name, connection=work_queue.connection, serializer=JSONSerializer,
                        job_class=GuardedJob)
        super().__init__([guarded], connection=work_queue.connection, serializer=JSONSerializer,
                         job_class=GuardedJob, name=name, maintenance_interval=MAINTENANCE_SECONDS,
                         worker_ttl=heartbeat.WORKER_TTL_SECONDS)
        self.work_queue = work_queue
        outages.ride_out_outages(work_queue.connection)  # e.g. while `imgwatch run` restarts its queue

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        # RQ renews the registration for the whole job timeout when a job starts; KeepAlive renews it instead.
        super().heartbeat(min(timeout or heartbeat.HEARTBEAT_TTL_SECONDS, heartbeat.HEARTBEAT_TTL_SECONDS), pipeline)

    def execute_job(self, job: Job, queue: Queue) -> None:
        with heartbeat.KeepAlive(self):
            try:
                super().execute_job(job, queue)
            except redis.ConnectionError as exc:
                log.warning("queue_lost", worker=self.name, job_id=job.id, error=str(exc),
                            note="exiting; the job is requeued once the queue is back")
                raise outages.QueueLost(EXIT_UNAVAILABLE) from None

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        outages.stop_riding_out_outages(self.connection)  # stopping: do not wait out a queue outage
        super().request_stop(signum, frame)

    def take_stop_requests(self) -> None:
        """SIGINT/SIGTERM from now on stop this worker cleanly. Ready is announced before work()
        installs RQ's handlers: a SIGTERM in between stops it at work()'s first turn instead of
        killing it outright (call from the main thread)."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._stop_before_work)

    def _stop_before_work(self, signum: int, frame: FrameType | None) -> None:
        self._stop_requested = True

    def stop_after_job(self) -> None:
        """Stop once the job running now ends (as a SIGTERM would)."""
        self._stop_requested = True

    def set_shutdown_requested_date(self) -> None:
        # RQ calls this from its SIGTERM handler, so an exception here (the queue is down)
        # surfaces at whatever line the main thread was on: seen inside Thread.start, which
        # then left the new thread half-registered. The date is only informational.
        with contextlib.suppress(redis.RedisError):
            super().set_shutdown_requested_date()

    def unsubscribe(self) -> None:
        # End RQ's listener thread's loop before the unsubscribe reply arrives: a loop still
        # running once it has handled that reply waits a whole poll (RQ's 60 s) for a new
        # subscription, and redis-py's stop() joins the thread: a stopping worker hung for a
        # minute (seen under load). stop(timeout=0) only clears the flag here.
        if self.pubsub_thread is not None:
            self.pubsub_thread.stop(timeout=0)
        super().unsubscribe()

    def teardown(self) -> None:
        outages.stop_riding_out_outages(self.connection)
        try:
            super().teardown()
        except redis.RedisError:
            pass  # the queue is out of reach: the registration expires by itself

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        recovery.requeue_orphaned_jobs(self.work_queue)  # logs each job it requeues


def run_worker(config: Config, *, burst: bool = False, name: str | None = None) -> None:
    """Serve index jobs until stopped (or, with ``burst``, until the queue is empty).

    Raises ConfigError (no general.roots), QueueUnavailable, WeightsUnavailable, StoreError
    or ModelMismatchError before taking any job when something it needs is missing.
    """
    if not config.general.roots:  # the worker indexes only paths below them (see guard.py, indexer.py)
        raise ConfigError(
            "a worker indexes only files below general.roots, and none are set: set general.roots "
            "(IMGWATCH_GENERAL_ROOTS) or pass ROOT... to `imgwatch worker`, the same folders the daemon watches"
        )
    work_queue = WorkQueue.from_config(config)
    name = name or f"imgwatch-{socket.gethostname()}-{os.getpid()}"
    roots = [str(p) for p in config.root_paths]
    # Announced before the model loads, so that `imgwatch scan` and `imgwatch forget` right after
    # `imgwatch run` starts know these folders too.
    with WorkerRoots.for_queue(work_queue).announcing(name, roots):
        store = open_store(config, link_device=link_device_for(config))
        try:
            _run_worker(config, work_queue, store, roots, burst=burst, name=name)
        finally:
            store.close()


def link_device_for(config: Config) -> str:
    """Where the store scans for this worker's links: the GPU it embeds on, else the CPU
    (store/embedded/compact_copy.py). A device it cannot use is refused, with its message, as the model loads."""
    try:
        return str(inference_device(config.embedding.device, config.embedding.engine))
    except ImgwatchError:
        return "cpu"


def _run_worker(config: Config, work_queue: WorkQueue, store: GraphStore, roots: list[str], *, burst: bool,
                name: str) -> None:
    embedding = config.embedding
    recorded = store.recorded_model()
    chosen = choose_weights(config, recorded and recorded[0], store.recorded_weights_file(), "start imgwatch again")
    pending = store.pending_space()
    if recorded is not None and pending is not None and chosen.identity == pending.model:
        # Configured with the model a reindex changes to: the store's active model loads too (spaces.py).
        chosen = store_model_choice(config, recorded[0], store.recorded_weights_file(), WHERE)
    # A store of another model is refused before the model loads (and exports an engine file for nothing).
    if chosen.identity is not None:
        try:
            store.ensure_model(chosen.identity, chosen.dim, chosen.file)
        except ModelMismatchError as exc:
            recorded = store.recorded_model()
            if recorded is None:
                raise
            advice = third_model_advice(recorded[0], store.recorded_weights_file(), pending)
            raise ModelMismatchError(f"{str(exc).rstrip('.')}: {advice}") from None
    plan = plan_inference(inference_device(embedding.device, embedding.engine), embedding.batch_size,
                          embedding.streams, embedding.threads, processes=config.workers.count,
                          decode_threads=embedding.decode_threads)

    def load(chosen: ChosenModel) -> Embedder:
        model = load_chosen_model(config, chosen, threads=plan.threads)  # each stream's threads
        return Embedder(model, batch_size=plan.batch_size, decode_threads=plan.decode_threads, streams=plan.streams,
                        **jpeg_decoders(embedding.jpeg_decoder))

    embedder = load(chosen)
    model = embedder.model
    spaces: ModelSpaces | None = None
    try:
        store.ensure_model(model.identity, model.dim)
        indexer = Indexer(
            embedder,
            store,
            FailureLedger.for_queue(work_queue),
            lambda paths: work_queue.enqueue_paths(paths, batch_size=len(paths)),  # they were one batch
            LinkPolicy(config.links.threshold, config.links.top_k),
            PathFilter.create(config.watch.extensions, config.watch.exclude),
            roots,
        )
        spaces = ModelSpaces(config, store, indexer, work_queue, load)
        spaces.follow()  # a reindex under way: its model loads now
        install_indexer(indexer, spaces)
        worker = ImgwatchWorker(work_queue, name)
        worker.take_stop_requests()
        spaces.on_cannot_follow = worker.stop_after_job
        reindexing = indexer.pending.identity if indexer.pending is not None else None
        log.info("worker_ready", worker=worker.name, model=model.identity, reindex_model=reindexing,
                 device=str(model.device),
                 engine=model.engine, batch_size=plan.batch_size, streams=plan.streams, threads=plan.threads,
                 decode_threads=plan.decode_threads, gpu_decode=embedder.gpu_decode,
                 jpeg_decoder=embedding.jpeg_decoder,
                 queue=work_queue.name)
        sdnotify.ready()  # model loaded, store and queue open (a no-op outside systemd)
        worker.work(burst=burst, logging_level="WARNING")
        if spaces.cannot_follow is not None:  # the store switched to a model it cannot load: say why, exit 2
            raise spaces.cannot_follow
    finally:
        install_indexer(None)
        if spaces is not None:
            spaces.close()  # the models it holds now (it may have changed them)
        else:
            embedder.close()
