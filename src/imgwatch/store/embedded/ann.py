"""An approximate nearest-neighbour (HNSW) index of the store's embeddings, kept beside SQLite.

Exact search reads every stored vector per query, so its cost grows with the library;
an HNSW graph finds a query's neighbourhood in a few hundred distance computations
whatever the size. This index only proposes *candidates*: the caller re-scores them
exactly from the stored float32 vectors, so results and scores stay exact and the
graph can hold 8-bit copies of the vectors (a quarter of float32's memory and file).

SQLite stays the source of truth. The index is a cache that records the store revision
it reflects: the caller brings it forward (``add`` for new or re-embedded images,
``remove`` for deleted ones), saves it now and then, and rebuilds it from the store when
:meth:`HnswIndex.open` raises :class:`IndexFileUnusable` (missing, truncated, corrupt,
written for another dim or format) or when it is newer than the store.

On disk a directory holds ``current.json`` (format, dim, revision, the data file's name
and size) and that data file, a usearch index. ``save`` writes a new data file under a
fresh name and then replaces ``current.json`` with one rename, so a reader sees either
the old pair or the new one. Any number of processes can ``open`` the saved file as a
read-only memory-mapped view: the pages are shared through the page cache (one copy per
machine); only a writer keeps a private, mutable copy in memory.

Library and parameters were chosen by measurement (bench/ann_choice.py, bench/ann_scale.py).
Not thread-safe: the owner serialises calls.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

import numpy as np

# Loading usearch's extension first makes a later `import onnxruntime` kill the process with
# SIGSEGV (usearch 2.26.6, onnxruntime 1.31.1); the other order works, and a worker needs both.
with contextlib.suppress(ImportError):
    import onnxruntime  # noqa: F401
from usearch.index import Index, MetricKind, ScalarKind  # noqa: E402

from imgwatch.disk import flush_folder  # noqa: E402

# Bump when the meaning of the files changes; an index of another format is rebuilt.
INDEX_FORMAT = 1
CURRENT_FILE = "current.json"
DATA_PREFIX = "hnsw-"
DATA_SUFFIX = ".usearch"

# Inner product on unit vectors = cosine. Vectors are stored as 8-bit integers (usearch
# scales each unit vector by 127): the raw graph order misses ~14 % of the top 10, but an
# exact re-score of OVERFETCH x 10 candidates recovers it (brute force over the 8-bit
# vectors + re-score of 40: recall@10 1.000 at 1M), for a quarter of float32's memory and a
# build 2-3x faster than f16/f32 on two cores (bench/ann_choice.py, bench/ann_scale.py).
METRIC = "ip"
STORAGE_DTYPE = "i8"
# Graph degree ("M") and insertion breadth ("efConstruction"). usearch's defaults (16, 128)
# reach recall@10 0.9975 at 100k but plateau at 1M (0.891 / 0.945 / 0.979 at ef 128 / 256 /
# 512, one-thread build): the graph, not the 8-bit vectors, loses neighbours. 32 / 256 at 1M:
# 0.987 / 0.992 / 0.997 at ef 128 / 160 / 192, for inserts ~2x as slow (bench/RESULTS.md).
CONNECTIVITY = 32
EXPANSION_ADD = 256
# Search breadth for queries ("ef"), raised to the number of candidates asked for when
# larger. With the graph above and 100 candidates re-scored, at 1M, one run on a busier day
# (an earlier run, 40 candidates, in brackets): ef 128 -> recall@10 0.987, p50 9.0 ms (4.5);
# 160 -> 0.992, 9.0 ms (5.6); 192 -> 0.997, 11.3 ms (6.9). 160 meets recall in both. The store's
# whole search path (tail check, mapped vectors) at 160 on a quiet machine: 5.9-7.5 ms.
EXPANSION_SEARCH = 160
# Candidates asked per wanted neighbour: 8-bit distances blur the order among close
# neighbours, so 10 candidates for a top-10 miss ~12 % of it and 40 miss none
# (brute-force check at 1M); 80 gains nothing over 40 at any ef measured.
OVERFETCH = 4


class IndexFileUnusable(Exception):
    """The saved index cannot be used (missing, corrupt, incompatible): rebuild it from the store."""


def candidate_count(k: int) -> int:
    """How many ANN candidates to re-score exactly for a top-``k`` answer."""
    return max(k, 1) * OVERFETCH


class HnswIndex:
    """Image ids -> 8-bit HNSW graph nodes, with the store revision the contents reflect.

    A view (from :meth:`open` with ``view=True``) is read-only and memory-mapped; a writable
    index lives in this process's memory.
    """

    def __init__(self, dim: int, revision: int = 0, *, _index: Index | None = None, _view: bool = False) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self._dim = dim
        self._view = _view
        self.revision = revision  # the store revision whose live vectors this index holds
        self._index = _index if _index is not None else Index(
            ndim=dim, metric=METRIC, dtype=STORAGE_DTYPE, connectivity=CONNECTIVITY,
            expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH,
        )

    # -- building and updating --------------------------------------------------------

    @classmethod
    def build(
        cls, dim: int, chunks: Iterable[tuple[Sequence[int] | np.ndarray, np.ndarray]], revision: int,
        threads: int = 0,
    ) -> HnswIndex:
        """A new index of every ``(ids, vectors)`` chunk (e.g. pages read from the store).

        Chunks keep the float32 copies in memory bounded; ``threads=0`` uses every core.
        """
        index = cls(dim, revision)
        for ids, vectors in chunks:
            index.add(ids, vectors, threads=threads)
        return index

    def add(self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray, threads: int = 0) -> None:
        """Insert unit vectors by id; an id already present is replaced (re-embedded image)."""
        self._writable()
        keys = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(keys) == 0:
            return
        if np.any(keys < 0):
            raise ValueError("ids must be non-negative")
        matrix = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(keys), self._dim)
        # Within one call the last vector of a repeated id wins, as in VectorIndex.upsert.
        last_position = {int(key): position for position, key in enumerate(keys)}
        if len(last_position) != len(keys):
            positions = np.fromiter(last_position.values(), dtype=np.int64, count=len(last_position))
            keys, matrix = keys[positions], matrix[positions]
        present = np.atleast_1d(self._index.contains(keys.astype(np.uint64)))
        if present.any():
            self._index.remove(keys[present].astype(np.uint64))
        self._index.add(keys.astype(np.uint64), matrix, threads=threads)

    def remove(self, ids: Iterable[int]) -> int:
        """Drop ids (unknown ones are ignored); return how many were present."""
        self._writable()
        keys = np.fromiter((int(i) for i in ids), dtype=np.int64)
        keys = keys[keys >= 0]
        if len(keys) == 0:
            return 0
        keys = np.unique(keys).astype(np.uint64)
        present = np.atleast_1d(self._index.contains(keys))
        if not present.any():
            return 0
        self._index.remove(keys[present])
        return int(present.sum())

    # -- queries ----------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def read_only(self) -> bool:
        return self._view

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, vector_id: object) -> bool:
        if not isinstance(vector_id, int | np.integer) or vector_id < 0:
            return False
        return bool(self._index.contains(int(vector_id)))

    def candidates(
        self, queries: np.ndarray, count: int, exclude: Sequence[Collection[int]] | None = None,
        threads: int = 0,
    ) -> list[np.ndarray]:
        """Up to ``count`` candidate ids per query row, nearest first by the 8-bit distances.

        ``exclude`` holds one collection of ids per query that must not be returned (the
        image itself when linking). Scores are not returned on purpose: the caller
        re-scores the candidates exactly from the float32 vectors (see :func:`candidate_count`).
        """
        matrix = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self._dim)
        if exclude is not None and len(exclude) != len(matrix):
            raise ValueError("exclude needs one collection per query")
        if count <= 0 or len(self._index) == 0 or len(matrix) == 0:
            return [np.empty(0, dtype=np.int64) for _ in range(len(matrix))]
        widest_exclusion = max((len(ids) for ids in exclude), default=0) if exclude else 0
        fetch = count + widest_exclusion  # so count remain after dropping excluded ids
        self._index.expansion_search = max(EXPANSION_SEARCH, fetch)
        found = self._index.search(matrix, fetch, threads=threads if len(matrix) > 1 else 1)
        if len(matrix) == 1:  # usearch answers one query with a Matches (keys already cut to what it found)
            keys, counts = np.asarray(found.keys).reshape(1, -1), [len(found.keys)]
        else:
            keys, counts = np.asarray(found.keys), np.asarray(found.counts)
        results = []
        for row, (row_keys, row_count) in enumerate(zip(keys, counts, strict=True)):
            ids = row_keys[:row_count].astype(np.int64)
            if exclude is not None and exclude[row]:
                ids = ids[~np.isin(ids, np.fromiter(exclude[row], dtype=np.int64))]
            results.append(ids[:count])
        return results

    # -- files ------------------------------------------------------------------------

    def save(self, directory: Path | str) -> Path:
        """Write the index and its metadata under ``directory`` atomically; return the data file.

        One writer at a time (the caller holds the store's write lock or a file lock).
        Readers holding an older generation keep their mapping: its file is unlinked, not
        overwritten.
        """
        self._writable()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{DATA_PREFIX}{self.revision}-{uuid.uuid4().hex[:12]}{DATA_SUFFIX}"
        temporary = directory / f".{name}.tmp"
        try:
            self._index.save(str(temporary))
            _fsync_file(temporary)
            data_path = directory / name
            os.rename(temporary, data_path)
        finally:
            temporary.unlink(missing_ok=True)
        metadata = {
            "format": INDEX_FORMAT, "library": "usearch", "dim": self._dim, "metric": METRIC,
            "dtype": STORAGE_DTYPE, "connectivity": CONNECTIVITY, "expansion_add": EXPANSION_ADD,
            "revision": self.revision,
            "count": len(self._index), "file": name, "bytes": data_path.stat().st_size,
        }
        current_temporary = directory / f".{CURRENT_FILE}.{uuid.uuid4().hex[:12]}.tmp"
        current_temporary.write_text(json.dumps(metadata, indent=1) + "\n")
        _fsync_file(current_temporary)
        os.replace(current_temporary, directory / CURRENT_FILE)  # the commit point
        flush_folder(directory)
        for stale in directory.glob(f"{DATA_PREFIX}*{DATA_SUFFIX}"):
            if stale.name != name:
                stale.unlink(missing_ok=True)
        return data_path

    @classmethod
    def open(cls, directory: Path | str, dim: int, *, view: bool = True) -> HnswIndex:
        """The index saved under ``directory``: a shared read-only mapping, or (``view=False``)
        a private writable copy loaded into memory.

        Raises :class:`IndexFileUnusable` when it is missing, truncated, corrupt or was
        written for another dim, format or storage type: the caller rebuilds it.
        """
        directory = Path(directory)
        for _attempt in range(3):  # a writer may replace the generation between two reads
            metadata = read_metadata(directory)
            data_path = directory / str(metadata["file"])
            if not data_path.exists():
                continue
            _check(metadata, dim, data_path)
            try:
                # restore() reads M from the file but gives later inserts usearch's default
                # efConstruction (128): a store's index brought forward at 20k then recalled
                # 0.862 of the exact top 10 for "similar" queries instead of 0.907.
                index = Index.restore(str(data_path), view=view, connectivity=CONNECTIVITY,
                                      expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)
            except (ValueError, RuntimeError) as error:
                raise IndexFileUnusable(f"{data_path}: {error}") from error
            if index is None or index.ndim != dim or len(index) != metadata["count"]:
                raise IndexFileUnusable(f"{data_path} does not hold what {CURRENT_FILE} says")
            return cls(dim, int(metadata["revision"]), _index=index, _view=view)
        raise IndexFileUnusable(f"{directory}: the data file named by {CURRENT_FILE} is missing")

    def _writable(self) -> None:
        if self._view:
            raise PermissionError("this index is a read-only view: open it with view=False to change it")


def read_metadata(directory: Path | str) -> dict[str, object]:
    """``current.json`` of a saved index (IndexFileUnusable when missing or unreadable)."""
    path = Path(directory) / CURRENT_FILE
    try:
        metadata = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise IndexFileUnusable(f"no saved index: {path} is missing") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IndexFileUnusable(f"{path} is unreadable: {error}") from error
    if not isinstance(metadata, dict) or not isinstance(metadata.get("file"), str) \
            or "/" in metadata["file"] or not metadata["file"].startswith(DATA_PREFIX):
        raise IndexFileUnusable(f"{path} does not describe an index")
    return metadata


def _check(metadata: dict[str, object], dim: int, data_path: Path) -> None:
    """Refuse a saved index that this code did not write for ``dim``, or a damaged data file."""
    wanted = {"format": INDEX_FORMAT, "library": "usearch", "dim": dim, "metric": METRIC,
              "dtype": STORAGE_DTYPE, "connectivity": CONNECTIVITY, "expansion_add": EXPANSION_ADD}
    for key, value in wanted.items():
        if metadata.get(key) != value:
            raise IndexFileUnusable(f"saved index has {key}={metadata.get(key)!r}, this imgwatch needs {value!r}")
    if not isinstance(metadata.get("revision"), int) or not isinstance(metadata.get("count"), int):
        raise IndexFileUnusable("saved index metadata lacks its revision or count")
    size = data_path.stat().st_size
    if size != metadata.get("bytes"):
        # A truncated file must never reach the memory map: reading past its end crashes.
        raise IndexFileUnusable(f"{data_path} has {size} bytes, {metadata.get('bytes')} were written")
    try:
        header = Index.metadata(str(data_path))
    except (ValueError, RuntimeError) as error:
        raise IndexFileUnusable(f"{data_path}: {error}") from error
    if header is None or header.get("dimensions") != dim or header.get("kind_scalar") != ScalarKind.I8 \
            or header.get("kind_metric") != MetricKind.IP or header.get("count_present") != metadata["count"]:
        raise IndexFileUnusable(f"{data_path}'s header does not match {CURRENT_FILE}")


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
