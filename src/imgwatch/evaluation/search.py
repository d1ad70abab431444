"""Where `imgwatch eval` looks for each copy's original: the whole library.

For the store's own model that is the store's search over every indexed image (its index, as
`imgwatch search` uses). Another model's vectors are not in the store, so its library is the photos
eval embeds itself: the sampled originals and the distractors, searched exactly in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from imgwatch.store import GraphStore


@dataclass(frozen=True)
class Hit:
    path: str
    score: float
    content: str  # SHA-256: the hits with an original's content are that original


class Library(Protocol):
    def search(self, vector: np.ndarray, top: int) -> list[Hit]:
        """The ``top`` library photos most like ``vector``, best first."""
        ...


class StoreLibrary:
    """Every indexed image, searched by the store (read-only)."""

    def __init__(self, store: GraphStore) -> None:
        self.store = store

    def search(self, vector: np.ndarray, top: int) -> list[Hit]:
        found = self.store.nearest(vector, top)
        stored = self.store.get_many([match.path for match in found])
        return [Hit(m.path, m.score, stored[m.path].sha256) for m in found if m.path in stored]


class EmbeddedLibrary:
    """The photos eval embedded itself, searched exactly."""

    def __init__(self, paths: Sequence[str], contents: Sequence[str], vectors: np.ndarray) -> None:
        self.paths, self.contents, self.vectors = list(paths), list(contents), vectors

    def search(self, vector: np.ndarray, top: int) -> list[Hit]:
        scores = self.vectors @ vector
        best = np.argsort(-scores, kind="stable")[:top]
        return [Hit(self.paths[i], float(scores[i]), self.contents[i]) for i in best]
