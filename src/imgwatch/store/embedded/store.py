"""The embedded graph store: one SQLite file under the data dir, no server.

SQLite (``sqlite.py``) is the source of truth; every process searches the same
memory-mapped copy of the embeddings beside it (``shared_vectors.py``), brought up to
date after each write and before each query. Once the library is large, searches go
through a saved HNSW index plus the writes since it (``ann_search.py``), still with exact
scores, and links through a batched scan of an int8 copy in the linking process
(``compact_copy.py``), exact by construction. Links follow the rule in
:mod:`imgwatch.store.linking`.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from imgwatch.errors import ImageNotFound, ModelMismatchError, ReindexConflict, ReindexIncomplete, StoreError
from imgwatch.log import get_logger
from imgwatch.store.base import (
    Decision,
    ExportedImage,
    FileState,
    GraphStore,
    ImageRecord,
    Link,
    Match,
    PendingSpace,
    StoredEmbedding,
    StoredImage,
    StoreStats,
    already_active_message,
    checked_decision,
    checked_embedding,
    checked_threshold,
    each_pair_once,
    foreign_record_message,
    incomplete_message,
    model_mismatch_message,
    pending_conflict_message,
    unit_query,
    weights_file_to_record,
)
from imgwatch.store.batching import PAGE_SIZE, keyset_pages
from imgwatch.store.embedded import spaces
from imgwatch.store.embedded.ann_search import ANN_MIN_IMAGES, AnnSearch
from imgwatch.store.embedded.compact_copy import COMPACT_MIN_IMAGES, CompactCopy
from imgwatch.store.embedded.shared_vectors import SharedVectors, record_store_identity
from imgwatch.store.embedded.sqlite import Database, Transaction
from imgwatch.store.embedded.vectors import SlotVectors, neighbour_candidates
from imgwatch.store.linking import FormerLink, choose, plan_links

log = get_logger("imgwatch.store")


class EmbeddedGraphStore(GraphStore):
    """:class:`GraphStore` on a local SQLite file plus exact-scored search over shared, memory-mapped vectors.

    ``ann_min_images``: the library size from which searches use the HNSW index;
    ``compact_min_images``: from which links scan the int8 copy, held on ``link_device``
    (tests lower both). One store object may be used by one thread at a time (calls from several threads
    are serialised); use processes for parallelism.
    """

    backend = "embedded"

    def __init__(
        self, db_path: Path | str, *, busy_timeout_seconds: float = 60.0, ann_min_images: int = ANN_MIN_IMAGES,
        compact_min_images: int = COMPACT_MIN_IMAGES, link_device: str = "cpu",
    ) -> None:
        self._db = Database(db_path, busy_timeout_seconds=busy_timeout_seconds)
        self.db_path = self._db.path
        self._vectors = SharedVectors(self.db_path)
        self._ann = AnnSearch(self.db_path, min_images=ann_min_images)
        self._compact = CompactCopy(min_images=compact_min_images, device=link_device)

    @property
    def vectors(self) -> SharedVectors:
        """The embeddings' memory-mapped files, shared by every process on this machine."""
        return self._vectors

    @property
    def ann(self) -> AnnSearch:
        """The HNSW index beside the store, used for searches once the library is large."""
        return self._ann

    @property
    def compact(self) -> CompactCopy:
        """This process's int8 copy of the vectors, scanned by links once the library is large."""
        return self._compact

    # -- GraphStore -----------------------------------------------------------------

    def ensure_model(self, model: str, dim: int, weights_file: tuple[str, str] | None = None) -> None:
        if not model or dim <= 0:
            raise StoreError(f"invalid embedding model {model!r} with dim {dim}")
        with self._db.write() as tx:
            record_store_identity(tx)  # what the vector files are checked against
            recorded, recorded_file = tx.recorded_model(), tx.recorded_weights_file()
            weights_file = weights_file_to_record(recorded, recorded_file, model, dim, weights_file)
            if recorded == (model, dim) and weights_file == recorded_file:
                return
            if recorded is not None and recorded != (model, dim):
                count = tx.execute("SELECT COUNT(*) FROM images").fetchone()[0]
                if count:
                    raise ModelMismatchError(model_mismatch_message(
                        *recorded, count, model, dim,
                        f"use a new --data-dir, or stop imgwatch and delete {self.db_path} (and its -wal/-shm files)",
                    ))
            tx.record_model(model, dim, weights_file)

    def recorded_model(self) -> tuple[str, int] | None:
        with self._db.read() as tx:
            return tx.recorded_model()

    def recorded_weights_file(self) -> tuple[str, str] | None:
        with self._db.read() as tx:
            return tx.recorded_weights_file()

    def upsert(self, records: Sequence[ImageRecord]) -> None:
        """Insert or replace images by path, all in one transaction.

        A replaced image keeps its id. If its embedding changed, its links are dropped
        here (their scores would be stale); the caller re-creates them with ``link``.
        """
        self._write_images([(record, None) for record in records])

    def update_file_states(self, states: Sequence[FileState]) -> None:
        if not states:
            return
        with self._db.write() as tx:
            # Embeddings are unchanged, so no revision bump: the vector files stay valid.
            tx.executemany(
                "UPDATE images SET size = ?, mtime_ns = ?, ctime_ns = ?, inode = ? WHERE path = ?",
                [(*state.signature, state.path) for state in states],
            )

    def remove(self, paths: Iterable[str]) -> int:
        unique = list(dict.fromkeys(paths))
        if not unique:
            return 0
        with self._db.write() as tx:
            ids = list(_ids_by_path(tx, unique).values())
            if not ids:
                return 0
            rev = tx.next_revision()
            tx.executemany("INSERT OR REPLACE INTO tombstones (id, rev) VALUES (?, ?)", [(i, rev) for i in ids])
            # Links go with their images (ON DELETE CASCADE).
            tx.executemany("DELETE FROM images WHERE id = ?", [(i,) for i in ids])
        self._update_vectors()
        return len(ids)

    def get_many(self, paths: Iterable[str]) -> dict[str, StoredImage]:
        with self._db.read() as tx:
            rows = tx.select_in(
                "SELECT path, sha256, size, mtime_ns, width, height, model, linked, indexed_at, ctime_ns, inode "
                "FROM images WHERE path IN ({marks})",
                list(dict.fromkeys(paths)),
            )
            return {row[0]: StoredImage(*row[:7], linked=bool(row[7]), indexed_at=row[8], ctime_ns=row[9],
                                        inode=row[10]) for row in rows}

    def nearest(self, vector: np.ndarray, k: int, *, exclude: Iterable[str] = ()) -> list[Match]:
        """Top-``k`` by exact cosine similarity (the query is normalised first); candidates from
        the HNSW index plus recent writes once the library is large."""
        excluded_paths = list(dict.fromkeys(exclude))
        with self._db.read() as tx:
            recorded = tx.recorded_model()
            if recorded is None or k <= 0:
                return []
            query = unit_query(vector, recorded[1])
            excluded_ids = list(_ids_by_path(tx, excluded_paths).values())
        # A new transaction: its snapshot starts once the vector files are locked (see current()).
        with self._db.read() as tx, self._vectors.current(tx) as view:
            if view is None or view.dim != len(query):
                return []  # the model was switched meanwhile
            view = self._ann.attach(tx, view)
            [(ids, scores)] = view.candidates(query, k, [excluded_ids])
            # The files may be newer than this snapshot: ids it cannot resolve are dropped.
            path_of = dict(tx.select_in("SELECT id, path FROM images WHERE id IN ({marks})", ids.tolist()))
        return [Match(path_of[i], float(s)) for i, s in zip(ids.tolist(), scores.tolist(), strict=True) if i in path_of]

    def link(self, images: Sequence[ImageRecord], threshold: float, top_k: int) -> int:
        """Replace the links of ``images`` by the linking rule (see :mod:`imgwatch.store.linking`).

        Scores use the stored embeddings. Images no longer stored (a concurrent
        ``remove`` won the race) are skipped rather than failing the batch.
        """
        if not images:
            return 0
        checked_threshold(threshold)
        # Catch up outside the write lock (a rebuild can take seconds), so that under it
        # only the last few changes remain to be applied.
        self._update_vectors()
        # Under the write lock no other process commits: the files match this snapshot exactly.
        with self._db.write() as tx, self._vectors.current(tx) as view:
            if view is None:
                return 0
            self._ann.keep_forward(tx, view)  # for nearest(): links scan, they never search the index
            index = self._compact.attach(tx, view)
            paths = list(dict.fromkeys(image.path for image in images))
            ids = [i for i in _ids_by_path(tx, paths).values() if i in index]
            former = _former_links(tx, ids, index)
            _delete_links_of(tx, ids)
            plan = plan_links(neighbour_candidates(index, ids, top_k, threshold), former, threshold, top_k)
            if plan.undecided:  # rare: only a fresh search tells if those neighbours still pick them
                fresh = neighbour_candidates(index, list(plan.undecided), top_k, threshold)
                plan.settle({key: choose(found, threshold, top_k) for key, found in fresh.items()})
            # Every image is now linked; without a new bar (top_k <= 0) the recorded one stays.
            tx.executemany("UPDATE images SET linked = 1, pick_bar = coalesce(?, pick_bar) WHERE id = ?",
                           [(plan.pick_bars.get(i), i) for i in ids])
            tx.executemany("INSERT OR REPLACE INTO links (a, b, score) VALUES (?, ?, ?)",
                           [(a, b, score) for (a, b), score in plan.links.items()])
            return len(plan.links)

    def neighbours(self, path: str) -> list[Match]:
        with self._db.read() as tx:
            row = tx.execute("SELECT id FROM images WHERE path = ?", (path,)).fetchone()
            if row is None:
                raise ImageNotFound(path)
            rows = tx.execute(
                """
                SELECT images.path, links.score FROM links JOIN images ON images.id = links.b
                WHERE links.a = :id
                UNION ALL
                SELECT images.path, links.score FROM links JOIN images ON images.id = links.a
                WHERE links.b = :id
                ORDER BY 2 DESC, 1
                """,
                {"id": row[0]},
            ).fetchall()
        return [Match(neighbour, score) for neighbour, score in rows]

    def links_at_least(self, threshold: float) -> Iterator[Link]:
        """Pages in (score, a, b) order, each a range seek on the links_by_score index."""
        bar = checked_threshold(threshold)

        def pages() -> Iterator[Link]:
            key: tuple[float, int, int] = (bar, -1, -1)  # ids are >= 1: the first page starts at the bar
            while True:
                with self._db.read() as tx:
                    rows = tx.execute(
                        "SELECT links.score, links.a, links.b, ia.path, ib.path FROM links "
                        "JOIN images AS ia ON ia.id = links.a JOIN images AS ib ON ib.id = links.b "
                        "WHERE links.score >= ? AND (links.score, links.a, links.b) > (?, ?, ?) "
                        "ORDER BY links.score, links.a, links.b LIMIT ?",
                        (bar, *key, PAGE_SIZE),
                    ).fetchall()
                yield from (Link.between(a, b, score) for score, _, _, a, b in rows)
                if len(rows) < PAGE_SIZE:
                    return
                key = rows[-1][:3]

        yield from each_pair_once(pages())

    def stats(self) -> StoreStats:
        with self._db.read() as tx:
            images = tx.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            links = tx.execute("SELECT COUNT(*) FROM links").fetchone()[0]
            recorded = tx.recorded_model()
        return StoreStats.counted(self.backend, str(self.db_path), images, links, recorded)

    def describe(self) -> dict[str, object]:
        stats = self.stats()
        with self._db.read() as tx:
            journal = tx.execute("PRAGMA journal_mode").fetchone()[0]
            schema = tx.schema_version()
        return {
            "backend": self.backend,
            "file": str(self.db_path),
            "sqlite": sqlite3.sqlite_version,
            "journal_mode": journal,
            "schema_version": schema,
            "size_mib": round(self._db.files_size() / 2**20, 1),
            "vector_index": f"exact scores, memory-mapped from {self._vectors.vectors_path} (shared by every "
                            f"process); HNSW candidates from {self._ann.directory} from "
                            f"{self._ann.min_images} images",
            "images": stats.images,
            "links": stats.links,
            "model": stats.model,
            "dim": stats.dim,
        }

    def file_states(self, under: str | None = None) -> Iterator[FileState]:
        """Stream states in path order, one page per short read transaction."""
        condition, parameters = _under_condition(under)

        def read_page(after: str, limit: int) -> list[FileState]:
            with self._db.read() as tx:
                rows = tx.execute(
                    f"SELECT path, size, mtime_ns, ctime_ns, inode FROM images WHERE path > ? {condition} "
                    "ORDER BY path LIMIT ?",
                    (after, *parameters, limit),
                )
                return [FileState(*row) for row in rows]

        yield from keyset_pages(read_page, key=lambda state: state.path)

    def count_below(self, folder: str) -> int:
        condition, parameters = _under_condition(folder)
        with self._db.read() as tx:
            return int(tx.execute(f"SELECT COUNT(*) FROM images WHERE 1 = 1 {condition}", parameters).fetchone()[0])

    # -- content reuse and moves ---------------------------------------------------------

    def embeddings_by_hash(self, hashes: Iterable[str], model: str) -> dict[str, StoredEmbedding]:
        """One stored embedding per known content hash, found through the images_by_sha256 index."""
        unique = list(dict.fromkeys(hashes))
        found: dict[str, StoredEmbedding] = {}
        if not unique:
            return found
        with self._db.read() as tx:
            rows = tx.select_in(
                "SELECT sha256, model, embedding, width, height FROM images WHERE sha256 IN ({marks})", unique)
            for sha256, stored_model, blob, width, height in rows:
                if stored_model == model and sha256 not in found:
                    found[sha256] = StoredEmbedding(np.frombuffer(blob, dtype="<f4").copy(), width, height)
        return found

    def same_content_groups(self) -> Iterator[list[str]]:
        """One read: the hashes held twice or more, grouped on the images_by_sha256 index."""
        with self._db.read() as tx:
            rows = tx.execute(
                "SELECT sha256, path FROM images WHERE sha256 IN "
                "(SELECT sha256 FROM images GROUP BY sha256 HAVING COUNT(*) > 1) ORDER BY sha256, path").fetchall()
        by_hash: dict[str, list[str]] = {}
        for sha256, path in rows:
            by_hash.setdefault(sha256, []).append(path)
        yield from by_hash.values()

    # -- a person's decisions about duplicates ---------------------------------------------

    def record_decision(self, kind: str, hashes: Sequence[str], decided_at: float | None = None) -> Decision:
        contents, keep = checked_decision(kind, hashes)
        decided_at = time.time() if decided_at is None else decided_at
        with self._db.write() as tx:
            self._forget_decisions(tx, contents)
            decision_id = tx.execute("INSERT INTO duplicate_decisions (kind, keep, decided_at) VALUES (?, ?, ?)",
                                     (kind, keep, decided_at)).lastrowid
            tx.executemany("INSERT INTO decision_contents (sha256, decision_id) VALUES (?, ?)",
                           [(sha256, decision_id) for sha256 in sorted(contents)])
        return Decision(kind, contents, keep, decided_at)

    def decisions_about(self, hashes: Iterable[str]) -> list[Decision]:
        with self._db.read() as tx:
            ids = sorted({row[0] for row in tx.select_in(
                "SELECT decision_id FROM decision_contents WHERE sha256 IN ({marks})", sorted(set(hashes)))})
            rows = list(tx.select_in("SELECT d.id, d.kind, d.keep, d.decided_at, c.sha256 FROM duplicate_decisions d "
                                     "JOIN decision_contents c ON c.decision_id = d.id WHERE d.id IN ({marks})", ids))
        found: dict[int, tuple[str, str | None, float, set[str]]] = {}
        for decision_id, kind, keep, decided_at, sha256 in rows:
            found.setdefault(decision_id, (kind, keep, decided_at, set()))[3].add(sha256)
        oldest_first = sorted(found.items(), key=lambda item: (item[1][2], item[0]))
        return [Decision(kind, frozenset(contents), keep, decided_at)
                for _, (kind, keep, decided_at, contents) in oldest_first]

    def forget_decisions(self, hashes: Iterable[str]) -> int:
        with self._db.write() as tx:
            return self._forget_decisions(tx, set(hashes))

    @staticmethod
    def _forget_decisions(tx: Transaction, hashes: Iterable[str]) -> int:
        ids = sorted({row[0] for row in tx.select_in(
            "SELECT decision_id FROM decision_contents WHERE sha256 IN ({marks})", sorted(hashes))})
        for _ in tx.select_in("DELETE FROM duplicate_decisions WHERE id IN ({marks})", ids):
            pass  # runs each chunk; their contents cascade
        return len(ids)

    def rename_paths(self, moves: Sequence[tuple[str, str]]) -> int:
        """One transaction; each pair in order. A renamed image keeps its id, so its embedding,
        its links and the shared vector files (keyed by id) stay valid: no revision bump,
        except for an image replaced at a new path, which goes as remove() removes it."""
        renamed = replaced = 0
        if not moves:
            return renamed
        with self._db.write() as tx:
            for old, new in moves:
                moving = tx.execute("SELECT id FROM images WHERE path = ?", (old,)).fetchone()
                if moving is None or old == new:
                    continue
                taken = tx.execute("SELECT id FROM images WHERE path = ?", (new,)).fetchone()
                if taken is not None:
                    # A tombstone tells the vector files; its links go with it (ON DELETE CASCADE).
                    rev = tx.next_revision()
                    tx.execute("INSERT OR REPLACE INTO tombstones (id, rev) VALUES (?, ?)", (taken[0], rev))
                    tx.execute("DELETE FROM images WHERE id = ?", (taken[0],))
                    replaced += 1
                tx.execute("UPDATE images SET path = ? WHERE id = ?", (new, moving[0]))
                renamed += 1
        if replaced:
            self._update_vectors()
        return renamed

    # -- the pending space (a re-index to a new model); see spaces.py --------------------------

    def begin_space(self, model: str, dim: int, weights_file: tuple[str, str] | None = None) -> PendingSpace:
        if not model or dim <= 0:
            raise StoreError(f"invalid embedding model {model!r} with dim {dim}")
        with self._db.write() as tx:
            pending = tx.pending_model()
            if pending is not None and pending[:2] != (model, dim):
                raise ReindexConflict(pending_conflict_message(pending[0], model))
            recorded = tx.recorded_model()
            if pending is None and recorded is not None and recorded[0] == model:
                raise ReindexConflict(already_active_message(model))
            if pending is None:
                tx.record_pending(model, dim, weights_file)
            space = spaces.pending_space(tx)
        assert space is not None
        return space

    def pending_space(self) -> PendingSpace | None:
        with self._db.read() as tx:
            return spaces.pending_space(tx)

    def put_pending(self, items: Sequence[tuple[str, str, np.ndarray]]) -> int:
        if not items:
            return 0
        with self._db.write() as tx:
            pending = tx.pending_model()
            if pending is None:
                return 0  # switched or aborted meanwhile: the job's vectors have no space to go to
            dim = pending[1]
            checked = [(path, sha256, checked_embedding(vector, dim, path).tobytes()) for path, sha256, vector in items]
            stored = {path: (image_id, sha256) for path, image_id, sha256 in tx.select_in(
                "SELECT path, id, sha256 FROM images WHERE path IN ({marks})",
                list(dict.fromkeys(path for path, _, _ in checked)))}
            rev = tx.next_pending_revision()
            # Only for the content the image has now: a vector of a file changed since is stale.
            rows = [(stored[path][0], sha256, blob, rev) for path, sha256, blob in checked
                    if stored.get(path, (None, None))[1] == sha256]
            tx.executemany("INSERT OR REPLACE INTO pending_embeddings (image_id, sha256, embedding, rev) "
                           "VALUES (?, ?, ?, ?)", rows)
            return len(rows)

    def pending_by_hash(self, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        with self._db.read() as tx:
            if tx.pending_model() is None:
                return found
            rows = tx.select_in("SELECT sha256, embedding FROM pending_embeddings WHERE sha256 IN ({marks})",
                                list(dict.fromkeys(hashes)))
            for sha256, blob in rows:
                found.setdefault(sha256, np.frombuffer(blob, dtype="<f4").copy())
        return found

    def paths_without_pending(self, after: str, limit: int) -> list[str]:
        with self._db.read() as tx:
            if tx.pending_model() is None:
                return []
            rows = tx.execute(
                "SELECT images.path FROM images LEFT JOIN pending_embeddings "
                "ON pending_embeddings.image_id = images.id AND pending_embeddings.sha256 = images.sha256 "
                "WHERE images.path > ? AND pending_embeddings.image_id IS NULL ORDER BY images.path LIMIT ?",
                (after, limit),
            )
            return [row[0] for row in rows]

    def switch_space(self, threshold: float, top_k: int) -> int:
        """Links computed from a snapshot without the write lock, caught up and swapped in under it.
        0 also while another process is switching (it holds the switch lock)."""
        checked_threshold(threshold)
        with spaces.switching(self.db_path) as mine:
            if not mine:
                return 0
            with self._db.read() as tx:
                space = spaces.pending_space(tx)
                if space is None:
                    return 0
                if not space.complete:
                    raise ReindexIncomplete(incomplete_message(space))
                vectors = spaces.read_vectors(tx, self.db_path.parent, space.dim)
            try:
                space_links = spaces.compute_links(vectors, threshold, top_k, self._compact.min_images,
                                                   self._compact.device)
                with self._db.write() as tx:
                    now = spaces.pending_space(tx)
                    if now is None or (now.model, now.dim) != (space.model, space.dim):
                        return 0  # switched (or aborted) meanwhile
                    if not now.complete:
                        raise ReindexIncomplete(incomplete_message(now))
                    spaces.catch_up(tx, space_links, threshold, top_k)
                    written = spaces.swap_in(tx, now, space_links)
            finally:
                vectors.close()
        log.info("space_switched", file=str(self.db_path), model=space.model, dim=space.dim, links=written)
        self._update_vectors()  # the rebuild for the new vectors is paid here, not by the next search
        return written

    def abort_space(self) -> bool:
        with self._db.write() as tx:
            if tx.pending_model() is None:
                return False
            spaces.drop(tx)
            return True

    # -- copying between stores -----------------------------------------------------------

    def export_images(self, after: str, limit: int) -> list[ExportedImage]:
        with self._db.read() as tx:
            rows = tx.execute(
                "SELECT path, sha256, size, mtime_ns, width, height, model, embedding, linked, pick_bar, indexed_at, "
                "ctime_ns, inode FROM images WHERE path > ? ORDER BY path LIMIT ?",
                (after, limit),
            ).fetchall()
        return [
            ExportedImage(
                ImageRecord(path, sha256, size, mtime_ns, width, height, model,
                            np.frombuffer(blob, dtype="<f4").copy(), ctime_ns, inode),
                linked=bool(linked),
                pick_bar=pick_bar,
                indexed_at=indexed_at,
            )
            for path, sha256, size, mtime_ns, width, height, model, blob, linked, pick_bar, indexed_at, ctime_ns, inode
            in rows
        ]

    def export_links(self, paths: Sequence[str]) -> list[Link]:
        found: set[Link] = set()
        with self._db.read() as tx:
            ids = list(_ids_by_path(tx, list(dict.fromkeys(paths))).values())
            for column in ("a", "b"):
                rows = tx.select_in(
                    "SELECT ia.path, ib.path, links.score FROM links "
                    "JOIN images AS ia ON ia.id = links.a JOIN images AS ib ON ib.id = links.b "
                    f"WHERE links.{column} IN ({{marks}})",
                    ids,
                )
                found.update(Link.between(a, b, score) for a, b, score in rows)
        return sorted(found)

    def import_images(self, images: Sequence[ExportedImage]) -> None:
        self._write_images([(image.record, image) for image in images])

    def import_links(self, links: Sequence[Link]) -> int:
        if not links:
            return 0
        with self._db.write() as tx:
            id_of = _ids_by_path(tx, list({p for link in links for p in (link.a, link.b)}))
            rows = []
            for link in links:
                a, b = id_of.get(link.a), id_of.get(link.b)
                if a is not None and b is not None and a != b:
                    rows.append((min(a, b), max(a, b), link.score))
            tx.executemany("INSERT OR REPLACE INTO links (a, b, score) VALUES (?, ?, ?)", rows)
            return len(rows)

    def __enter__(self) -> EmbeddedGraphStore:
        return self

    def close(self) -> None:
        self._ann.close()
        self._db.close()
        self._vectors.close()

    # -- helpers ----------------------------------------------------------------------

    def _update_vectors(self) -> None:
        """Bring the shared vector files up to what is committed (after this process's writes).

        A failure here leaves the commit in place: the next query, in any process, catches
        the files up, so it is logged rather than raised as if the write had failed.
        """
        try:
            with self._db.read() as tx, self._vectors.current(tx):
                pass
        except StoreError as exc:
            log.warning("vector_files_not_updated", file=str(self._vectors.vectors_path), reason=str(exc),
                        detail="committed; the next search catches the vector files up")

    def _write_images(self, images: Sequence[tuple[ImageRecord, ExportedImage | None]]) -> None:
        """Upsert records; with an ExportedImage (imports) its linked flag, pick bar and
        indexed_at are set as exported, else a new or changed embedding is stamped now."""
        if not images:
            return
        now = time.time()
        with self._db.write() as tx:
            model, dim = tx.require_model()
            rows = []
            for record, exported in images:
                if record.model != model:
                    raise ModelMismatchError(foreign_record_message(
                        record.path, record.model, model,
                        f"use a new --data-dir, or delete {self.db_path} (and its -wal/-shm files)",
                    ))
                rows.append((record, checked_embedding(record.embedding, dim, record.path).tobytes(), exported))
            pending = tx.pending_model()
            pending_rows = [] if pending is None else [
                (record.path, record.sha256, checked_embedding(record.pending_embedding, pending[1], record.path))
                for record, _, _ in rows if record.pending_embedding is not None]
            rev = tx.next_revision()
            record_store_identity(tx)
            previous = _embeddings_by_path(tx, [record.path for record, _, _ in rows])
            for record, blob, exported in rows:
                # Every right-hand side reads the row as it was: linked and indexed_at compare
                # the old embedding with the new one.
                tx.execute(
                    """
                    INSERT INTO images (path, sha256, size, mtime_ns, ctime_ns, inode, width, height, model,
                                        embedding, rev, indexed_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT (path) DO UPDATE SET
                        sha256 = excluded.sha256, size = excluded.size, mtime_ns = excluded.mtime_ns,
                        ctime_ns = excluded.ctime_ns, inode = excluded.inode,
                        width = excluded.width, height = excluded.height, model = excluded.model,
                        linked = images.linked AND images.embedding = excluded.embedding,
                        indexed_at = CASE WHEN images.embedding = excluded.embedding
                                          THEN images.indexed_at ELSE excluded.indexed_at END,
                        embedding = excluded.embedding, rev = excluded.rev
                    """,
                    (record.path, record.sha256, record.size, record.mtime_ns, record.ctime_ns, record.inode,
                     record.width, record.height, record.model, blob, rev, now),
                )
                old = previous.get(record.path)
                if old is not None and old[1] != blob:
                    _delete_links_of(tx, [old[0]])
                    previous[record.path] = (old[0], blob)
                if exported is not None:
                    tx.execute("UPDATE images SET linked = ?, pick_bar = ?, indexed_at = ? WHERE path = ?",
                               (int(exported.linked), exported.pick_bar, exported.indexed_at, record.path))
            if pending_rows:
                pending_rev = tx.next_pending_revision()
                tx.executemany(
                    "INSERT OR REPLACE INTO pending_embeddings (image_id, sha256, embedding, rev) "
                    "SELECT id, ?, ?, ? FROM images WHERE path = ?",
                    [(sha256, vector.tobytes(), pending_rev, path) for path, sha256, vector in pending_rows])
        self._update_vectors()


def _ids_by_path(tx: Transaction, paths: Sequence[str]) -> dict[str, int]:
    return dict(tx.select_in("SELECT path, id FROM images WHERE path IN ({marks})", paths))


def _embeddings_by_path(tx: Transaction, paths: Sequence[str]) -> dict[str, tuple[int, bytes]]:
    rows = tx.select_in("SELECT path, id, embedding FROM images WHERE path IN ({marks})", paths)
    return {path: (image_id, blob) for path, image_id, blob in rows}


def _delete_links_of(tx: Transaction, ids: Sequence[int]) -> None:
    parameters = [(i,) for i in ids]
    tx.executemany("DELETE FROM links WHERE a = ?", parameters)
    tx.executemany("DELETE FROM links WHERE b = ?", parameters)


def _former_links(tx: Transaction, ids: Sequence[int], index: SlotVectors) -> list[FormerLink[int]]:
    """The links from images outside ``ids`` (and in ``index``) to images in ``ids``, re-scored."""
    own = set(ids)
    pairs: list[tuple[int, int, float | None]] = []  # (outside, inside, outside's pick bar)
    for inside, outside in (("a", "b"), ("b", "a")):
        rows = tx.select_in(
            f"SELECT links.{outside}, links.{inside}, images.pick_bar FROM links "
            f"JOIN images ON images.id = links.{outside} WHERE links.{inside} IN ({{marks}})",
            ids,
        )
        # Links inside the batch are skipped: both ends pick again anyway.
        pairs.extend(row for row in rows if row[0] not in own and row[0] in index)
    if not pairs:
        return []
    scores = np.einsum("ij,ij->i", index.vectors([p[0] for p in pairs]), index.vectors([p[1] for p in pairs]))
    return [FormerLink(neighbour=outside, image=inside, neighbour_bar=bar, score=float(score))
            for (outside, inside, bar), score in zip(pairs, scores.tolist(), strict=True)]


def _under_condition(under: str | None) -> tuple[str, tuple[str, ...]]:
    """SQL restricting ``path`` to ``under`` and everything below it, using the path index.

    ``/a/b`` matches ``/a/b`` and ``/a/b/...`` but not the sibling ``/a/bc``: the range
    [``/a/b/``, ``/a/b0``) holds exactly the strings starting with ``/a/b/``
    (``0`` follows ``/`` in code-point order, which SQLite's byte order preserves).
    """
    if under is None:
        return "", ()
    directory = under.rstrip(os.sep)
    if not directory:  # the filesystem root: everything
        return "", ()
    prefix = directory + os.sep
    upper = directory + chr(ord(os.sep) + 1)
    return "AND (path = ? OR (path >= ? AND path < ?))", (directory, prefix, upper)
