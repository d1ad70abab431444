"""Vectors in the pending space (a reindex to a new model, see imgwatch.reindex): reindex jobs give
stored images theirs, and new or changed photos get one beside their active vector.

A vector is kept only for the content the store holds: a file that changed, went or cannot be read
since it was indexed is handed to an index job, which makes the store match it (with both models).
Content that already has a pending vector (a copy, a job run twice) reuses it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from imgwatch.embedding import Embedded, Embedder, Failed, Missing
from imgwatch.log import get_logger
from imgwatch.store import GraphStore, ImageRecord

if TYPE_CHECKING:
    from imgwatch.workers.indexer import Indexer

log = get_logger("imgwatch.worker")


@dataclass
class ReindexOutcome:
    stored: int = 0  # pending vectors written
    reused: int = 0  # of those: found by content hash, no model run
    skipped: int = 0  # not stored (nothing to reindex), or no pending space open
    handed_over: list[str] = field(default_factory=list)  # changed, gone or unreadable: to index jobs

    def counts(self) -> dict[str, int]:
        return {"stored": self.stored, "reused": self.reused, "skipped": self.skipped,
                "handed_over": len(self.handed_over)}


def embed_pending(embedder: Embedder, store: GraphStore,
                  contents: Mapping[str, str]) -> tuple[dict[str, np.ndarray], int, list[str]]:
    """Pending vectors for paths whose content has the SHA-256 ``contents[path]``: (vectors by path,
    how many of them were reused, the paths that got none: changed, gone or unreadable)."""
    known = store.pending_by_hash(set(contents.values()))
    vectors = {path: known[sha256] for path, sha256 in contents.items() if sha256 in known}
    reused = len(vectors)
    missed = []
    for result in embedder.embed_files([path for path in contents if path not in vectors]):
        if isinstance(result, Embedded):
            if result.facts.sha256 == contents[result.facts.path]:
                vectors[result.facts.path] = result.vector
            else:
                missed.append(result.facts.path)
        elif isinstance(result, Failed | Missing):
            missed.append(result.path)
    return vectors, reused, missed


def with_pending_vectors(records: Sequence[ImageRecord], embedder: Embedder, store: GraphStore) -> list[ImageRecord]:
    """``records`` with their pending vectors; one that gets none is left without (a reindex job
    gives it one later)."""
    vectors, _reused, _missed = embed_pending(embedder, store, {r.path: r.sha256 for r in records})
    return [dataclasses.replace(r, pending_embedding=vectors.get(r.path)) for r in records]


def reindex(indexer: Indexer, paths: Sequence[str]) -> ReindexOutcome:
    """Give the stored images at ``paths`` their vectors in the pending space (indexer.pending's model)."""
    outcome = ReindexOutcome()
    embedder = indexer.pending
    if embedder is None:  # no space open (aborted or switched since the job was queued)
        outcome.skipped = len(paths)
        return outcome
    readable = indexer.below_roots(paths)
    stored = indexer.store.get_many(readable)
    outcome.skipped = len(paths) - len(stored)
    vectors, outcome.reused, outcome.handed_over = embed_pending(
        embedder, indexer.store, {path: image.sha256 for path, image in stored.items()})
    outcome.stored = indexer.store.put_pending([(path, stored[path].sha256, vector)
                                                for path, vector in vectors.items()])
    if outcome.handed_over:
        indexer.requeue(outcome.handed_over)
    return outcome
