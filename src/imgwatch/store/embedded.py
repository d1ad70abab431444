"""The embedded graph store: one SQLite file under the data dir, no server.

SQLite is the source of truth. Each process also mirrors every embedding in an
in-memory :class:`VectorIndex` for exact nearest-neighbour search, and keeps that
mirror current incrementally: every write transaction bumps a revision counter and
stamps the rows it writes (or the tombstones of rows it deletes) with it, so before
a query a process reads only what changed since the revision it last saw.

Durability: WAL journal with ``synchronous=NORMAL``. In WAL mode that never corrupts
the database on a crash; a power loss may only roll back the last few commits, and
whatever they held is re-derived from the photo files by the next reconciliation.
FULL would fsync on every commit, which the many small worker transactions would pay
for and gain nothing from.

Concurrency: several processes (workers, daemon, CLI) may open the same file; writes
are ``BEGIN IMMEDIATE`` transactions that wait up to ``busy_timeout_s`` for each other.
One store object may be used by one thread at a time (an internal lock serialises
calls made from several threads); use processes for parallelism.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from imgwatch.store.base import (
    ExportedImage,
    FileState,
    GraphStore,
    ImageNotFound,
    ImageRecord,
    Link,
    Match,
    ModelMismatchError,
    StoredImage,
    StoreError,
    StoreStats,
    checked_embedding,
    foreign_record_message,
    model_mismatch_message,
    unit_query,
)
from imgwatch.store.vectors import VectorIndex

SCHEMA_VERSION = 1

T = TypeVar("T")

# Bound the number of "?" in one statement (old SQLite builds allow only 999).
_SQL_CHUNK = 500
# Scores are recomputed from the same float32 vectors; allow for summation-order noise.
_SCORE_EPSILON = 1e-6
# Rows per page when streaming file states or loading embeddings.
_PAGE_SIZE = 2000

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value            -- no declared type: integers stay integers, text stays text
) WITHOUT ROWID;

-- AUTOINCREMENT: ids are never reused, so a tombstone or a link always means one image.
CREATE TABLE IF NOT EXISTS images (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    path      TEXT    NOT NULL UNIQUE,
    sha256    TEXT    NOT NULL,
    size      INTEGER NOT NULL,
    mtime_ns  INTEGER NOT NULL,
    width     INTEGER NOT NULL,
    height    INTEGER NOT NULL,
    model     TEXT    NOT NULL,
    embedding BLOB    NOT NULL,   -- dim little-endian float32 values
    rev       INTEGER NOT NULL,   -- revision of the transaction that last wrote it
    linked    INTEGER NOT NULL DEFAULT 0,  -- 1 once link() ran for the current embedding
    pick_bar  REAL                -- lowest score this image picked when linked (its k-th best)
);
CREATE INDEX IF NOT EXISTS images_by_rev ON images(rev);

-- Undirected SIMILAR_TO edges, stored once with a < b.
CREATE TABLE IF NOT EXISTS links (
    a     INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    b     INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    score REAL    NOT NULL,
    PRIMARY KEY (a, b),
    CHECK (a < b)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS links_by_b ON links(b);

-- Removed image ids, so other processes can drop them from their in-memory index.
CREATE TABLE IF NOT EXISTS tombstones (
    id  INTEGER PRIMARY KEY,
    rev INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tombstones_by_rev ON tombstones(rev);
"""


