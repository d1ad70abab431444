"""This process's int8 copy of the store's vectors (``int8_scan.py``), kept in step for linking.

A worker links every batch it writes; once the library is large, scanning the float32
vectors per batch costs ~12 ms an image at 200k on a 2-core CPU, and the HNSW graph's
answer is not exact (bench/RESULTS.md, issue 26). :meth:`CompactCopy.attach` instead
hands ``link`` a view whose candidates come from a batched int8 scan that is exact by
construction (the float32 rows re-score them).

The copy lives in the linking process (2 KiB per 2048-d image; on the GPU when the
worker has one) and is kept at the revision of the view it is attached to, like the
shared files themselves: rows SQLite wrote after the copy's revision (``images.rev`` is
indexed) are quantised again, new slots appended; removals need nothing (the view's live
flags are read at every scan). It is rebuilt from the view when the store's identity
changes (a model switch renews it, another store file replaced this one) or SQLite went
back to an older revision.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from imgwatch.log import get_logger
from imgwatch.store.embedded.int8_scan import Int8Rows
from imgwatch.store.embedded.shared_vectors import store_identity
from imgwatch.store.embedded.sqlite import Transaction
from imgwatch.store.embedded.vectors import SlotVectors

log = get_logger("imgwatch.store")

# Below this many live images a batch scans the float32 vectors: as fast there, and no copy
# to build or hold (bench/store_scale.py: ~0.5 ms per image at 1k either way).
COMPACT_MIN_IMAGES = 10_000


class CompactCopy:
    """An int8 copy of the store's vectors on ``device``, attached to large link batches. Thread-safe."""

    def __init__(self, *, min_images: int = COMPACT_MIN_IMAGES, device: str = "cpu") -> None:
        self.min_images = min_images
        self.device = device
        self._lock = threading.Lock()
        self._rows: Int8Rows | None = None
        self._identity: bytes | None = None
        self._revision = 0  # every row SQLite wrote up to this revision is in the copy
        self.builds = 0  # full builds by this object: tests and the bench read it

    @property
    def nbytes(self) -> int:
        """Bytes the copy holds now (0 before its first build)."""
        rows = self._rows
        return rows.nbytes if rows is not None else 0

    def attach(self, tx: Transaction, view: SlotVectors) -> SlotVectors:
        """``view`` searched through the copy when the library is large; ``view`` itself otherwise.

        ``tx`` is the transaction ``view`` was taken in, and the view must be held still
        (``SharedVectors.current``) while the result is searched.
        """
        if len(view) < self.min_images:
            return view
        with self._lock:
            rows = self._in_step(tx, view)
        return rows.searching(view)

    def _in_step(self, tx: Transaction, view: SlotVectors) -> Int8Rows:
        identity, revision = store_identity(tx), tx.revision()
        rows = self._rows
        if rows is None or rows.dim != view.dim or identity != self._identity or revision < self._revision:
            started = time.monotonic()
            rows = Int8Rows(view.dim, self.device)
            rows.set_range(0, view.slots, view.matrix)
            self._rows, self._identity, self._revision = rows, identity, revision
            self.builds += 1
            log.info("compact_copy_built", images=len(view), device=self.device, mib=rows.nbytes >> 20,
                     seconds=round(time.monotonic() - started, 1))
            return rows
        if revision > self._revision:
            old_slots = rows.slots
            rows.set_range(old_slots, view.slots, view.matrix)  # new slots, dead ones included
            changed = np.fromiter(
                (row[0] for row in tx.execute("SELECT id FROM images WHERE rev > ? AND id < ?",
                                              (self._revision, old_slots))),
                dtype=np.int64)
            changed = changed[changed < view.slots]
            rows.set_rows(changed, view.matrix[changed])
            self._revision = revision
        elif view.slots > rows.slots:
            rows.set_range(rows.slots, view.slots, view.matrix)
        return rows
