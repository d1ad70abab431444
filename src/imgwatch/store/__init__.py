"""Graph store: image nodes with embeddings, linked by SIMILAR_TO links.

Everything outside this package uses the :class:`GraphStore` contract and gets a
backend from :func:`open_store`.
"""

from __future__ import annotations

from imgwatch.config import STORE_BACKENDS, Config, neo4j_password
from imgwatch.datadir import DataDir
from imgwatch.store.base import (
    ExportedImage,
    FileState,
    GraphStore,
    ImageNotFound,
    ImageRecord,
    Link,
    Match,
    ModelMismatchError,
    PendingSpace,
    StoredImage,
    StoreError,
    StoreMissing,
    StoreStats,
    StoreUnavailable,
)
from imgwatch.store.embedded import EmbeddedGraphStore

__all__ = [
    "EmbeddedGraphStore",
    "ExportedImage",
    "FileState",
    "GraphStore",
    "ImageNotFound",
    "ImageRecord",
    "Link",
    "Match",
    "ModelMismatchError",
    "PendingSpace",
    "StoreError",
    "StoreMissing",
    "StoreStats",
    "StoreUnavailable",
    "StoredImage",
    "open_store",
]


def open_store(config: Config, *, backend: str | None = None, create: bool = True,
               link_device: str = "cpu") -> GraphStore:
    """Open the configured store (or ``backend``, for migrations).

    ``create=False`` is for read-only commands: a mistyped data dir or an empty Neo4j
    database then fails with StoreMissing instead of quietly creating an empty store.
    ``link_device``: where the embedded store scans for links (a GPU worker passes its GPU).
    """
    kind = backend or config.general.store
    if kind == "embedded":
        return _open_embedded(config.data_dir, create=create, link_device=link_device)
    if kind == "neo4j":
        from imgwatch.store.neo4j import Neo4jGraphStore  # the driver loads only when used

        return Neo4jGraphStore(config.neo4j, neo4j_password(config), create=create)
    raise StoreError(f"unknown store backend {kind!r}; supported: {', '.join(STORE_BACKENDS)}")


def _open_embedded(data_dir: DataDir, *, create: bool, link_device: str) -> EmbeddedGraphStore:
    if not create and not data_dir.store_file.exists():
        raise StoreMissing(
            f"no imgwatch store in {data_dir.path}: nothing is indexed there yet; start `imgwatch run FOLDER`, "
            "or point --data-dir (IMGWATCH_GENERAL_DATA_DIR) at the right place"
        )
    data_dir.create()
    return EmbeddedGraphStore(data_dir.store_file, link_device=link_device)
