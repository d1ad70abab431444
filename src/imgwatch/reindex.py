"""Changing the model without downtime (`imgwatch reindex`): the rules that the command, `imgwatch run`
and the workers share.

`imgwatch reindex` opens a pending space in the store for the configured model and queues a reindex
job for every stored image without a vector in it; the workers fill it (new photos get both vectors)
while search, similar and duplicates keep using the active space; whoever finds it complete switches.
Everything lives in the store, so an interrupted reindex resumes: `imgwatch run` queues what is
missing again when it starts, and so does the worker that runs the last job of a backlog.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from imgwatch.config import Config
from imgwatch.embedding.identity import choose_weights, weights_setting
from imgwatch.errors import ImgwatchError, ReindexIncomplete, StoreMissing, WeightsUnavailable
from imgwatch.log import get_logger
from imgwatch.store import GraphStore, PendingSpace
from imgwatch.unwatched import find_unwatched
from imgwatch.workqueue import WorkQueue
from imgwatch.workqueue.queue import paths_per_job

log = get_logger("imgwatch.reindex")

# Paths read from the store per page while queueing reindex jobs.
PATHS_PER_PAGE = 1000


@dataclass(frozen=True)
class Reindex:
    """A reindex under way: its pending space, whether this call opened it, the paths it queued."""

    space: PendingSpace
    opened: bool
    queued: int


def start_reindex(config: Config, store: GraphStore, work_queue: WorkQueue, workers: int,
                  roots: Sequence[str]) -> Reindex:
    """Open the pending space for the configured model (or take up the one open) and queue a reindex
    job for each image without a vector in it, sized for ``workers``.

    Refused: nothing indexed yet (StoreMissing), no model configured other than the store's, a
    weights file that cannot be read, images below none of the watched ``roots`` (no worker reads
    them, so the space could never be complete), another reindex under way or the store's own model
    (ReindexConflict, from the store).
    """
    recorded = store.recorded_model()
    if recorded is None:
        raise StoreMissing("nothing is indexed yet, so there is nothing to re-index: set the model "
                           "(embedding.model, embedding.weights) and start `imgwatch run`")
    active = recorded[0]
    target = choose_weights(config, active, store.recorded_weights_file(), "run `imgwatch reindex` again")
    pending = store.pending_space()
    if pending is not None and target.identity in (pending.model, active):
        space, opened = pending, False  # watching (or resuming) the reindex under way
    elif target.identity is None:
        raise WeightsUnavailable(f"cannot read the weights file {target.weights} (embedding.weights): "
                                 "fix the path, then run `imgwatch reindex` again")
    elif target.identity == active:
        raise ImgwatchError(f"the store is embedded with {active}, the model configured: to change model, set "
                            "embedding.weights or embedding.model to the new one (or pass --weights or --model)")
    else:
        _check_all_watched(store, roots)
        space, opened = store.begin_space(target.identity, target.dim, target.file), True
        log.info("reindex_started", model=space.model, previous=active, images=space.total)
    queued = queue_unembedded(store, work_queue, config, workers)
    return Reindex(space, opened, queued)


def _check_all_watched(store: GraphStore, roots: Sequence[str]) -> None:
    unwatched = find_unwatched(store, roots)
    if unwatched.images:
        folders = ", ".join(unwatched.folders)
        raise ImgwatchError(f"{unwatched.images} stored image(s) lie below no watched folder ({folders}), where "
                            f"no worker reads them, so a re-index could never complete: {unwatched.remedy}, "
                            "then run `imgwatch reindex` again")


def queue_unembedded(store: GraphStore, work_queue: WorkQueue, config: Config, workers: int) -> int:
    """Queue a reindex job for every stored image without a vector in the pending space (none when
    no space is open), in jobs sized for the backlog; returns how many paths were queued. Queued
    twice, an image costs a store lookup the second time: its vector is found by its content."""
    space = store.pending_space()
    if space is None:
        return 0
    per_job = paths_per_job(space.total - space.embedded, config.watch.batch_size, workers)
    queued, after = 0, ""
    while page := store.paths_without_pending(after, PATHS_PER_PAGE):
        work_queue.enqueue_reindex(page, per_job)
        queued += len(page)
        after = page[-1]
    return queued


def resume_reindex(config: Config, store: GraphStore, work_queue: WorkQueue) -> None:
    """At `imgwatch run`'s start: an open reindex (interrupted by a stop, a crash, a reboot) goes on."""
    space = store.pending_space()
    if space is None:
        return
    queued = queue_unembedded(store, work_queue, config, config.workers.count)
    log.info("reindex_resumed", model=space.model, embedded=space.embedded, images=space.total, queued=queued)


def switch_if_complete(store: GraphStore, config: Config) -> PendingSpace | None:
    """Make the pending space the active one if every image has its vector there; returns the space
    switched to, None when none was open or it is not complete yet. Several callers may find it
    complete at once: the store lets one switch."""
    space = store.pending_space()
    if space is None or not space.complete:
        return None
    started = time.perf_counter()
    try:
        links = store.switch_space(config.links.threshold, config.links.top_k)
    except ReindexIncomplete:
        return None  # an image arrived meanwhile: its job completes the space
    recorded = store.recorded_model()
    if recorded is None or recorded[0] != space.model:
        return None
    log.info("model_switched", model=space.model, images=space.total, links=links,
             seconds=round(time.perf_counter() - started, 3))
    return space


def third_model_advice(active: str, active_file: tuple[str, str] | None, pending: PendingSpace | None) -> str:
    """The settings a worker may use (for a refusal's message): the store's model, and the one a reindex
    under way changes to; without one, how to change the store's model."""
    advice = weights_setting(active, active_file)
    if pending is None:
        return (f"{advice}; or, to change the store's model, run `imgwatch reindex` with the new setting while "
                "imgwatch runs with the store's (search keeps answering meanwhile)")
    return f"{advice}, or the model being re-indexed to, {pending.model}: " + weights_setting(
        pending.model, pending.weights_file)
