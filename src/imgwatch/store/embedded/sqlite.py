"""The SQLite side of the embedded store: the file, its schema, and transactions on it.

Durability: WAL journal with ``synchronous=NORMAL``. In WAL mode that never corrupts
the database on a crash; a power loss may only roll back the last few commits, and
whatever they held is re-derived from the photo files by the next reconciliation.
FULL would fsync on every commit, which the many small worker transactions would pay
for and gain nothing from.

Concurrency: several processes (workers, daemon, CLI) may open the same file; writes
are ``BEGIN IMMEDIATE`` transactions that wait up to ``busy_timeout_seconds`` for each other.
One :class:`Database` may be used by one thread at a time (an internal lock serialises
transactions begun from several threads); use processes for parallelism.

Every write transaction that changes embeddings bumps the ``rev`` counter in ``meta``
and stamps the rows it writes (or the tombstones of rows it deletes) with it, so each
reader of the shared vector files (and the HNSW index) can catch up on only what changed
(see ``shared_vectors.py`` and ``ann_search.py``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from imgwatch.errors import StoreError
from imgwatch.store.batching import chunks

SCHEMA_VERSION = 6

# Bound the number of "?" in one statement (old SQLite builds allow only 999).
SQL_CHUNK = 500

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

-- Undirected SIMILAR_TO links, stored once with a < b.
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

# Each step takes the schema from the version before it to its own, inside the write
# transaction that also records the new version, so a step runs once and whole.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (
        # When the current embedding was written (epoch seconds); NULL for images stored before.
        "ALTER TABLE images ADD COLUMN indexed_at REAL",
        # links_at_least(): a range on score. On a WITHOUT ROWID table the index entries
        # carry the primary key too, so this is effectively (score, a, b): the page key.
        "CREATE INDEX IF NOT EXISTS links_by_score ON links(score)",
    ),
    3: (
        # embeddings_by_hash(): a copied, renamed or moved file finds the embedding of its content.
        "CREATE INDEX IF NOT EXISTS images_by_sha256 ON images(sha256)",
    ),
    4: (
        # The rest of a file's signature (files.signature_of); NULL for images stored before,
        # which therefore count as changed once and are checked by their content hash.
        "ALTER TABLE images ADD COLUMN ctime_ns INTEGER",
        "ALTER TABLE images ADD COLUMN inode INTEGER",
    ),
    5: (
        # The pending space of a re-index (GraphStore.begin_space; its model in meta 'pending_*'):
        # an image's vector from the new model for the content ``sha256`` it had then, stamped with
        # meta 'pending_rev' so that switch_space finds what changed while it computed links.
        """CREATE TABLE IF NOT EXISTS pending_embeddings (
            image_id  INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
            sha256    TEXT    NOT NULL,
            embedding BLOB    NOT NULL,
            rev       INTEGER NOT NULL
        )""",
        # pending_by_hash(): a copy reuses its content's pending vector.
        "CREATE INDEX IF NOT EXISTS pending_by_sha256 ON pending_embeddings(sha256)",
    ),
    6: (
        # A person's decisions about duplicates (GraphStore.record_decision), keyed by content so
        # that they outlive moves, renames and re-indexing; a content is in one decision at most.
        """CREATE TABLE IF NOT EXISTS duplicate_decisions (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            kind       TEXT    NOT NULL,
            keep       TEXT,
            decided_at REAL    NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS decision_contents (
            sha256      TEXT    PRIMARY KEY,
            decision_id INTEGER NOT NULL REFERENCES duplicate_decisions(id) ON DELETE CASCADE
        ) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS decision_contents_by_decision ON decision_contents(decision_id)",
    ),
}


