"""The models a worker holds, following the store's vector spaces while the model changes
(`imgwatch reindex`, see imgwatch.reindex).

Before each job the worker looks at the store: while a pending space is open it holds the pending
space's model beside the active one (loaded from the store's record, whatever the worker's own
setting); once the space became the active one it embeds with that model (the one it held, or
loaded), and when the space was dropped it lets the pending model go. After a job, the worker
that finds the space complete switches it, and the one that ran the last job of a backlog queues
again the images still without a pending vector (an image indexed while the reindex began).
"""

from __future__ import annotations

from collections.abc import Callable

from imgwatch.config import Config
from imgwatch.embedding import Embedder
from imgwatch.embedding.identity import ChosenModel, store_model_choice, weights_setting
from imgwatch.errors import ImgwatchError, ModelMismatchError
from imgwatch.log import get_logger
from imgwatch.reindex import queue_unembedded, switch_if_complete
from imgwatch.store import GraphStore
from imgwatch.workers.indexer import Indexer
from imgwatch.workqueue import WorkQueue

log = get_logger("imgwatch.worker")

WHERE = "start the worker again"


class ModelSpaces:
    """Keeps ``indexer.embedder`` on the store's active model and ``indexer.pending`` on its pending
    space's; ``load`` turns a chosen model into an Embedder (the worker's engine and threads)."""

    def __init__(self, config: Config, store: GraphStore, indexer: Indexer, work_queue: WorkQueue,
                 load: Callable[[ChosenModel], Embedder]) -> None:
        self.config = config
        self.store = store
        self.indexer = indexer
        self.work_queue = work_queue
        self.load = load
        # Why this worker cannot load the pending space's model (its reindex jobs fail with it), if so.
        self.pending_unavailable: str | None = None
        # Why it cannot load the store's model after a switch: it must stop (a restart says what to set),
        # and ``on_cannot_follow`` asks it to, after the job.
        self.cannot_follow: ImgwatchError | None = None
        self.on_cannot_follow: Callable[[], None] = lambda: None

    def follow(self) -> None:
        """Before a job: hold the store's active model, and its pending one while a space is open."""
        recorded = self.store.recorded_model()
        active, pending = self.indexer.embedder, self.indexer.pending
        if recorded is not None and recorded[0] != active.identity:
            if pending is not None and pending.identity == recorded[0]:
                self.indexer.embedder, self.indexer.pending = pending, None  # the space it filled switched
            else:
                try:
                    self.indexer.embedder = self._loaded(recorded[0], self.store.recorded_weights_file())
                except ImgwatchError as exc:  # it cannot embed in the store's space any more
                    log.error("worker_cannot_follow_model", model=recorded[0], error=str(exc),
                              note="stopping after this job")
                    self.cannot_follow = exc
                    self.on_cannot_follow()
                    raise
            active.close()
            log.info("worker_model_changed", model=recorded[0], previous=active.identity)
        space = self.store.pending_space()
        pending = self.indexer.pending
        if pending is not None and (space is None or pending.identity != space.model):
            self.indexer.pending = None
            pending.close()
            log.info("reindex_model_dropped", model=pending.identity)
        if space is None:
            self.pending_unavailable = None
        elif self.indexer.pending is None:
            try:
                self.indexer.pending = self._loaded(space.model, space.weights_file)
            except ImgwatchError as exc:  # new photos are still indexed with the active model
                if self.pending_unavailable != str(exc):
                    log.error("reindex_model_unavailable", model=space.model, error=str(exc))
                self.pending_unavailable = str(exc)
                return
            self.pending_unavailable = None
            log.info("reindex_model_loaded", model=space.model, embedded=space.embedded, images=space.total)

    def after_job(self, progressed: bool) -> None:
        """After a job: switch a complete space; when the job ``progressed`` the space and the queue
        is empty, queue the images still without a pending vector."""
        if switch_if_complete(self.store, self.config) is not None:
            self.follow()
            return
        if progressed and self.store.pending_space() is not None and self.work_queue.rq_queue.count == 0:
            queued = queue_unembedded(self.store, self.work_queue, self.config, self.config.workers.count)
            if queued:
                log.info("reindex_requeued", paths=queued, note="images without a vector in the new space")

    def close(self) -> None:
        for embedder in (self.indexer.embedder, self.indexer.pending):
            if embedder is not None:
                embedder.close()

    def _loaded(self, identity: str, recorded_file: tuple[str, str] | None) -> Embedder:
        embedder = self.load(store_model_choice(self.config, identity, recorded_file, WHERE))
        if embedder.identity != identity:
            embedder.close()
            raise ModelMismatchError(f"the weights loaded for {identity} give {embedder.identity}: "
                                     f"{WHERE} with {weights_setting(identity, recorded_file)}")
        return embedder