class EmbeddedGraphStore(GraphStore):
    """:class:`GraphStore` on a local SQLite file plus an exact in-memory vector index."""

    backend = "embedded"

    def __init__(self, db_path: Path | str, *, busy_timeout_s: float = 60.0) -> None:
        self.db_path = Path(db_path)
        if not self.db_path.parent.is_dir():
            raise StoreError(
                f"cannot open store {self.db_path}: directory {self.db_path.parent} does not exist"
            )
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.RLock()
        self._index: VectorIndex | None = None
        self._index_rev = 0  # revision the in-memory index reflects
        try:
            self._db: sqlite3.Connection | None = sqlite3.connect(
                self.db_path,
                timeout=busy_timeout_s,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # guarded by self._lock instead
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {self.db_path}: {exc}") from exc
        try:
            self._configure()
            self._migrate()
        except BaseException:
            self.close()
            raise

    # -- GraphStore -----------------------------------------------------------------

    def ensure_model(self, model: str, dim: int) -> None:
        if not model or dim <= 0:
            raise StoreError(f"invalid embedding model {model!r} with dim {dim}")
        with self._write() as db:
            recorded = self._recorded_model(db)
            if recorded == (model, dim):
                return
            if recorded is not None:
                count = db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
                if count:
                    raise ModelMismatchError(model_mismatch_message(
                        *recorded, count, model, dim,
                        f"use a new --data-dir, or stop imgwatch and delete {self.db_path} (and its -wal/-shm files)",
                    ))
            self._set_meta(db, "model", model)
            self._set_meta(db, "dim", dim)

    def upsert(self, records: Sequence[ImageRecord]) -> None:
        """Insert or replace images by path, all in one transaction.

        A replaced image keeps its id. If its embedding changed, its links are dropped
        here (their scores would be stale); the caller re-creates them with ``link``.
        """
        self._write_images([(record, None) for record in records])

    def _write_images(self, images: Sequence[tuple[ImageRecord, tuple[bool, float | None] | None]]) -> None:
        """Upsert records; with a (linked, pick_bar) pair those are set as given (imports)."""
        if not images:
            return
        with self._write() as db:
            model, dim = self._require_model(db)
            rows = []
            for record, link_state in images:
                if record.model != model:
                    raise ModelMismatchError(foreign_record_message(
                        record.path, record.model, model,
                        f"use a new --data-dir, or delete {self.db_path} (and its -wal/-shm files)",
                    ))
                rows.append((record, checked_embedding(record.embedding, dim, record.path).tobytes(), link_state))
            rev = self._next_rev(db)
            previous = self._embeddings_by_path(db, [record.path for record, _, _ in rows])
            for record, blob, link_state in rows:
                db.execute(
                    """
                    INSERT INTO images (path, sha256, size, mtime_ns, width, height, model, embedding, rev)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT (path) DO UPDATE SET
                        sha256 = excluded.sha256, size = excluded.size, mtime_ns = excluded.mtime_ns,
                        width = excluded.width, height = excluded.height, model = excluded.model,
                        linked = images.linked AND images.embedding = excluded.embedding,
                        embedding = excluded.embedding, rev = excluded.rev
                    """,
                    (record.path, record.sha256, record.size, record.mtime_ns,
                     record.width, record.height, record.model, blob, rev),
                )
                old = previous.get(record.path)
                if old is not None and old[1] != blob:
                    self._delete_links_of(db, [old[0]])
                    previous[record.path] = (old[0], blob)
                if link_state is not None:
                    db.execute("UPDATE images SET linked = ?, pick_bar = ? WHERE path = ?",
                               (int(link_state[0]), link_state[1], record.path))

    def update_file_states(self, states: Sequence[FileState]) -> None:
        if not states:
            return
        with self._write() as db:
            # Embeddings are unchanged, so no revision bump: other indexes stay valid.
            db.executemany(
                "UPDATE images SET size = ?, mtime_ns = ? WHERE path = ?",
                [(state.size, state.mtime_ns, state.path) for state in states],
            )

    def remove(self, paths: Iterable[str]) -> int:
        unique = list(dict.fromkeys(paths))
        if not unique:
            return 0
        with self._write() as db:
            ids = list(self._ids_by_path(db, unique).values())
            if not ids:
                return 0
            rev = self._next_rev(db)
            db.executemany(
                "INSERT OR REPLACE INTO tombstones (id, rev) VALUES (?, ?)", [(i, rev) for i in ids]
            )
            # Links go with their images (ON DELETE CASCADE).
            db.executemany("DELETE FROM images WHERE id = ?", [(i,) for i in ids])
            return len(ids)

    def get_many(self, paths: Iterable[str]) -> dict[str, StoredImage]:
        unique = list(dict.fromkeys(paths))
        found: dict[str, StoredImage] = {}
        with self._read() as db:
            for chunk in _chunks(unique, _SQL_CHUNK):
                marks = ",".join("?" * len(chunk))
                for row in db.execute(
                    "SELECT path, sha256, size, mtime_ns, width, height, model, linked FROM images "
                    f"WHERE path IN ({marks})",
                    chunk,
                ):
                    found[row[0]] = StoredImage(*row[:7], linked=bool(row[7]))
        return found

    def nearest(self, vector: np.ndarray, k: int, *, exclude: Iterable[str] = ()) -> list[Match]:
        """Exact top-``k`` by cosine similarity (the query is normalised first)."""
        excluded_paths = list(dict.fromkeys(exclude))
        with self._read() as db:
            recorded = self._recorded_model(db)
            if recorded is None or k <= 0:
                return []
            query = unit_query(vector, recorded[1])
            index = self._synced_index(db, recorded[1])
            excluded_ids = list(self._ids_by_path(db, excluded_paths).values())
            ids, scores = index.search(query, k, excluded_ids)
            path_of = self._paths_by_id(db, ids.tolist())
        return [Match(path_of[i], float(s)) for i, s in zip(ids.tolist(), scores.tolist(), strict=True) if i in path_of]

    def link(self, images: Sequence[ImageRecord], threshold: float, top_k: int) -> int:
        """Replace the links of ``images`` with their best matches among all stored images.

        A link to a former neighbour survives if that neighbour would still pick the
        image: the new score reaches the bar the neighbour set when it last linked
        (its k-th best score, or the threshold if it found fewer), or failing that, a
        fresh search for the neighbour still finds it. Usually one dot product per
        former link decides, instead of a search per neighbour. Scores use the
        stored embeddings. Images no longer stored (a concurrent ``remove`` won the
        race) are skipped rather than failing the batch.
        """
        if not images:
            return 0
        if not -1.0 <= threshold <= 1.0:  # also refuses NaN
            raise StoreError(f"link threshold must be a cosine in [-1, 1], got {threshold}")
        with self._read() as db:
            # Catch up outside the write lock (a first load can take seconds), so that
            # under the lock only the last few changes remain to be read.
            recorded = self._recorded_model(db)
            if recorded is not None:
                self._synced_index(db, recorded[1])
        with self._write() as db:
            recorded = self._recorded_model(db)
            if recorded is None:
                return 0
            # Synced inside the write lock: no other process can change images meanwhile.
            index = self._synced_index(db, recorded[1])
            id_of = self._ids_by_path(db, list(dict.fromkeys(image.path for image in images)))
            ids = [i for i in id_of.values() if i in index]
            former = self._former_links(db, ids, index)
            self._delete_links_of(db, ids)
            if top_k <= 0:
                db.executemany("UPDATE images SET linked = 1 WHERE id = ?", [(i,) for i in ids])
                return 0
            if not ids:
                return 0
            best: dict[tuple[int, int], float] = {}
            bars: dict[int, float] = {}
            results = index.search_many(index.vectors(ids), top_k, [(i,) for i in ids])
            for source, (neighbour_ids, scores) in zip(ids, results, strict=True):
                picked = [s for s in scores.tolist() if s >= threshold]
                bars[source] = picked[-1] if picked and len(picked) == top_k else threshold
                for neighbour, score in zip(neighbour_ids.tolist(), picked, strict=False):
                    pair = (source, neighbour) if source < neighbour else (neighbour, source)
                    best[pair] = score
            undecided: dict[int, set[int]] = {}
            for (kept, relinked), bar in former.items():
                score = float(index.vectors([kept])[0] @ index.vectors([relinked])[0])
                pair = (kept, relinked) if kept < relinked else (relinked, kept)
                if score >= max(bar, threshold) - _SCORE_EPSILON:
                    best.setdefault(pair, score)
                elif score >= threshold:
                    undecided.setdefault(kept, set()).add(relinked)
            if undecided:
                # Below the old bar but above the threshold: only a fresh search can tell
                # whether the neighbour still picks it (rare: the image changed a lot).
                kept_ids = list(undecided)
                results = index.search_many(index.vectors(kept_ids), top_k, [(i,) for i in kept_ids])
                for kept, (neighbour_ids, scores) in zip(kept_ids, results, strict=True):
                    for neighbour, score in zip(neighbour_ids.tolist(), scores.tolist(), strict=True):
                        if score >= threshold and neighbour in undecided[kept]:
                            pair = (kept, neighbour) if kept < neighbour else (neighbour, kept)
                            best.setdefault(pair, score)
            db.executemany(
                "UPDATE images SET linked = 1, pick_bar = ? WHERE id = ?", [(bar, i) for i, bar in bars.items()]
            )
            db.executemany(
                "INSERT OR REPLACE INTO links (a, b, score) VALUES (?, ?, ?)",
                [(a, b, score) for (a, b), score in best.items()],
            )
            return len(best)

    def neighbours(self, path: str) -> list[Match]:
        with self._read() as db:
            row = db.execute("SELECT id FROM images WHERE path = ?", (path,)).fetchone()
            if row is None:
                raise ImageNotFound(path)
            rows = db.execute(
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

    def stats(self) -> StoreStats:
        with self._read() as db:
            images = db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            links = db.execute("SELECT COUNT(*) FROM links").fetchone()[0]
            recorded = self._recorded_model(db)
        return StoreStats(
            backend=self.backend,
            location=str(self.db_path),
            images=images,
            links=links,
            model=recorded[0] if recorded else None,
            dim=recorded[1] if recorded else None,
        )

    def describe(self) -> dict[str, object]:
        stats = self.stats()
        with self._read() as db:
            journal = db.execute("PRAGMA journal_mode").fetchone()[0]
            schema = self._schema_version(db)
        size = sum(p.stat().st_size for p in self.db_path.parent.glob(self.db_path.name + "*") if p.is_file())
        return {
            "backend": self.backend,
            "file": str(self.db_path),
            "sqlite": sqlite3.sqlite_version,
            "journal_mode": journal,
            "schema_version": schema,
            "size_mib": round(size / 2**20, 1),
            "vector_index": "exact, in memory (rebuilt from the file by each process)",
            "images": stats.images,
            "links": stats.links,
            "model": stats.model,
            "dim": stats.dim,
        }

    def export_images(self, after: str, limit: int) -> list[ExportedImage]:
        with self._read() as db:
            rows = db.execute(
                "SELECT path, sha256, size, mtime_ns, width, height, model, embedding, linked, pick_bar "
                "FROM images WHERE path > ? ORDER BY path LIMIT ?",
                (after, limit),
            ).fetchall()
        return [
            ExportedImage(
                ImageRecord(path, sha256, size, mtime_ns, width, height, model,
                            np.frombuffer(blob, dtype="<f4").copy()),
                linked=bool(linked),
                pick_bar=pick_bar,
            )
            for path, sha256, size, mtime_ns, width, height, model, blob, linked, pick_bar in rows
        ]

    def export_links(self, paths: Sequence[str]) -> list[Link]:
        found: set[Link] = set()
        with self._read() as db:
            ids = list(self._ids_by_path(db, list(dict.fromkeys(paths))).values())
            for column in ("a", "b"):
                rows = _select_in(
                    db,
                    "SELECT ia.path, ib.path, links.score FROM links "
                    "JOIN images AS ia ON ia.id = links.a JOIN images AS ib ON ib.id = links.b "
                    f"WHERE links.{column} IN ({{marks}})",
                    ids,
                )
                found.update(Link.between(a, b, score) for a, b, score in rows)
        return sorted(found)

    def import_images(self, images: Sequence[ExportedImage]) -> None:
        self._write_images([(image.record, (image.linked, image.pick_bar)) for image in images])

    def import_links(self, links: Sequence[Link]) -> int:
        if not links:
            return 0
        with self._write() as db:
            id_of = self._ids_by_path(db, list({p for link in links for p in (link.a, link.b)}))
            rows = []
            for link in links:
                a, b = id_of.get(link.a), id_of.get(link.b)
                if a is not None and b is not None and a != b:
                    rows.append((min(a, b), max(a, b), link.score))
            db.executemany("INSERT OR REPLACE INTO links (a, b, score) VALUES (?, ?, ?)", rows)
            return len(rows)

    def file_states(self, under: str | None = None) -> Iterator[FileState]:
        """Stream states in path order, one page per short read transaction.

        Pages are read by keyset (``path > last``), so no transaction stays open while
        the caller works on a page; images written meanwhile may or may not appear.
        """
        condition, parameters = _under_condition(under)
        after = ""
        while True:
            with self._read() as db:
                page = db.execute(
                    f"SELECT path, size, mtime_ns FROM images WHERE path > ? {condition} "
                    "ORDER BY path LIMIT ?",
                    (after, *parameters, _PAGE_SIZE),
                ).fetchall()
            for path, size, mtime_ns in page:
                yield FileState(path, size, mtime_ns)
            if len(page) < _PAGE_SIZE:
                return
            after = page[-1][0]

    def __enter__(self) -> EmbeddedGraphStore:
        return self

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                db, self._db = self._db, None
                db.close()
            self._index = None

    # -- transactions -----------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._transaction("BEGIN IMMEDIATE") as db:
            yield db

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        # A deferred transaction reads one consistent snapshot for all its statements.
        with self._transaction("BEGIN") as db:
            yield db

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._db
            if db is None:
                raise StoreError(f"store {self.db_path} is closed")
            try:
                db.execute(begin)
            except sqlite3.Error as exc:
                raise self._store_error(exc) from exc
            try:
                yield db
                db.execute("COMMIT")
            except BaseException as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._store_error(exc) from exc
                raise

    def _store_error(self, exc: sqlite3.Error) -> StoreError:
        if "locked" in str(exc) or "busy" in str(exc):
            return StoreError(
                f"store {self.db_path} stayed busy for {self._busy_timeout_s:.0f} s ({exc}); "
                "another imgwatch process holds a long write, try again"
            )
        return StoreError(f"store {self.db_path}: {exc}")

    # -- setup ------------------------------------------------------------------------

    def _configure(self) -> None:
        assert self._db is not None
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
            self._enable_wal(self._db)
            self._db.execute("PRAGMA synchronous = NORMAL")  # crash-safe in WAL mode, see module doc
            self._db.execute("PRAGMA foreign_keys = ON")  # links cascade with their images
        except sqlite3.OperationalError as exc:
            raise self._store_error(exc) from exc
        except sqlite3.DatabaseError as exc:  # e.g. "file is not a database"
            raise StoreError(f"cannot open store {self.db_path}: {exc} (is it an imgwatch store?)") from exc

    def _enable_wal(self, db: sqlite3.Connection) -> None:
        # Switching a new file to WAL needs an exclusive lock, and SQLite does not always
        # wait for it through the busy handler, so processes opening a new store together
        # retry here. Once the file is in WAL mode this is a no-op.
        deadline = time.monotonic() + self._busy_timeout_s
        while True:
            try:
                mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        if mode.lower() != "wal":
            raise StoreError(f"store {self.db_path}: cannot enable the WAL journal (got {mode!r})")

    def _migrate(self) -> None:
        """Create or upgrade the schema; idempotent and safe with concurrent openers."""
        with self._read() as db:
            if self._schema_version(db) == SCHEMA_VERSION:
                return  # the common case takes no write lock, so opening never waits on writers
        with self._write() as db:
            version = self._schema_version(db)
            if version is not None and version > SCHEMA_VERSION:
                raise StoreError(
                    f"store {self.db_path} has schema version {version}, newer than this imgwatch "
                    f"understands ({SCHEMA_VERSION}); upgrade imgwatch"
                )
            # Future versions: apply each step from `version` up to SCHEMA_VERSION here.
            for statement in _SCHEMA_V1.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('rev', 0)")
            self._set_meta(db, "schema_version", SCHEMA_VERSION)

    def _schema_version(self, db: sqlite3.Connection) -> int | None:
        has_meta = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
        return self._meta_int(db, "schema_version") if has_meta else None

    # -- helpers (all run inside a transaction) ---------------------------------------

    @staticmethod
    def _get_meta(db: sqlite3.Connection, key: str) -> object:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    @staticmethod
    def _set_meta(db: sqlite3.Connection, key: str, value: object) -> None:
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def _meta_int(self, db: sqlite3.Connection, key: str) -> int | None:
        value = self._get_meta(db, key)
        if value is None:
            return None
        if not isinstance(value, int):
            raise StoreError(f"store {self.db_path} is damaged: meta {key!r} is {value!r}, not an integer")
        return value

    def _recorded_model(self, db: sqlite3.Connection) -> tuple[str, int] | None:
        model, dim = self._get_meta(db, "model"), self._meta_int(db, "dim")
        if model is None or dim is None:
            return None
        return str(model), dim

    def _require_model(self, db: sqlite3.Connection) -> tuple[str, int]:
        recorded = self._recorded_model(db)
        if recorded is None:
            raise StoreError(f"store {self.db_path} has no embedding model yet; call ensure_model first")
        return recorded

    def _next_rev(self, db: sqlite3.Connection) -> int:
        db.execute("UPDATE meta SET value = value + 1 WHERE key = 'rev'")
        return self._current_rev(db)

    def _current_rev(self, db: sqlite3.Connection) -> int:
        return self._meta_int(db, "rev") or 0

    def _synced_index(self, db: sqlite3.Connection, dim: int) -> VectorIndex:
        """The in-memory index brought up to the snapshot of the open transaction."""
        rev = self._current_rev(db)
        if self._index is None or self._index.dim != dim or rev < self._index_rev:
            # First use, a model switch, or a store file replaced under us: load everything.
            self._index, self._index_rev = VectorIndex(dim), 0
        index = self._index
        if rev == self._index_rev:
            return index
        # Tombstones first: a row still present in this snapshot is alive, whatever its past.
        gone = db.execute("SELECT id FROM tombstones WHERE rev > ?", (self._index_rev,))
        index.remove(row[0] for row in gone)
        cursor = db.execute("SELECT id, embedding FROM images WHERE rev > ?", (self._index_rev,))
        while page := cursor.fetchmany(_PAGE_SIZE):
            blobs = [blob for _, blob in page]
            if any(len(blob) != 4 * dim for blob in blobs):
                raise StoreError(f"store {self.db_path} holds an embedding that is not {dim} float32 values")
            vectors = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(page), dim)
            index.upsert([image_id for image_id, _ in page], vectors)
        self._index_rev = rev
        return index

    @staticmethod
    def _ids_by_path(db: sqlite3.Connection, paths: Sequence[str]) -> dict[str, int]:
        return dict(_select_in(db, "SELECT path, id FROM images WHERE path IN ({marks})", paths))

    @staticmethod
    def _paths_by_id(db: sqlite3.Connection, ids: Sequence[int]) -> dict[int, str]:
        return dict(_select_in(db, "SELECT id, path FROM images WHERE id IN ({marks})", ids))

    @staticmethod
    def _embeddings_by_path(db: sqlite3.Connection, paths: Sequence[str]) -> dict[str, tuple[int, bytes]]:
        rows = _select_in(db, "SELECT path, id, embedding FROM images WHERE path IN ({marks})", paths)
        return {path: (image_id, blob) for path, image_id, blob in rows}

    @staticmethod
    def _former_links(db: sqlite3.Connection, ids: Sequence[int], index: VectorIndex) -> dict[tuple[int, int], float]:
        """Links from images outside ``ids`` to images in ``ids``: (outside, inside) -> outside's pick bar."""
        own = set(ids)
        found: dict[tuple[int, int], float] = {}
        for chunk in _chunks(list(ids), _SQL_CHUNK):
            marks = ",".join("?" * len(chunk))
            rows = db.execute(
                f"""
                SELECT links.a, links.b, images.pick_bar FROM links JOIN images
                  ON images.id = (CASE WHEN links.a IN ({marks}) THEN links.b ELSE links.a END)
                WHERE links.a IN ({marks}) OR links.b IN ({marks})
                """,
                [*chunk, *chunk, *chunk],
            )
            for a, b, bar in rows:
                if a in own and b in own:
                    continue  # both ends pick again anyway
                outside, inside = (b, a) if a in own else (a, b)
                if outside in index:
                    found[(outside, inside)] = -1.0 if bar is None else bar
        return found

    @staticmethod
    def _delete_links_of(db: sqlite3.Connection, ids: Sequence[int]) -> None:
        parameters = [(i,) for i in ids]
        db.executemany("DELETE FROM links WHERE a = ?", parameters)
        db.executemany("DELETE FROM links WHERE b = ?", parameters)


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


def _select_in(db: sqlite3.Connection, query: str, keys: Sequence[object]) -> Iterator[tuple[Any, ...]]:
    """Rows of ``query`` (with an ``IN ({marks})`` placeholder) for ``keys``, in bounded chunks."""
    for chunk in _chunks(keys, _SQL_CHUNK):
        yield from db.execute(query.format(marks=",".join("?" * len(chunk))), chunk)


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
