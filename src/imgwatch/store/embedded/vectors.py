"""An in-memory, exact cosine-similarity index over L2-normalised float32 vectors.

The embedded store's VectorMirror keeps one per process, mirrored from SQLite. Search is
brute force on purpose: one BLAS matrix-vector product over a contiguous float32
matrix is exact and, at the sizes a photo library reaches, fast enough (see
bench/store_search.py). Ids are the store's integer image ids.

Not thread-safe; the owning store serialises access.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

import numpy as np

# Query-by-matrix products are cut into pieces of at most this many scores so a large
# batch against a large index does not allocate gigabytes at once (2**24 floats = 64 MiB).
_MAX_SCORES_PER_PRODUCT = 1 << 24


class VectorIndex:
    """Vectors by id in one growable ``(capacity, dim)`` float32 matrix.

    Rows ``[0, len)`` are live. Removal moves the last row into the hole so the live
    rows stay one contiguous block that BLAS can scan in a single call.
    """

    def __init__(self, dim: int, initial_capacity: int = 1024) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        capacity = max(1, initial_capacity)
        self._dim = dim
        self._matrix = np.zeros((capacity, dim), dtype=np.float32)
        self._ids = np.zeros(capacity, dtype=np.int64)
        self._row_of: dict[int, int] = {}
        self._count = 0

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def capacity(self) -> int:
        return self._matrix.shape[0]

    @property
    def nbytes(self) -> int:
        return self._matrix.nbytes + self._ids.nbytes

    def __len__(self) -> int:
        return self._count

    def __contains__(self, vector_id: object) -> bool:
        return vector_id in self._row_of

    def ids(self) -> np.ndarray:
        return self._ids[: self._count].copy()

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """Copies of the stored vectors, one row per id (KeyError if one is missing)."""
        rows = np.fromiter((self._row_of[i] for i in ids), dtype=np.int64, count=len(ids))
        return self._matrix[rows].copy()

    def upsert(self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors, or replace those whose id is already present (last one wins)."""
        ids_array = np.asarray(ids, dtype=np.int64).reshape(-1)
        matrix = np.asarray(vectors, dtype=np.float32).reshape(len(ids_array), self._dim)
        # Keep only each id's last occurrence so fancy assignment below is unambiguous.
        last_index_of = {int(vector_id): position for position, vector_id in enumerate(ids_array)}
        positions = np.fromiter(last_index_of.values(), dtype=np.int64, count=len(last_index_of))
        new_ids = [vector_id for vector_id in last_index_of if vector_id not in self._row_of]
        self._reserve(self._count + len(new_ids))
        for vector_id in new_ids:
            self._row_of[vector_id] = self._count
            self._ids[self._count] = vector_id
            self._count += 1
        rows = np.fromiter((self._row_of[i] for i in last_index_of), dtype=np.int64, count=len(positions))
        self._matrix[rows] = matrix[positions]

    def remove(self, ids: Iterable[int]) -> int:
        """Drop vectors by id (unknown ids are ignored); return how many were present."""
        removed = 0
        for vector_id in ids:
            row = self._row_of.pop(int(vector_id), None)
            if row is None:
                continue
            last = self._count - 1
            if row != last:  # swap-with-last keeps rows [0, count) dense
                moved_id = int(self._ids[last])
                self._matrix[row] = self._matrix[last]
                self._ids[row] = moved_id
                self._row_of[moved_id] = row
            self._count = last
            removed += 1
        return removed

    def search(
        self, query: np.ndarray, k: int, exclude_ids: Collection[int] = ()
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best ``(ids, scores)`` for one unit query, best first; exact dot products."""
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(self._dim)
        if k <= 0 or self._count == 0:
            return _empty_result()
        scores = self._matrix[: self._count] @ query
        return self._top_k(scores, k, self._excluded_rows(exclude_ids))

    def search_many(
        self, queries: np.ndarray, k: int, exclude_ids: Sequence[Collection[int]] | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """``search`` for each row of ``queries``, using matrix-matrix products (BLAS sgemm)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self._dim)
        if exclude_ids is not None and len(exclude_ids) != len(queries):
            raise ValueError("exclude_ids needs one collection per query")
        if k <= 0 or self._count == 0:
            return [_empty_result() for _ in range(len(queries))]
        live = self._matrix[: self._count]
        per_product = max(1, _MAX_SCORES_PER_PRODUCT // self._count)
        results: list[tuple[np.ndarray, np.ndarray]] = []
        for start in range(0, len(queries), per_product):
            block = queries[start : start + per_product]
            # One sgemm for the whole block; (count, dim) @ (dim, queries) measured faster
            # here than the transposed form, so compute scores.T and copy it back once.
            scores = np.ascontiguousarray((live @ np.ascontiguousarray(block.T)).T)
            for offset, row_scores in enumerate(scores):
                excluded = self._excluded_rows(exclude_ids[start + offset] if exclude_ids else ())
                results.append(self._top_k(row_scores, k, excluded))
        return results

    def _excluded_rows(self, exclude_ids: Collection[int]) -> np.ndarray:
        rows = {self._row_of[i] for i in exclude_ids if i in self._row_of}
        return np.fromiter(rows, dtype=np.int64, count=len(rows))

    def _top_k(self, scores: np.ndarray, k: int, excluded_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(excluded_rows):
            scores[excluded_rows] = -np.inf  # scores is a fresh array; real scores are finite
        k = min(k, self._count - len(excluded_rows))
        if k <= 0:
            return _empty_result()
        if k < len(scores):
            candidates = np.argpartition(scores, len(scores) - k)[len(scores) - k :]
        else:
            candidates = np.arange(len(scores))
        ids = self._ids[candidates]
        # Best first; equal scores by id so results do not depend on row order.
        order = np.lexsort((ids, -scores[candidates]))
        return ids[order].copy(), scores[candidates][order].copy()

    def _reserve(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        capacity = self.capacity
        while capacity < needed:
            capacity *= 2  # doubling keeps appends amortised O(1)
        matrix = np.zeros((capacity, self._dim), dtype=np.float32)
        matrix[: self._count] = self._matrix[: self._count]
        ids = np.zeros(capacity, dtype=np.int64)
        ids[: self._count] = self._ids[: self._count]
        self._matrix, self._ids = matrix, ids


def _empty_result() -> tuple[np.ndarray, np.ndarray]:
    return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
