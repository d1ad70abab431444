"""What one web server process holds: the store (opened on first use), the model (loaded on
the first search by upload), the thumbnail cache, the decode budget; and the queries the pages
and the API share.

Searches decode outside the model's lock, within the decode budget (photos/budget.py): parallel
uploads of photos near the size limit take their turns, while small ones pass beside them; only
the forward pass is one at a time. Renders of thumbnails and views share the same budget.
"""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from imgwatch.config import Config
from imgwatch.errors import ContentChanged, StoreMissing
from imgwatch.memory import give_large_frees_back_at_once
from imgwatch.photos.budget import DecodeBudget
from imgwatch.ranking import rank_others
from imgwatch.store import GraphStore, ImageNotFound, Match, StoredImage, open_store
from imgwatch.thumbnails import Thumbnail, ThumbnailCache

if TYPE_CHECKING:
    from imgwatch.embedding import EmbeddingEngine

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
        self._model: EmbeddingEngine | None = None
        self._model_lock = threading.Lock()  # one load at a time
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

    def model(self, recorded_model: str) -> EmbeddingEngine:
        """The workers' model, loaded once per process on first use (call with _model_lock held):
        the store's weights unless others are configured (embedding.identity.query_weights, also
        checked at start); ModelMismatchError when they do not give the store's ``recorded_model``,
        WeightsUnavailable when the store's weights file moved or changed."""
        from imgwatch.embedding.identity import check_query_model, query_weights

        if self._model is None:
            from imgwatch.embedding import load_model

            chosen = query_weights(self.config, recorded_model, self.store().recorded_weights_file(), RESTART_WEB)
            embedding = self.config.embedding
            self._model = load_model(chosen.weights, embedding.device, chosen.seed, embedding.engine,
                                     self.config.data_dir.engine_cache)
        check_query_model(recorded_model, self._model.identity, RESTART_WEB)  # the store's model may have changed
        return self._model

    def close(self) -> None:
        with self._store_lock:
            if self._store is not None:
                self._store.close()
                self._store = None
        self._forward.shutdown(wait=True)
        with self._model_lock:
            self._model = None

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
        return self.with_facts(self.store().neighbours(path))

    def search_indexed(self, path: str, top: int) -> Searched:
        """Rank everything against an indexed photo, embedded again from its file."""
        from imgwatch.embedding.decode import read_file

        image = self.indexed(path)
        facts, data = read_file(path)  # regular files only, up to MAX_FILE_BYTES
        if facts.sha256 != image.sha256:  # as every route that reads an indexed photo
            raise ContentChanged(f"{path} changed since it was indexed; search with it again once it is re-indexed")
        return self._search_data(data, path, top, indexed_as=path)

    def search_upload(self, data: bytes, filename: str, top: int) -> Searched:
        """Rank everything against uploaded bytes, decoded with the workers' limits (the file name
        tells a RAW by its extension, as a worker's path does, and names the upload in errors)."""
        return self._search_data(data, filename or "the upload", top)

    def _search_data(self, data: bytes, name: str, top: int, indexed_as: str | None = None) -> Searched:
        from imgwatch.embedding.decode import decode_for_model

        store = self.store()
        recorded = store.recorded_model()
        if recorded is None:
            raise StoreMissing("nothing is indexed yet: there is nothing to compare with")
        with self._model_lock:
            model = self.model(recorded[0])  # refused weights fail before anything is decoded
        with self.decode_budget.admit(data, name):
            tensor, _width, _height = decode_for_model(data, name)
        vector = self._forward.submit(model.embed, tensor.unsqueeze(0)).result()[0]
        ranking = rank_others(store, vector, top, hashlib.sha256(data).hexdigest(), indexed_as)
        return Searched(self.with_facts(ranking.matches), ranking.itself)

    def thumbnail(self, image: StoredImage, size: int) -> Thumbnail:
        """``image``'s thumbnail, made only from its indexed content (ContentChanged otherwise)."""
        return self.thumbnails.get(image.path, size, image.sha256)
