"""RQ job functions. They run inside `imgwatch worker`, which installs the indexer (and its model spaces) first."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from imgwatch.errors import ImgwatchError
from imgwatch.log import get_logger
from imgwatch.workers.indexer import Indexer
from imgwatch.workers.mover import Mover
from imgwatch.workers.reindexer import reindex
from imgwatch.workers.spaces import ModelSpaces

log = get_logger("imgwatch.worker")

_indexer: Indexer | None = None
_spaces: ModelSpaces | None = None


def install_indexer(indexer: Indexer | None, spaces: ModelSpaces | None = None) -> None:
    """Called once per worker process after the model and store are loaded; ``spaces`` keeps the
    indexer's models on the store's while the model changes (none: the models stay as installed)."""
    global _indexer, _spaces
    _indexer, _spaces = indexer, spaces


def _installed(job: str) -> Indexer:
    if _indexer is None:
        raise RuntimeError(f"{job} runs only inside `imgwatch worker` (no indexer installed)")
    return _indexer


@contextlib.contextmanager
def _failure_logged(started: float, **fields: int) -> Iterator[None]:
    """A job's failure, logged once with how long it ran, then raised on for RQ."""
    try:
        yield
    except Exception as exc:
        log.error("job_failed", **fields, seconds=round(time.perf_counter() - started, 3),
                  error=f"{type(exc).__name__}: {exc}")
        raise


def index_paths(paths: list[str]) -> dict[str, int]:
    """Index, refresh or remove each path so the store matches the filesystem."""
    indexer = _installed("index_paths")
    started = time.perf_counter()
    with _failure_logged(started, paths=len(paths)):
        if _spaces is not None:
            _spaces.follow()
        outcome = indexer.index(paths)
        if _spaces is not None:
            _spaces.after_job(progressed=bool(outcome.indexed))
    counts = outcome.counts()
    log.info("job_done", paths=len(paths), seconds=round(time.perf_counter() - started, 3),
             embed_seconds=round(outcome.embed_seconds, 3), store_seconds=round(outcome.store_seconds, 3),
             outcome="ok" if not outcome.failed else "partial", **counts)
    return counts


def move_paths(moves: list[list[str]]) -> dict[str, int]:
    """Rename moved files and folders in the store (embeddings and links kept), then queue
    both ends of each move to be indexed."""
    indexer = _installed("move_paths")
    started = time.perf_counter()
    with _failure_logged(started, moves=len(moves)):
        outcome = Mover(indexer).move(moves)
    counts = outcome.counts()
    log.info("moves_done", seconds=round(time.perf_counter() - started, 3), **counts)
    return counts


def reindex_paths(paths: list[str]) -> dict[str, int]:
    """Give the stored images at ``paths`` their vectors in the pending space (`imgwatch reindex`);
    the worker that completes the space switches it."""
    indexer = _installed("reindex_paths")
    started = time.perf_counter()
    with _failure_logged(started, paths=len(paths)):
        if _spaces is not None:
            _spaces.follow()
            if _spaces.pending_unavailable is not None:
                raise ImgwatchError(_spaces.pending_unavailable)
        outcome = reindex(indexer, paths)
        if _spaces is not None:
            _spaces.after_job(progressed=outcome.stored > 0)
    counts = outcome.counts()
    log.info("reindex_job_done", paths=len(paths), seconds=round(time.perf_counter() - started, 3), **counts)
    return counts
