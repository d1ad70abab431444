"""Graph store: image nodes with embeddings, linked by SIMILAR_TO edges.

Everything outside this package uses the :class:`GraphStore` contract and gets a
backend from :func:`open_store`.
"""

from __future__ import annotations

from pathlib import Path

from imgwatch.store.base import (
    FileState,
    GraphStore,
    ImageNotFound,
    ImageRecord,
    Match,
    ModelMismatchError,
    StoredImage,
    StoreError,
    StoreStats,
)
from imgwatch.store.embedded import EmbeddedGraphStore

EMBEDDED_DB_NAME = "store.sqlite3"

__all__ = [
    "EMBEDDED_DB_NAME",
    "EmbeddedGraphStore",
    "FileState",
    "GraphStore",
    "ImageNotFound",
    "ImageRecord",
    "Match",
    "ModelMismatchError",
    "StoreError",
    "StoreMissing",
    "StoreStats",
    "StoredImage",
    "open_store",
]


class StoreMissing(StoreError):
    """Nothing has been indexed under this data dir (or it is the wrong one)."""


def open_store(kind: str, data_dir: Path, *, create: bool = True) -> GraphStore:
    """Open the store backend named ``kind`` keeping its files under ``data_dir``.

    ``create=False`` is for read-only commands: a mistyped data dir then fails
    with StoreMissing instead of quietly creating an empty store there.
    """
    if kind == "embedded":
        data_dir = Path(data_dir)
        if not create and not (data_dir / EMBEDDED_DB_NAME).exists():
            raise StoreMissing(
                f"no imgwatch store in {data_dir}: nothing is indexed there yet; start `imgwatch run FOLDER`, "
                "or point --data-dir (IMGWATCH_GENERAL_DATA_DIR) at the right place"
            )
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create data dir {data_dir}: {exc.strerror}") from exc
        return EmbeddedGraphStore(data_dir / EMBEDDED_DB_NAME)
    if kind == "neo4j":
        raise StoreError("the neo4j store backend is not available yet; use store = \"embedded\"")
    raise StoreError(f"unknown store backend {kind!r}; supported: \"embedded\"")