class Transaction:
    """One open transaction: statements, plus the ``meta`` values the store keeps.

    Only valid inside the ``with`` block of :meth:`Database.read` or :meth:`Database.write`.
    """

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._connection = connection
        self.path = path

    def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Cursor:
        return self._connection.execute(sql, parameters)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._connection.executemany(sql, rows)

    def select_in(self, query: str, keys: Sequence[object]) -> Iterator[tuple[Any, ...]]:
        """Rows of ``query`` (with an ``IN ({marks})`` placeholder) for ``keys``, in bounded chunks."""
        for chunk in chunks(keys, SQL_CHUNK):
            yield from self._connection.execute(query.format(marks=",".join("?" * len(chunk))), chunk)

    # -- meta ---------------------------------------------------------------------------

    def schema_version(self) -> int | None:
        has_meta = self.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
        return self._meta_int("schema_version") if has_meta else None

    def recorded_model(self) -> tuple[str, int] | None:
        """The (model, dim) recorded by ``record_model``, None before."""
        model, dim = self._meta("model"), self._meta_int("dim")
        if model is None or dim is None:
            return None
        return str(model), dim

    def require_model(self) -> tuple[str, int]:
        recorded = self.recorded_model()
        if recorded is None:
            raise StoreError(f"store {self.path} has no embedding model yet; call ensure_model first")
        return recorded

    def recorded_weights_file(self) -> tuple[str, str] | None:
        """The (path, SHA-256) of the weights file recorded with the model, None without one."""
        path, sha256 = self._meta("weights_file"), self._meta("weights_sha256")
        if path is None or sha256 is None:
            return None
        return str(path), str(sha256)

    def record_model(self, model: str, dim: int, weights_file: tuple[str, str] | None) -> None:
        self._set_meta("model", model)
        self._set_meta("dim", dim)
        path, sha256 = weights_file or (None, None)
        self._set_meta("weights_file", path)
        self._set_meta("weights_sha256", sha256)

    def pending_model(self) -> tuple[str, int, tuple[str, str] | None] | None:
        """The pending space's (model, dim, weights file) recorded by ``record_pending``; None without one."""
        model, dim = self._meta("pending_model"), self._meta_int("pending_dim")
        if model is None or dim is None:
            return None
        path, sha256 = self._meta("pending_weights_file"), self._meta("pending_weights_sha256")
        return str(model), dim, None if path is None or sha256 is None else (str(path), str(sha256))

    def record_pending(self, model: str | None, dim: int | None, weights_file: tuple[str, str] | None) -> None:
        """Record the pending space's model (None: drop the record)."""
        path, sha256 = weights_file or (None, None)
        for key, value in (("pending_model", model), ("pending_dim", dim), ("pending_weights_file", path),
                           ("pending_weights_sha256", sha256)):
            self._set_meta(key, value)

    def next_pending_revision(self) -> int:
        """Bump the pending space's revision (write transactions only); the pending rows it writes carry it."""
        self.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('pending_rev', 0)")
        self.execute("UPDATE meta SET value = value + 1 WHERE key = 'pending_rev'")
        return self.pending_revision()

    def pending_revision(self) -> int:
        return self._meta_int("pending_rev") or 0

    def revision(self) -> int:
        """The revision of the last committed change to embeddings, as this snapshot sees it."""
        return self._meta_int("rev") or 0

    def next_revision(self) -> int:
        """Bump the revision (write transactions only); rows this one writes carry the result."""
        self.execute("UPDATE meta SET value = value + 1 WHERE key = 'rev'")
        return self.revision()

    def _meta(self, key: str) -> object:
        row = self.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: object) -> None:
        self.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def _meta_int(self, key: str) -> int | None:
        value = self._meta(key)
        if value is None:
            return None
        if not isinstance(value, int):
            raise StoreError(f"store {self.path} is damaged: meta {key!r} is {value!r}, not an integer")
        return value


