"""This process's in-memory copy of every stored embedding, kept current incrementally.

SQLite is the source of truth. Each write transaction that changes embeddings bumps
the store's revision and stamps the rows it writes (or the tombstones of the rows it
deletes) with it, so before a query the mirror reads only what changed since the
revision it reflects: the first sync loads everything, later ones a few rows.
"""

from __future__ import annotations

import numpy as np

from imgwatch.errors import StoreError
from imgwatch.store.batching import PAGE_SIZE
from imgwatch.store.embedded.sqlite import Transaction
from imgwatch.store.embedded.vectors import VectorIndex


class VectorMirror:
    """A :class:`VectorIndex` of the store's embeddings (by image id) and the revision it reflects.

    Not thread-safe: :meth:`sync` runs inside a transaction, which the database serialises.
    """

    def __init__(self) -> None:
        self._index: VectorIndex | None = None
        self._revision = 0

    @property
    def index(self) -> VectorIndex | None:
        """The index as of the last :meth:`sync`; None before the first one (or after ``clear``)."""
        return self._index

    @property
    def revision(self) -> int:
        """The store revision the index reflects (0 before anything was loaded)."""
        return self._revision

    @property
    def loaded(self) -> bool:
        return self._index is not None

    def __len__(self) -> int:
        return 0 if self._index is None else len(self._index)

    def sync(self, transaction: Transaction, dim: int) -> VectorIndex:
        """The index brought up to the snapshot of ``transaction``, for embeddings of ``dim``.

        Reuses the index and reads only rows and tombstones newer than :attr:`revision`;
        reloads everything on first use, when ``dim`` changed (a model switch) or when the
        store's revision went back (its file was replaced under this process).
        """
        revision = transaction.revision()
        if self._index is None or self._index.dim != dim or revision < self._revision:
            self._index, self._revision = VectorIndex(dim), 0
        index = self._index
        if revision == self._revision:
            return index
        # Tombstones first: a row still present in this snapshot is alive, whatever its past.
        gone = transaction.execute("SELECT id FROM tombstones WHERE rev > ?", (self._revision,))
        index.remove(row[0] for row in gone)
        cursor = transaction.execute("SELECT id, embedding FROM images WHERE rev > ?", (self._revision,))
        while page := cursor.fetchmany(PAGE_SIZE):
            blobs = [blob for _, blob in page]
            if any(len(blob) != 4 * dim for blob in blobs):
                raise StoreError(f"store {transaction.path} holds an embedding that is not {dim} float32 values")
            vectors = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(page), dim)
            index.upsert([image_id for image_id, _ in page], vectors)
        self._revision = revision
        return index

    def clear(self) -> None:
        """Drop the index (its memory); the next :meth:`sync` loads everything again."""
        self._index, self._revision = None, 0
