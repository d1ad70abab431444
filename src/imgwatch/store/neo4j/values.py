"""Pure conversions between Neo4j's rows and values and imgwatch's (no driver, no server).

Neo4j reports cosine similarity as ``(1 + cos) / 2`` in [0, 1], both from the vector
index and from ``vector.similarity.cosine``
(https://neo4j.com/docs/cypher-manual/current/indexes/semantic-indexes/vector-indexes/,
"Cosine and Euclidean similarity functions"). imgwatch decides in raw cosines: scores
are converted back (:func:`score_to_cosine`) before the linking rule
(:mod:`imgwatch.store.linking`) sees them, and a threshold only bounds which
candidates are fetched (:func:`candidate_score_bound`, a little below it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from imgwatch.errors import StoreError
from imgwatch.store.linking import Candidate, FormerLink

T = TypeVar("T")

# HNSW answers are approximate and depend on k (neo4j/neo4j#13542), and the index
# quantizes vectors by default since 5.23, so its scores are approximate too: ask for
# more candidates than needed, re-score them exactly, keep the best.
OVERFETCH_FACTOR = 3
MIN_CANDIDATES = 30
# Bounds for one UNWIND statement: rows, and floats (a float is 9 bytes in Bolt's
# PackStream, so 1M floats is about 9 MB per message).
MAX_ROWS_PER_STATEMENT = 1000
MAX_FLOATS_PER_STATEMENT = 1_000_000
# How far below the threshold (in Neo4j's score space) candidates are fetched, so that
# rounding in (1 + cos) / 2 never hides one at the threshold. Fetching only: whether a
# candidate is picked is decided on its raw cosine against the threshold itself.
CANDIDATE_SCORE_SLACK = 1e-6


def cosine_to_score(cosine: float) -> float:
    """A raw cosine in [-1, 1] as Neo4j's cosine similarity score in [0, 1]."""
    return (1.0 + cosine) / 2.0


def score_to_cosine(score: float) -> float:
    """Neo4j's cosine similarity score in [0, 1] back to the raw cosine in [-1, 1]."""
    return 2.0 * score - 1.0


def candidate_score_bound(threshold: float) -> float:
    """The score candidates are fetched above: never above the threshold's own score."""
    return max(0.0, cosine_to_score(threshold) - CANDIDATE_SCORE_SLACK)


def statement_batches(items: Sequence[T], floats_per_item: int) -> Iterator[Sequence[T]]:
    """Split ``items`` into consecutive UNWIND batches within both statement bounds."""
    size = max(1, min(MAX_ROWS_PER_STATEMENT, MAX_FLOATS_PER_STATEMENT // max(1, floats_per_item)))
    for start in range(0, len(items), size):
        yield items[start : start + size]


def candidate_count(k: int, excluded: int = 0) -> int:
    """How many ANN candidates to fetch for ``k`` results after dropping ``excluded`` ones."""
    wanted = k + excluded
    return max(wanted * OVERFETCH_FACTOR, wanted + MIN_CANDIDATES)


def embedding_digest(vector: np.ndarray) -> str:
    """What ``embedding_digest`` holds: tells a changed embedding from a re-upsert of the same one."""
    return hashlib.blake2b(np.asarray(vector).astype("<f4").tobytes(), digest_size=16).hexdigest()


def as_vector(value: object, path: str = "an image") -> np.ndarray:
    """A stored embedding as float32: a list of floats, or a Cypher 25 ``VECTOR`` value
    (driver 6 returns ``neo4j.vector.Vector``; anything with ``to_numpy()`` works)."""
    if value is None:
        raise StoreError(f"{path} has no stored embedding")
    to_numpy = getattr(value, "to_numpy", None)
    array = to_numpy() if callable(to_numpy) else value
    # Vector.to_numpy() is big-endian; asarray converts to native float32.
    return np.asarray(array, dtype=np.float32).reshape(-1)


def candidates_from_rows(rows: Iterable[Mapping[str, Any]], paths: Iterable[str]) -> dict[str, list[Candidate[str]]]:
    """CANDIDATES rows (path, neighbour, score) as each path's (neighbour, raw cosine) list.

    Every path in ``paths`` gets an entry (empty when nothing was found), as
    :func:`imgwatch.store.linking.plan_links` requires.
    """
    found: dict[str, list[Candidate[str]]] = {path: [] for path in paths}
    for row in rows:
        found.setdefault(row["path"], []).append((row["neighbour"], score_to_cosine(row["score"])))
    return found


def within_batch(vectors: Mapping[str, np.ndarray], threshold: float) -> dict[str, list[Candidate[str]]]:
    """The pairs of the batch's own images with cosine >= ``threshold``, scored from the
    vectors in hand (no round trip): each path's (other path, raw cosine) list.

    The index would find most of these pairs too, but approximately; scoring them
    directly guarantees that near-duplicates arriving together link to each other.
    """
    paths = list(vectors)
    if len(paths) < 2:
        return {path: [] for path in paths}
    matrix = np.stack([np.asarray(vectors[p], dtype=np.float64) for p in paths])
    norms = np.linalg.norm(matrix, axis=1)
    cosines = (matrix @ matrix.T) / np.outer(norms, norms)
    return {
        path: [(paths[j], float(cosines[i, j])) for j in np.flatnonzero(cosines[i] >= threshold) if j != i]
        for i, path in enumerate(paths)
    }


def former_links_from_rows(rows: Iterable[Mapping[str, Any]]) -> list[FormerLink[str]]:
    """FORMER_LINKS rows (outside, inside, bar, score) for the linking rule."""
    return [
        FormerLink(
            neighbour=row["outside"],
            image=row["inside"],
            neighbour_bar=None if row["bar"] is None else float(row["bar"]),
            score=score_to_cosine(row["score"]),
        )
        for row in rows
    ]


def under_range(under: str | None) -> tuple[str, str, str] | None:
    """(directory, prefix, upper) for the paths at or below ``under``; None for everything.

    ``/a/b`` covers ``/a/b`` itself and the range [``/a/b/``, ``/a/b0``), which holds
    exactly the paths starting with ``/a/b/`` (``0`` follows ``/``), not the sibling ``/a/bc``.
    """
    if under is None:
        return None
    directory = under.rstrip("/")
    if not directory:  # the filesystem root
        return None
    return directory, directory + "/", directory + chr(ord("/") + 1)
