"""What one web server process holds: the store (opened on first use), the model (loaded on
the first search by upload), the thumbnail cache; and the queries the pages and the API share.
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from imgwatch.config import Config
from imgwatch.errors import DecodeError, StoreMissing
from imgwatch.ranking import rank_others
from imgwatch.store import GraphStore, ImageNotFound, Match, StoredImage, open_store
from imgwatch.thumbnails import Thumbnail, ThumbnailCache

if TYPE_CHECKING:
    from imgwatch.embedding import Embedder

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
        self.thumbnails = ThumbnailCache.for_data_dir(config.data_dir)
        self._store: GraphStore | None = None
        self._store_lock = threading.Lock()
        self._embedder: Embedder | None = None
        self._model_lock = threading.Lock()  # one load, and one upload embedded at a time
        # Decoding many photos at once only makes each slower: at most one per core.
        self._render_slots = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))

    # -- resources ------------------------------------------------------------------

    def store(self) -> GraphStore:
        """The store, opened on first use; StoreMissing until something is indexed."""
        with self._store_lock:
            if self._store is None:
                self._store = open_store(self.config, create=False)
            return self._store

    def embedder(self, recorded_model: str) -> Embedder:
        """The workers' model, loaded once per process on first use (call with _model_lock held):
        the store's weights unless others are configured (embedding.identity.query_weights, also
        checked at start); ModelMismatchError when they do not give the store's ``recorded_model``,
        WeightsUnavailable when the store's weights file moved or changed."""
        from imgwatch.embedding.identity import check_query_model, query_weights

        if self._embedder is None:
            from imgwatch.embedding import Embedder, load_model

            chosen = query_weights(self.config, recorded_model, self.store().recorded_weights_file(), RESTART_WEB)
            embedding = self.config.embedding
            model = load_model(chosen.weights, embedding.device, chosen.seed, embedding.engine,
                               self.config.data_dir.engine_cache)
            self._embedder = Embedder(model, batch_size=1, decode_threads=1)
        check_query_model(recorded_model, self._embedder.identity, RESTART_WEB)  # the store's model may have changed
        return self._embedder

    def close(self) -> None:
        with self._store_lock:
            if self._store is not None:
                self._store.close()
                self._store = None
        with self._model_lock:
            if self._embedder is not None:
                self._embedder.close()
                self._embedder = None

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
        self.indexed(path)
        return self._search_file(path, path, top, indexed_as=path)

    def search_upload(self, data: bytes, filename: str, top: int) -> Searched:
        """Rank everything against uploaded bytes, decoded with the workers' limits."""
        suffix = os.path.splitext(filename)[1][:10] if filename else ""
        with tempfile.TemporaryDirectory(prefix="imgwatch-upload-") as folder:  # 0700 under the umask
            upload = os.path.join(folder, "upload" + suffix)
            descriptor = os.open(upload, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
            return self._search_file(upload, filename or "the upload", top)

    def _search_file(self, file: str, name: str, top: int, indexed_as: str | None = None) -> Searched:
        store = self.store()
        recorded = store.recorded_model()
        if recorded is None:
            raise StoreMissing("nothing is indexed yet: there is nothing to compare with")
        with self._model_lock:
            embedder = self.embedder(recorded[0])
            try:
                query = embedder.embed_file(file)
            except DecodeError as exc:  # name the upload, not the temporary file
                raise DecodeError(name, exc.reason, exc.advice) from None
        ranking = rank_others(store, query.vector, top, query.facts.sha256, indexed_as)
        return Searched(self.with_facts(ranking.matches), ranking.itself)

    def thumbnail(self, image: StoredImage, size: int) -> Thumbnail:
        """``image``'s thumbnail, made only from its indexed content (ContentChanged otherwise)."""
        with self._render_slots:
            return self.thumbnails.get(image.path, size, image.sha256)
