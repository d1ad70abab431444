"""The embedded store's pending vector space: a re-index to a new model while the active one answers.

The pending space is meta's ``pending_*`` record plus the ``pending_embeddings`` table (one
vector per image, for the content hash it had then). Nothing searches it until
:func:`switch`: the links of the new space are computed from a read snapshot first (outside
the write lock, so workers keep writing meanwhile; minutes for a large library), brought up
to date under the write lock with what changed since (by the linking rule, as link() does),
and then one transaction makes the pending vectors, their links and their model the active
ones. It also gives the store a new identity, so every process's vector files and the HNSW
index are rebuilt from the new vectors by whoever finds them behind (shared_vectors.py,
ann_search.py).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imgwatch.store.base import PendingSpace
from imgwatch.store.batching import PAGE_SIZE
from imgwatch.store.embedded.int8_scan import Int8Rows
from imgwatch.store.embedded.shared_vectors import checked_rows, renew_store_identity
from imgwatch.store.embedded.sqlite import Transaction
from imgwatch.store.embedded.vectors import SlotVectors, neighbour_candidates
from imgwatch.store.linking import LinkPlan, plan_links, relinked

# Images whose neighbours are searched at once while linking the new space (bounds the copies of
# their vectors and the score blocks).
LINK_BATCH = 1024

# Pending rows for the image's current content: the only ones that count, move or switch.
_CURRENT = "JOIN images ON images.id = pending_embeddings.image_id AND images.sha256 = pending_embeddings.sha256"


def pending_space(tx: Transaction) -> PendingSpace | None:
    """The open pending space and its progress, as ``tx`` sees it."""
    recorded = tx.pending_model()
    if recorded is None:
        return None
    model, dim, weights_file = recorded
    total = tx.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    embedded = tx.execute(f"SELECT COUNT(*) FROM pending_embeddings {_CURRENT}").fetchone()[0]
    return PendingSpace(model, dim, weights_file, embedded, total)


@contextmanager
def switching(db_path: Path) -> Iterator[bool]:
    """Whether this caller is the one switching: a second one (workers finishing jobs together)
    gets False at once instead of computing every link again only to find the space gone."""
    fd = os.open(f"{db_path}.switch-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def drop(tx: Transaction) -> None:
    tx.execute("DELETE FROM pending_embeddings")
    tx.record_pending(None, None, None)


@dataclass
class SpaceLinks:
    """The new space's links and pick bars, and the pending vectors they were computed from."""

    vectors: PendingVectors
    plan: LinkPlan[int] = field(default_factory=LinkPlan)
    copy: Int8Rows | None = None  # an int8 copy of ``vectors`` that large libraries are scanned through

    def searched(self) -> SlotVectors:
        """The pending vectors, searched through the int8 copy when there is one."""
        view = self.vectors.view
        return view if self.copy is None else self.copy.searching(view)