class Database:
    """The store's SQLite file: opened, configured and migrated on construction.

    ``read()`` and ``write()`` give a :class:`Transaction` that commits when the block
    ends and rolls back if it raises; SQLite errors come out as :class:`StoreError`.
    """

    def __init__(self, path: Path | str, *, busy_timeout_seconds: float = 60.0) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise StoreError(f"cannot open store {self.path}: directory {self.path.parent} does not exist")
        self._busy_timeout_seconds = busy_timeout_seconds
        self._lock = threading.RLock()
        try:
            self._connection: sqlite3.Connection | None = sqlite3.connect(
                self.path,
                timeout=busy_timeout_seconds,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # guarded by self._lock instead
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc
        try:
            self._configure(self._connection)
            self._migrate()
        except BaseException:
            self.close()
            raise

    @contextmanager
    def write(self) -> Iterator[Transaction]:
        """A write transaction: it holds the file's write lock from the start."""
        with self._transaction("BEGIN IMMEDIATE") as transaction:
            yield transaction

    @contextmanager
    def read(self) -> Iterator[Transaction]:
        """A read transaction: all its statements see one consistent snapshot."""
        with self._transaction("BEGIN") as transaction:
            yield transaction

    def files_size(self) -> int:
        """Bytes on disk of the database file and its companions (-wal, -shm, the vector files):
        the blocks allocated, as the vector file is sparse beyond what it holds."""
        return sum(p.stat().st_blocks * 512 for p in self.path.parent.glob(self.path.name + "*") if p.is_file())

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                connection, self._connection = self._connection, None
                connection.close()

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[Transaction]:
        with self._lock:
            connection = self._connection
            if connection is None:
                raise StoreError(f"store {self.path} is closed")
            try:
                connection.execute(begin)
            except sqlite3.Error as exc:
                raise self._store_error(exc) from exc
            try:
                yield Transaction(connection, self.path)
                connection.execute("COMMIT")
            except BaseException as exc:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._store_error(exc) from exc
                raise

    def _store_error(self, exc: sqlite3.Error) -> StoreError:
        if "locked" in str(exc) or "busy" in str(exc):
            return StoreError(
                f"store {self.path} stayed busy for {self._busy_timeout_seconds:.0f} s ({exc}); "
                "another imgwatch process holds a long write, try again"
            )
        return StoreError(f"store {self.path}: {exc}")

    # -- setup ------------------------------------------------------------------------

    def _configure(self, connection: sqlite3.Connection) -> None:
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_seconds * 1000)}")
            self._enable_wal(connection)
            connection.execute("PRAGMA synchronous = NORMAL")  # crash-safe in WAL mode, see module doc
            connection.execute("PRAGMA foreign_keys = ON")  # links cascade with their images
        except sqlite3.OperationalError as exc:
            raise self._store_error(exc) from exc
        except sqlite3.DatabaseError as exc:  # e.g. "file is not a database"
            raise StoreError(f"cannot open store {self.path}: {exc} (is it an imgwatch store?)") from exc

    def _enable_wal(self, connection: sqlite3.Connection) -> None:
        # Switching a new file to WAL needs an exclusive lock, and SQLite does not always
        # wait for it through the busy handler, so processes opening a new store together
        # retry here. Once the file is in WAL mode this is a no-op.
        deadline = time.monotonic() + self._busy_timeout_seconds
        while True:
            try:
                mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        if mode.lower() != "wal":
            raise StoreError(f"store {self.path}: cannot enable the WAL journal (got {mode!r})")

    def _migrate(self) -> None:
        """Create or upgrade the schema; idempotent and safe with concurrent openers."""
        with self.read() as transaction:
            if transaction.schema_version() == SCHEMA_VERSION:
                return  # the common case takes no write lock, so opening never waits on writers
        with self.write() as transaction:
            version = transaction.schema_version()
            if version is not None and version > SCHEMA_VERSION:
                raise StoreError(
                    f"store {self.path} has schema version {version}, newer than this imgwatch "
                    f"understands ({SCHEMA_VERSION}); upgrade imgwatch"
                )
            if version == SCHEMA_VERSION:
                return  # another process migrated it while we waited for the write lock
            if version is None:  # a new file: version 1, then every step
                for statement in _SCHEMA_V1.split(";"):
                    if statement.strip():
                        transaction.execute(statement)
                transaction.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('rev', 0)")
                version = 1
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[step]:
                    if not _already_applied(transaction, statement):
                        transaction.execute(statement)
            transaction._set_meta("schema_version", SCHEMA_VERSION)


def _already_applied(transaction: Transaction, statement: str) -> bool:
    """Whether an ``ALTER TABLE t ADD COLUMN c`` step's column exists already.

    Steps run once (the version is recorded in their transaction), but a step must not
    fail on a file that has its result without the version saying so (say, tables but
    no recorded version); ADD COLUMN has no IF NOT EXISTS, the other steps have.
    """
    words = statement.split()
    if words[:2] != ["ALTER", "TABLE"] or words[3:5] != ["ADD", "COLUMN"]:
        return False
    table, column = words[2], words[5]
    return any(row[1] == column for row in transaction.execute(f"PRAGMA table_info({table})"))
