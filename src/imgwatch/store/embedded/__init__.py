"""The embedded graph store: one SQLite file under the data dir plus memory-mapped vector files beside it.

- ``sqlite.py``: the file: connection setup, transactions, schema and migrations, meta values.
- ``shared_vectors.py``: the embeddings in files every process maps (one copy per machine),
  kept at SQLite's revision by whichever process writes or finds them behind.
- ``vectors.py``: cosine search over those vectors (slot = image id), always scored exactly.
- ``ann.py``: an HNSW index (usearch, 8-bit) that proposes candidates, saved beside the store.
- ``ann_search.py``: when the index is used (large stores), what it has not seen yet, and
  bringing it forward in the background.
- ``store.py``: :class:`EmbeddedGraphStore`, the :class:`~imgwatch.store.base.GraphStore` contract.
"""

from __future__ import annotations

from imgwatch.store.embedded.store import EmbeddedGraphStore

__all__ = ["EmbeddedGraphStore"]
