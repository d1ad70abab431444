"""Cosine-similarity search with exact scores over vectors addressed by slot (slot = the store's image id).

The embedded store maps its vectors from shared files (``shared_vectors.py``) and hands
them here as a :class:`SlotVectors`: a ``(slots, dim)`` float32 matrix whose row ``i``
is image id ``i``, and a live flag per slot (unused and removed slots are 0). Search is
brute force on purpose: one BLAS product over the contiguous matrix is exact and, at the
sizes a photo library reaches, fast enough (see bench/store_search.py).

:meth:`SlotVectors.candidates` is the one seam a faster search plugs into: a
:class:`Proposer` attached with :meth:`SlotVectors.proposed_by` (``ann_search.py``) names
candidate ids, and only those are scored, exactly, from this matrix, with the same rules
as the full scan (dead and excluded ids dropped, best first, equal scores by id): the
linking rule relies on exact scores. A query whose answer the proposer does not vouch for
(:attr:`Proposal.trusted`) is scanned in full instead.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np

# Query-by-matrix products are cut into pieces of at most this many scores so a large
# batch against a large store does not allocate gigabytes at once (2**24 floats = 64 MiB).
_MAX_SCORES_PER_PRODUCT = 1 << 24

Found = tuple[np.ndarray, np.ndarray]  # (ids int64, scores float32), best first

# A shared id range is scored as one slice (no copy) when at least this share of its
# slots are wanted: new images take the highest ids, so recent writes are one range.
_SLICE_WHEN_DENSER_THAN = 0.5


@dataclass(frozen=True)
class Proposal:
    """Candidate ids to score exactly: some per query, plus ``shared`` ones for every query.

    ``trusted(row, needed)`` says whether the candidates can be relied on to hold every
    image scoring at least ``needed`` (the answer's lowest wanted score) for the query in that
    row of the batch; where it says no, the query is scanned in full. None: always trusted.
    """

    per_query: list[np.ndarray]
    shared: np.ndarray  # int64, sorted, unique
    trusted: Callable[[int, float], bool] | None = None


# (queries, k, exclude_ids, floor) -> the candidates to re-score; floor as in SlotVectors.candidates
Proposer = Callable[[np.ndarray, int, Sequence[Collection[int]] | None, float], Proposal]


class SlotVectors:
    """Vectors by id: row ``i`` of ``matrix`` is id ``i``, present while ``live[i]`` is non-zero.

    The arrays may be views of shared memory that another process changes; the owner
    (``SharedVectors.current``) holds a lock that keeps them still while this is used.
    """

    def __init__(self, matrix: np.ndarray, live: np.ndarray, proposer: Proposer | None = None) -> None:
        if matrix.ndim != 2 or live.shape != (matrix.shape[0],):
            raise ValueError(f"matrix {matrix.shape} and live flags {live.shape} do not match")
        self._matrix = matrix
        self._live = live
        self._proposer = proposer
        self._dead: np.ndarray | None = None  # slots to mask, computed on first search

    def proposed_by(self, proposer: Proposer) -> SlotVectors:
        """The same vectors, searched by exactly re-scoring what ``proposer`` names instead of a full scan."""
        return SlotVectors(self._matrix, self._live, proposer)

    @property
    def dim(self) -> int:
        return int(self._matrix.shape[1])

    @property
    def matrix(self) -> np.ndarray:
        """Row ``i`` = id ``i``'s vector, dead slots included: a view, valid while the owner holds it still."""
        return self._matrix

    @property
    def live(self) -> np.ndarray:
        """One flag per slot, 0 = no stored image: a view, like :attr:`matrix`."""
        return self._live

    @property
    def slots(self) -> int:
        return int(self._matrix.shape[0])

    def __len__(self) -> int:
        return int(np.count_nonzero(self._live))

    def __contains__(self, vector_id: object) -> bool:
        if not isinstance(vector_id, int | np.integer):
            return False
        return 0 <= vector_id < self.slots and bool(self._live[vector_id])

    def ids(self) -> np.ndarray:
        """Every live id, ascending."""
        return np.flatnonzero(self._live).astype(np.int64)

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """Copies of the stored vectors, one row per id (KeyError for an id that is not live)."""
        rows = np.asarray(ids, dtype=np.int64).reshape(-1)
        for vector_id in rows.tolist():
            if vector_id not in self:
                raise KeyError(vector_id)
        return self._matrix[rows].copy()

    def candidates(
        self,
        queries: np.ndarray,
        k: int,
        exclude_ids: Sequence[Collection[int]] | None = None,
        *,
        floor: float = -np.inf,
    ) -> list[Found]:
        """For each row of ``queries`` (unit vectors), its ``k`` best ``(ids, exact scores)``, best first.

        Dead slots and the query's ``exclude_ids`` never appear; equal scores are ordered
        by id. Without a proposer: one matrix product per block of queries over every slot
        (BLAS sgemv/sgemm); with one, only the proposed ids are scored, except for queries
        whose answer the proposal does not vouch for, which are scanned like the former.
        ``floor``: the caller uses no result scoring below it (link's threshold), so a
        proposal need only be trusted down to it; results below it may then be incomplete
        (fewer than ``k``, or not the best), though each score is still exact.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        if exclude_ids is not None and len(exclude_ids) != len(queries):
            raise ValueError("exclude_ids needs one collection per query")
        if k <= 0 or self.slots == 0:
            return [_nothing() for _ in queries]
        if self._proposer is not None:
            proposal = self._proposer(queries, k, exclude_ids, floor)
            return self._rescored(queries, k, exclude_ids, proposal, floor)
        return self._scanned(queries, k, exclude_ids)

    def _scanned(self, queries: np.ndarray, k: int, exclude_ids: Sequence[Collection[int]] | None) -> list[Found]:
        """The full scan: every live slot scored."""
        dead = self._dead_slots()
        alive = self.slots - len(dead)
        per_product = max(1, _MAX_SCORES_PER_PRODUCT // self.slots)
        results: list[Found] = []
        for start in range(0, len(queries), per_product):
            block = queries[start : start + per_product]
            if len(block) == 1:
                scores = (self._matrix @ block[0])[np.newaxis]
            else:
                # (slots, dim) @ (dim, queries) measured faster here than the transposed
                # form, so compute scores.T and copy it back once.
                scores = np.ascontiguousarray((self._matrix @ np.ascontiguousarray(block.T)).T)
            scores[:, dead] = -np.inf  # fresh arrays; real scores are finite
            for offset, row_scores in enumerate(scores):
                excluded = self._live_rows(exclude_ids[start + offset] if exclude_ids else ())
                results.append(_top_k(row_scores, min(k, alive - len(excluded)), excluded))
        return results

    def _rescored(
        self,
        queries: np.ndarray,
        k: int,
        exclude_ids: Sequence[Collection[int]] | None,
        proposal: Proposal,
        floor: float,
    ) -> list[Found]:
        """Exact scores of the proposed ids only; the same ordering rules as the full scan."""
        shared_ids, shared_rows = self._shared_rows(proposal.shared)
        results: list[Found] = []
        untrusted: list[int] = []
        for row, query in enumerate(queries):
            proposed = np.asarray(proposal.per_query[row], dtype=np.int64)
            proposed = proposed[(proposed >= 0) & (proposed < self.slots)]
            # sgemv per query, as the full scan scores a single query: the same float32 values.
            ids = np.concatenate([proposed, shared_ids])
            scores = np.concatenate([self._matrix[proposed] @ query, shared_rows @ query])
            ids, first = np.unique(ids, return_index=True)
            scores = scores[first]
            keep = self._live[ids] != 0
            if exclude_ids is not None and exclude_ids[row]:
                keep &= ~np.isin(ids, np.fromiter((int(i) for i in exclude_ids[row]), dtype=np.int64))
            ids, scores = ids[keep], scores[keep]
            order = np.lexsort((ids, -scores))[:k]  # best first, equal scores by id
            needed = max(float(scores[order[-1]]) if len(order) == k else -np.inf, floor)
            if proposal.trusted is not None and not proposal.trusted(row, needed):
                untrusted.append(row)
            results.append((ids[order], scores[order].astype(np.float32, copy=False)))
        if untrusted:  # one pass over the matrix for all of them (a link batch reads it once)
            excluded = [exclude_ids[row] for row in untrusted] if exclude_ids is not None else None
            for row, found in zip(untrusted, self._scanned(queries[untrusted], k, excluded), strict=True):
                results[row] = found
        return results

    def _shared_rows(self, shared: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The shared ids in range and their rows: a slice of the matrix when they are dense enough."""
        shared = np.asarray(shared, dtype=np.int64)
        shared = shared[(shared >= 0) & (shared < self.slots)]
        if len(shared) == 0:
            return shared, self._matrix[:0]
        low = int(shared[0])
        if len(shared) >= _SLICE_WHEN_DENSER_THAN * (self.slots - low):
            return np.arange(low, self.slots, dtype=np.int64), self._matrix[low:]
        return shared, self._matrix[shared]

    def _dead_slots(self) -> np.ndarray:
        if self._dead is None:
            self._dead = np.flatnonzero(self._live == 0)
        return self._dead

    def _live_rows(self, ids: Collection[int]) -> np.ndarray:
        rows = {int(i) for i in ids if int(i) in self}
        return np.fromiter(rows, dtype=np.int64, count=len(rows))


def neighbour_candidates(
    index: SlotVectors, ids: Sequence[int], top_k: int, threshold: float
) -> dict[int, list[tuple[int, float]]]:
    """Each image's ``top_k`` best neighbours in ``index`` (itself excluded): id -> [(id, cosine)].

    Only those at or above ``threshold`` are linked, so only those need be exact.
    """
    results = index.candidates(index.vectors(ids), top_k, [(i,) for i in ids], floor=threshold)
    return {
        image: list(zip(found.tolist(), scores.tolist(), strict=True))
        for image, (found, scores) in zip(ids, results, strict=True)
    }


def _top_k(scores: np.ndarray, k: int, excluded: np.ndarray) -> Found:
    if len(excluded):
        scores[excluded] = -np.inf
    if k <= 0:
        return _nothing()
    if k < len(scores):
        rows = np.argpartition(scores, len(scores) - k)[len(scores) - k :]
        # The partition picks arbitrarily among scores equal to the k-th: take the lowest ids.
        kth = scores[rows].min()
        better = np.flatnonzero(scores > kth)
        rows = np.concatenate([better, np.flatnonzero(scores == kth)[: k - len(better)]])
    else:
        rows = np.arange(len(scores))
    # Best first; equal scores by id (= row) so results do not depend on partition order.
    order = np.lexsort((rows, -scores[rows]))
    return rows[order].astype(np.int64), scores[rows][order].copy()


def _nothing() -> Found:
    return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
