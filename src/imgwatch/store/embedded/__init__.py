"""The embedded graph store: one SQLite file under the data dir plus an in-memory vector mirror.

- ``sqlite.py``: the file: connection setup, transactions, schema and migrations, meta values.
- ``mirror.py``: each process's in-memory copy of the embeddings, kept current incrementally.
- ``vectors.py``: the exact in-memory cosine index the mirror holds.
- ``store.py``: :class:`EmbeddedGraphStore`, the :class:`~imgwatch.store.base.GraphStore` contract.
"""

from __future__ import annotations

from imgwatch.store.embedded.store import EmbeddedGraphStore

__all__ = ["EmbeddedGraphStore"]
