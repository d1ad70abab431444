"""A search's ranking, with the query photo itself left out.

Someone who searches with one of their own photos wants the *other* photos like it: the photo
itself would head every list at 1.0000. It is its indexed path (a search by path), and any indexed
file with exactly its content (the photo uploaded to the page, a copy of it outside the watched
folders, or one in a backup folder). Those are left out of the ranking and named beside it.
One rule for `imgwatch search` (text, JSON and contact sheet), the web page and its API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from imgwatch.store import GraphStore, Match


@dataclass(frozen=True)
class Ranking:
    matches: list[Match]  # best first, at most ``top``
    itself: list[str]  # indexed paths that are the query photo itself, left out of ``matches``


def rank_others(store: GraphStore, vector: np.ndarray, top: int, sha256: str, path: str | None = None) -> Ranking:
    """The ``top`` indexed images most similar to ``vector``, except the query itself: ``path``
    (where the query was read from, if it is indexed) and the images whose content is ``sha256``."""
    own = [path] if path is not None and store.get(path) is not None else []
    wanted = top
    while True:
        found = store.nearest(vector, wanted, exclude=own)
        stored = store.get_many([m.path for m in found])
        copies = {m.path for m in found if m.path in stored and stored[m.path].sha256 == sha256}
        others = [m for m in found if m.path not in copies]
        if len(others) >= top or len(found) < wanted:  # enough, or nothing more to find
            return Ranking(others[:top], own + [m.path for m in found if m.path in copies])
        wanted = top + len(copies)  # copies score alike: they came first; ask past them


def left_out_note(itself: list[str]) -> str:
    """What a text answer says about the paths rank_others left out (not escaped: see printable)."""
    return f"(the photo itself is left out: {', '.join(itself)})"
