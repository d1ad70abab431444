"""What one web server process holds: the store (opened on first use), the model (loaded on
the first search by upload), the thumbnail cache, the decode budget; and the queries the pages
and the API share, which pass them to imgwatch.use_cases as the CLI passes its own.

Searches decode outside the model's lock, within the decode budget (photos/budget.py): parallel
uploads of photos near the size limit take their turns, while small ones pass beside them; only
the forward pass is one at a time. Renders of thumbnails and views share the same budget.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from imgwatch.config import Config
from imgwatch.errors import ContentChanged
from imgwatch.memory import give_large_frees_back_at_once
from imgwatch.photos.budget import DecodeBudget
from imgwatch.store import GraphStore, ImageNotFound, Match, StoredImage, open_store
from imgwatch.thumbnails import Thumbnail, ThumbnailCache
from imgwatch.use_cases import QueryModel, search_with_photo, similar

LARGE_SIZE = 1600  # the photo page's view of one image
RESTART_WEB = "start `imgwatch web` again"  # what to do with other weights (in model errors)


@dataclass(frozen=True)
class Ranked:
    """A match with its stored facts (None if it vanished from the store meanwhile)."""

    match: Match
    image: StoredImage | None


@dataclass(frozen=True)
class Searched:
    """A search's results, and the indexed paths left out as the query photo itself (see ranking)."""

    results: list[Ranked]
    left_out: list[str]


class WebState:
    def __init__(self, config: Config) -> None:
        self.config = config
        give_large_frees_back_at_once()  # a long-running process: decoded pictures must not stay in the arenas
        self.decode_budget = DecodeBudget()  # uploads, searches by path and renders share it
        self.thumbnails = ThumbnailCache.for_data_dir(config.data_dir, self.decode_budget)
        self._store: GraphStore | None = None
        self._store_lock = threading.Lock()
        self.model = QueryModel(config, RESTART_WEB)  # loaded on the first search by photo
        # Every forward pass on this one thread: the engine keeps memory in each thread that ran it
        # (5-20 MB; bench/RESULTS.md, "Upload memory"), which Starlette's 40 threads would each keep.
        self._forward = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imgwatch-forward")

    # -- resources ------------------------------------------------------------------

    def store(self) -> GraphStore:
        """The store, opened on first use; StoreMissing until something is indexed."""
        with self._store_lock:
            if self._store is None:
                self._store = open_store(self.config, create=False)
            return self._store

    def close(self) -> None:
        with self._store_lock:
            if self._store is not None:
                self._store.close()
                self._store = None
        self._forward.shutdown(wait=True)
        self.model.close()

    # -- queries --------------------------------------------------------------------

    def indexed(self, path: str) -> StoredImage:
        """The stored facts of ``path``, looked up exactly as given; ImageNotFound otherwise."""
        if not path or "\0" in path:
            raise ImageNotFound(path)
        image = self.store().get_many([path]).get(path)
        if image is None:
            raise ImageNotFound(path)
        return image

    def with_facts(self, matches: list[Match]) -> list[Ranked]:
        facts = self.store().get_many([m.path for m in matches]) if matches else {}
        return [Ranked(m, facts.get(m.path)) for m in matches]

    def similar(self, path: str) -> list[Ranked]:
        self.indexed(path)
        return self.with_facts(similar(self.store(), path))

    def search_indexed(self, path: str, top: int) -> Searched:
        """Rank everything against an indexed photo, embedded again from its file."""
        from imgwatch.embedding.decode import read_file

        image = self.indexed(path)
        facts, data = read_file(path)  # regular files only, up to MAX_FILE_BYTES
        if facts.sha256 != image.sha256:  # as every route that reads an indexed photo
            raise ContentChanged(f"{path} changed since it was indexed; search with it again once it is re-indexed")
        return self._search(data, path, top, indexed_as=path)

    def search_upload(self, data: bytes, filename: str, top: int) -> Searched:
        """Rank everything against uploaded bytes, decoded with the workers' limits (the file name
        tells a RAW by its extension, as a worker's path does, and names the upload in errors)."""
        return self._search(data, filename or "the upload", top)

    def _search(self, data: bytes, name: str, top: int, indexed_as: str | None = None) -> Searched:
        ranking = search_with_photo(self.store(), self.model, data, name, top, indexed_as=indexed_as,
                                    budget=self.decode_budget, forward=self._forward)
        return Searched(self.with_facts(ranking.matches), ranking.itself)

    def thumbnail(self, image: StoredImage, size: int) -> Thumbnail:
        """``image``'s thumbnail, made only from its indexed content (ContentChanged otherwise)."""
        return self.thumbnails.get(image.path, size, image.sha256)
