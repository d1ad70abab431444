"""Moves within the watched roots: the store renames what it holds, then both sides are indexed.

A file or folder moved inside the roots keeps its images' nodes, embeddings, file
states and links: the store only renames their paths (no decode, no model). Then
everything at either end of the move is indexed as usual (a follow-up index job
per batch, queued behind the work already waiting), which makes the store match
the disk whatever happened since the move: a moved file that also changed is
re-embedded, one that moved again is renamed by that later move's job first, a
move that arrived twice renames nothing the second time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from imgwatch.files import root_of, walk_images
from imgwatch.log import get_logger
from imgwatch.workers.indexer import Indexer

log = get_logger("imgwatch.worker")

# Paths per follow-up index job: mostly unchanged files (a stat and a store read each).
FOLLOW_UP_BATCH = 256


@dataclass
class MoveOutcome:
    moves: int = 0
    renamed: int = 0  # images whose stored path changed
    follow_up: int = 0  # paths queued to be indexed at both ends of the moves

    def counts(self) -> dict[str, int]:
        return {"moves": self.moves, "renamed": self.renamed, "follow_up": self.follow_up}


class Mover:
    """Applies move jobs with the indexer's store, roots, filter and queue."""

    def __init__(self, indexer: Indexer, follow_up_batch: int = FOLLOW_UP_BATCH) -> None:
        self.indexer = indexer
        self.follow_up_batch = follow_up_batch

    def move(self, moves: Sequence[Sequence[str]]) -> MoveOutcome:
        """Apply ``(old, new)`` moves in order, then queue both ends of each to be indexed.

        A side outside this worker's roots is never renamed from or to: moved in from
        elsewhere is a new file, moved out is a deleted one (the follow-up sees to both).
        """
        outcome = MoveOutcome(moves=len(moves))
        store = self.indexer.store
        sides: list[str] = []
        for old, new in ((os.path.abspath(old), os.path.abspath(new)) for old, new in moves):
            inside_old, inside_new = self._inside(old), self._inside(new)
            if inside_old and inside_new:
                outcome.renamed += store.move_folder(old, new)
            sides += [side for side, inside in ((new, inside_new), (old, inside_old)) if inside]
        follow_up = self._paths_at(sides)
        for start in range(0, len(follow_up), self.follow_up_batch):
            self.indexer.requeue(follow_up[start : start + self.follow_up_batch])
        outcome.follow_up = len(follow_up)
        return outcome

    def _inside(self, path: str) -> bool:
        """Below this worker's roots with a name a store can hold (see Indexer._partition_names)."""
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return root_of(path, self.indexer.roots) is not None

    def _paths_at(self, sides: Sequence[str]) -> list[str]:
        """Everything at or below each side: stored images, image files on disk, failure records."""
        found: dict[str, None] = {}
        for side in sides:
            found.update(dict.fromkeys(state.path for state in self.indexer.store.file_states(under=side)))
            if os.path.isdir(side):
                walked = walk_images(side, self.indexer.path_filter, self.indexer.roots)
                found.update(dict.fromkeys(path for path, _ in walked))
            elif self.indexer.path_filter.has_image_extension(os.path.basename(side)):
                found[side] = None  # a file, or a file that is gone (a folder that is gone was listed above)
        if sides:  # a record below a side is cleared (or kept) by indexing its path again
            found.update(dict.fromkeys(f.path for f in self.indexer.failures.failed_files()
                                       if root_of(f.path, list(sides)) is not None))
        return list(found)