class PendingVectors:
    """The pending vectors as a :class:`SlotVectors` (row = image id), memory-mapped from a
    temporary file so that a large library does not need its vectors in memory twice."""

    def __init__(self, directory: Path, dim: int, slots: int) -> None:
        self.dim = dim
        self._file = tempfile.TemporaryFile(dir=directory, prefix=".pending-vectors-")
        self._matrix = np.empty((0, dim), dtype=np.float32)
        self._live = np.zeros(0, dtype=np.uint8)
        self.revision = 0  # the pending revision the vectors reflect
        self._grow(slots)

    @property
    def view(self) -> SlotVectors:
        return SlotVectors(self._matrix, self._live)

    def write(self, ids: Sequence[int], blobs: Sequence[bytes]) -> None:
        if not ids:
            return
        self._grow(max(ids) + 1)
        rows = np.asarray(ids, dtype=np.int64)
        self._matrix[rows] = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(ids), self.dim)
        self._live[rows] = 1

    def forget(self, ids: Sequence[int]) -> None:
        self._live[[i for i in ids if i < len(self._live)]] = 0

    def close(self) -> None:
        self._matrix = np.empty((0, self.dim), dtype=np.float32)
        self._file.close()

    def _grow(self, slots: int) -> None:
        if slots <= len(self._live):
            return
        slots = max(slots, len(self._live) + len(self._live) // 4)
        self._file.truncate(slots * 4 * self.dim)  # sparse until written
        self._matrix = np.memmap(self._file, dtype="<f4", mode="r+", shape=(slots, self.dim))
        self._live = np.concatenate([self._live, np.zeros(slots - len(self._live), dtype=np.uint8)])


def read_vectors(tx: Transaction, directory: Path, dim: int) -> PendingVectors:
    """Every current pending vector, as of ``tx``."""
    max_id = tx.execute("SELECT max(id) FROM images").fetchone()[0] or 0
    vectors = PendingVectors(directory, dim, max_id + 1)
    vectors.revision = tx.pending_revision()
    cursor = tx.execute(f"SELECT pending_embeddings.image_id, pending_embeddings.embedding FROM pending_embeddings "
                        f"{_CURRENT}")
    while page := cursor.fetchmany(PAGE_SIZE):
        vectors.write(*checked_rows(page, dim, tx))
    return vectors


def compute_links(vectors: PendingVectors, threshold: float, top_k: int, compact_min_images: int,
                  device: str = "cpu") -> SpaceLinks:
    """Every image's picks in the new space by the linking rule (no former links: a new graph).
    From ``compact_min_images`` images on, candidates come from a batched scan of an int8 copy of
    the pending vectors on ``device``, re-scored exactly, as link() takes them (compact_copy.py).
    """
    result = SpaceLinks(vectors)
    view = vectors.view
    ids = view.ids().tolist()
    if top_k <= 0 or not ids:
        return result
    if len(ids) >= compact_min_images:
        result.copy = Int8Rows(vectors.dim, device)
        result.copy.set_range(0, view.slots, view.matrix)
    searched = result.searched()
    for start in range(0, len(ids), LINK_BATCH):
        batch = ids[start : start + LINK_BATCH]
        plan = plan_links(neighbour_candidates(searched, batch, top_k, threshold), [], threshold, top_k)
        result.plan.links.update(plan.links)
        result.plan.pick_bars.update(plan.pick_bars)
    return result


def catch_up(tx: Transaction, space_links: SpaceLinks, threshold: float, top_k: int) -> None:
    """Bring the links up to ``tx`` (the write transaction of the switch): images removed since lose
    their links, images whose pending vector was written since are re-linked as link() does."""
    vectors = space_links.vectors
    current = {row[0] for row in tx.execute(f"SELECT pending_embeddings.image_id FROM pending_embeddings {_CURRENT}")}
    gone = set(vectors.view.ids().tolist()) - current
    rows = tx.execute(f"SELECT pending_embeddings.image_id, pending_embeddings.embedding FROM pending_embeddings "
                      f"{_CURRENT} WHERE pending_embeddings.rev > ?", (vectors.revision,)).fetchall()
    vectors.forget(sorted(gone))
    written, blobs = checked_rows(rows, vectors.dim, tx)
    vectors.write(written, blobs)
    vectors.revision = tx.pending_revision()
    view = vectors.view
    if space_links.copy is not None and written:
        space_links.copy.set_rows(np.asarray(written), view.matrix[written])
    searched = space_links.searched()

    def scores(pairs: list[tuple[int, int]]) -> list[float]:
        return np.einsum("ij,ij->i", view.vectors([a for a, _ in pairs]), view.vectors([b for _, b in pairs])).tolist()

    relinked(space_links.plan, {row[0] for row in rows}, gone,
             lambda ids: neighbour_candidates(searched, ids, top_k, threshold), scores, threshold, top_k)


def swap_in(tx: Transaction, space: PendingSpace, space_links: SpaceLinks) -> int:
    """In the switch's write transaction: the pending vectors, links and model become the active ones."""
    rev = tx.next_revision()
    tx.execute("DELETE FROM links")
    tx.execute(
        "UPDATE images SET embedding = (SELECT embedding FROM pending_embeddings WHERE image_id = images.id), "
        "model = ?, rev = ?, indexed_at = ?, linked = 1, pick_bar = NULL",
        (space.model, rev, time.time()),
    )
    plan = space_links.plan
    tx.executemany("UPDATE images SET pick_bar = ? WHERE id = ?",
                   [(bar, image) for image, bar in plan.pick_bars.items()])
    tx.executemany("INSERT INTO links (a, b, score) VALUES (?, ?, ?)",
                   [(a, b, score) for (a, b), score in plan.links.items()])
    tx.record_model(space.model, space.dim, space.weights_file)
    drop(tx)
    renew_store_identity(tx)
    return len(plan.links)
