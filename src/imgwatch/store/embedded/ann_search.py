"""Search through the saved HNSW index once the library is large, so query and link cost stay flat.

Below :data:`ANN_MIN_IMAGES` live images the store scans every vector (exact, and as fast
as the index there). Above it, :meth:`AnnSearch.attach` gives the store's
:class:`~imgwatch.store.embedded.vectors.SlotVectors` a proposer whose candidates are

- the HNSW index's candidates for each query (``ann.py``: a read-only memory-mapped view
  of the saved index, shared by every process, re-opened when a newer one is saved), and
- the *delta*: every id SQLite wrote after the revision the index covers (``images.rev``
  is indexed), scanned for every query,

which ``SlotVectors`` re-scores exactly from the mapped float32 vectors, dropping dead and
excluded ids. SQLite stays the source of truth: the index is a cache of an older revision.

The index is trusted only where a graph can be: for scores far above what the query gets
from most of the library (:class:`TailCheck`). A query whose answer needs a score in that
bulk (a photo unlike anything stored, or a top 10 whose tail is just "somewhat alike")
asks for one of thousands of near-ties; a graph walk picks among them arbitrarily, so
that query is scanned exactly instead.

Maintenance: when the delta (writes plus deletions since the index) outgrows
:func:`delta_bound`, or the index is missing, unusable, ahead of SQLite or of another store
(its ``store-id`` file differs from SQLite's identity), a daemon thread of this process at
the lowest CPU priority brings it forward, if it wins a non-blocking ``flock`` on ``<store>.hnsw-lock`` (other
processes keep searching with the old index plus delta, or exactly, meanwhile). It runs
in the background even for small updates: bringing a saved index forward means loading
and re-saving all of it (~2 GiB at 1M images), seconds that must not hold up a job, and
a full build takes many minutes there. A process that exits mid-build leaves only
temporary files, removed by the next maintenance (``ann.py`` saves atomically).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path

import numpy as np

from imgwatch.log import get_logger
from imgwatch.store.embedded.ann import HnswIndex, IndexFileUnusable, candidate_count
from imgwatch.store.embedded.shared_vectors import checked_rows, store_identity
from imgwatch.store.embedded.sqlite import Database, Transaction
from imgwatch.store.embedded.vectors import Proposal, Proposer, SlotVectors

log = get_logger("imgwatch.store")

# Below this many live images a full scan is used: with ann.py's graph (M 32; measured at ef 192) the
# index only starts to win on a worker's linking at ~100k (per image, index / exact: 20k
# 3.0 / 1.1 ms, 50k 4.3 / 2.6, 100k 5.0 / 5.4), while an exact nearest() there is still
# ~33 ms; and no index needs maintaining (bench/store_scale.py).
ANN_MIN_IMAGES = 100_000
# The delta is scanned by every query, so maintenance starts past this many changed ids.
DELTA_MIN = 2_000
DELTA_FRACTION = 0.01
# A delta this large a share of the library is no cheaper than scanning everything.
EXACT_WHEN_DELTA_ABOVE = 0.25
# Candidates asked of the index per query, at least: links are kept, so a missed neighbour
# costs more than re-scoring ~100 rows (~0.1 ms); ann.py's 4 per wanted neighbour leaves
# small top-k (link's top_k 5 -> 20) visibly short of the exact path's choices.
MIN_CANDIDATES = 100
# An answer from the index stands when the lowest score it needs is at least this many
# standard deviations above the query's mean score against the library (estimated from
# REFERENCE_IMAGES stored images). Measured at 1M images (ef 192, 100 candidates; 360 queries,
# bench/RESULTS.md "Telling the two apart"): recall@10 through the index 0.061 where the 10th
# best lies under 4 sd above the mean, 0.938 at 4-5, 0.996-1.000 from 5 up; 6 keeps a margin
# (under Gaussian tails, fewer than 1 in 10^9 images of the bulk score that high, so near-ties
# there are few at any library size). Tuned on synthetic photo-like vectors, not real embeddings.
TRUSTED_FROM_SD = 6.0
REFERENCE_IMAGES = 512
# Threads inserting into the graph in the background: one, so a worker's own job keeps a
# core, and because usearch inserts on 2 threads were seen to leave some images nearly
# unreachable (links differing from the exact path in 1 of 3 builds; none in 6 with one).
BUILD_THREADS = 1
# Rows read per step while building (64 MiB of float32 at 2048-d).
BUILD_CHUNK = 8_192
# After a failed maintenance (say, a full disk) this process waits before trying again;
# while another process holds the maintenance lock, it looks again after a short while.
RETRY_AFTER_FAILURE_SECONDS = 60.0
RETRY_WHILE_BUSY_SECONDS = 5.0
IDLE_NICENESS = 19  # the background maintenance's (the lowest priority)
IDENTITY_FILE = "store-id"


def delta_bound(images: int) -> int:
    """Changed ids (written or deleted since the index) above which the index is brought forward."""
    return max(DELTA_MIN, int(images * DELTA_FRACTION))


class _Delta:
    """Ids written since ``base`` (the index's revision) up to ``upto``, and deletions counted."""

    def __init__(self, base: int) -> None:
        self.base = base
        self.upto = base
        self.ids = np.empty(0, dtype=np.int64)  # sorted, unique
        self.removed = 0

    def catch_up(self, tx: Transaction, revision: int) -> None:
        if revision <= self.upto:
            return
        written = np.fromiter((row[0] for row in tx.execute("SELECT id FROM images WHERE rev > ?", (self.upto,))),
                              dtype=np.int64)
        self.ids = np.union1d(self.ids, written)
        self.removed += tx.execute("SELECT COUNT(*) FROM tombstones WHERE rev > ?", (self.upto,)).fetchone()[0]
        self.upto = revision

    def __len__(self) -> int:
        return len(self.ids) + self.removed


class AnnSearch:
    """The HNSW index of the store at ``db_path``: attached to searches, kept forward in the background.

    Thread-safe; searches of one store are serialised by the vector files' lock anyway.
    """

    def __init__(self, db_path: Path, *, min_images: int = ANN_MIN_IMAGES) -> None:
        self.db_path = db_path
        self.directory = Path(f"{db_path}.hnsw")
        self._lock_path = Path(f"{db_path}.hnsw-lock")
        self.min_images = min_images
        self._lock = threading.Lock()
        self._index: HnswIndex | None = None
        self._stamp: tuple[object, ...] | None = None  # the saved files self._index was opened from
        self._index_store_id: bytes | None = None
        self._delta: _Delta | None = None
        self._tail_check: TailCheck | None = None  # of self._index's library
        self._worker: threading.Thread | None = None
        self._stopping = threading.Event()
        self._next_try_at = 0.0  # time.monotonic() before which no maintenance is started
        self.saves = 0  # by this object's maintenance: tests and the bench read it
        # Queries whose index answer was not vouched for, so they were scanned exactly (searches that
        # never asked the index, below min_images or without one, are not counted): tests, bench.
        self.untrusted = 0

    @property
    def index_revision(self) -> int | None:
        """The revision of the saved index this process searches through; None while it has none."""
        with self._lock:
            return None if self._index is None else self._index.revision

    # -- searching ----------------------------------------------------------------------

    def attach(self, tx: Transaction, view: SlotVectors) -> SlotVectors:
        """``view`` searched through the index when the library is large and the index usable.

        ``tx`` is the transaction ``view`` was taken in (the delta is read in it).
        """
        with self._lock:
            current = self._caught_up(tx, view)
            if current is None or len(current[1].ids) > EXACT_WHEN_DELTA_ABOVE * len(view):
                return view
            index, delta = current
            if self._tail_check is None:
                self._tail_check = TailCheck(view)
            tail_check = self._tail_check
        return view.proposed_by(index_proposer(index, delta.ids, tail_check, self._count_untrusted))

    def keep_forward(self, tx: Transaction, view: SlotVectors) -> None:
        """Start bringing the saved index forward when it is due, as :meth:`attach` does, searching nothing
        (links do not search the index, but a worker's writes are what make it due)."""
        with self._lock:
            self._caught_up(tx, view)

    def _caught_up(self, tx: Transaction, view: SlotVectors) -> tuple[HnswIndex, _Delta] | None:
        """The usable index and the writes since it, as of ``tx``, with maintenance started when due
        (self._lock held); None below min_images or while no usable index is saved."""
        images = len(view)
        if images < self.min_images:
            return None
        index = self._opened(view.dim)
        revision = tx.revision()
        if index is None or self._index_store_id != store_identity(tx) or index.revision > revision:
            self._maintain_soon(view.dim)
            return None  # exact until the index is (re)built
        if self._delta is None or self._delta.base != index.revision or self._delta.upto > revision:
            self._delta = _Delta(index.revision)
        delta = self._delta
        delta.catch_up(tx, revision)
        if len(delta) > delta_bound(images):
            self._maintain_soon(view.dim)
        return index, delta

    def _count_untrusted(self) -> None:
        with self._lock:
            self.untrusted += 1

    def _opened(self, dim: int) -> HnswIndex | None:
        """The saved index as a shared view (re-opened when the files changed); None if unusable."""
        stamp = self._files_stamp()
        if stamp == self._stamp and (self._index is None or self._index.dim == dim):
            return self._index
        self._index, self._stamp, self._delta, self._tail_check = None, stamp, None, None
        if stamp is None:
            return None
        try:
            self._index = HnswIndex.open(self.directory, dim, view=True)
            self._index_store_id = bytes.fromhex((self.directory / IDENTITY_FILE).read_text().strip())
        except (IndexFileUnusable, OSError, ValueError) as exc:
            self._index = None
            log.info("ann_index_unusable", directory=str(self.directory), reason=str(exc))
        return self._index

    def _files_stamp(self) -> tuple[object, ...] | None:
        stamp = []
        for name in ("current.json", IDENTITY_FILE):
            try:
                status = os.stat(self.directory / name)
            except FileNotFoundError:
                return None
            stamp.append((status.st_dev, status.st_ino, status.st_mtime_ns, status.st_size))
        return tuple(stamp)

    # -- maintenance --------------------------------------------------------------------

    def _maintain_soon(self, dim: int) -> None:
        """Start the maintenance thread unless it runs, or failed recently (self._lock held)."""
        if self._worker is not None and self._worker.is_alive():
            return
        if time.monotonic() < self._next_try_at or self._stopping.is_set():
            return
        self._worker = threading.Thread(target=self._maintain_idle, args=(dim,), name="imgwatch-ann-index",
                                        daemon=True)
        self._worker.start()

    def _maintain_idle(self, dim: int) -> None:
        """The background maintenance, on cores the process's own work leaves idle: links no longer
        need the index, so a first ingest must not slow down for it (on 2 cores it halved the rate
        from 100k images, bench/RESULTS.md issue 26); searches meanwhile scan the writes since it."""
        run_when_idle()
        self._maintain(dim)

    def wait_for_maintenance(self, timeout: float | None = None) -> None:
        """Until this process's maintenance thread (if any) is done: tests and the bench use it."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)

    def maintain_now(self, dim: int) -> bool:
        """Bring the saved index forward in this thread; False if another process is doing it."""
        return self._maintain(dim)

    def _maintain(self, dim: int) -> bool:
        try:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            self._failed(exc)
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._next_try_at = time.monotonic() + RETRY_WHILE_BUSY_SECONDS
                return False  # another process is bringing it forward
            database = Database(self.db_path)
            try:
                self._bring_forward(database, dim)
            finally:
                database.close()
            return True
        except _Stopped:
            return False
        except Exception as exc:  # a cache: searching goes on exactly, and it is retried later
            self._failed(exc)
            return False
        finally:
            os.close(fd)

    def _failed(self, exc: BaseException) -> None:
        self._next_try_at = time.monotonic() + RETRY_AFTER_FAILURE_SECONDS
        log.warning("ann_index_not_updated", directory=str(self.directory), reason=str(exc),
                    detail="searches stay exact or scan the writes since the saved index; retried later")

    def _bring_forward(self, database: Database, dim: int) -> None:
        """With the maintenance lock held: update the saved index to SQLite's revision, or build it."""
        started = time.monotonic()
        self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.directory.glob(".*.tmp"):  # of a process that died saving
            leftover.unlink(missing_ok=True)
        with database.read() as tx:
            identity, revision = store_identity(tx), tx.revision()
        index, reason = self._saved_for(identity, revision, dim)
        if index is None:
            index = HnswIndex.build(dim, self._all_rows(database, dim), revision, threads=BUILD_THREADS)
            added, removed = len(index), 0
        else:
            with database.read() as tx:
                revision = tx.revision()
                gone = [row[0] for row in tx.execute("SELECT id FROM tombstones WHERE rev > ?", (index.revision,))]
                removed = index.remove(gone)
                added = 0
                cursor = tx.execute("SELECT id, embedding FROM images WHERE rev > ?", (index.revision,))
                while page := cursor.fetchmany(BUILD_CHUNK):
                    self._check_stopping()
                    index.add(*_unpacked(page, dim, tx), threads=BUILD_THREADS)
                    added += len(page)
            index.revision = revision
        self._check_stopping()
        index.save(self.directory)
        identity_path = self.directory / IDENTITY_FILE
        if not identity_path.exists() or identity_path.read_text().strip() != identity.hex():
            # Written after the save: a crash in between leaves a mismatch, i.e. a rebuild, never trust.
            temporary = self.directory / f".{IDENTITY_FILE}.{os.getpid()}.tmp"
            temporary.write_text(identity.hex() + "\n")
            os.replace(temporary, identity_path)
        self.saves += 1
        log.info("ann_index_saved", directory=str(self.directory), reason=reason, revision=revision,
                 images=len(index), added=added, removed=removed, seconds=round(time.monotonic() - started, 2))

    def _saved_for(self, identity: bytes, revision: int, dim: int) -> tuple[HnswIndex | None, str]:
        """The saved index as a writable copy if it can be brought forward, else None and why not."""
        try:
            saved_identity = bytes.fromhex((self.directory / IDENTITY_FILE).read_text().strip())
        except (OSError, ValueError):
            return None, "built: no saved index (or no store identity beside it)"
        if saved_identity != identity:
            return None, "built: index of another store"
        try:
            index = HnswIndex.open(self.directory, dim, view=False)
        except IndexFileUnusable as exc:
            return None, f"built: {exc}"
        if index.revision > revision:
            return None, f"built: index at revision {index.revision}, ahead of the store's {revision}"
        return index, "updated"

    def _all_rows(self, database: Database, dim: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every stored (ids, vectors) in id order, one short read transaction per chunk.

        Rows changed after the build's revision are in the next delta anyway, so the
        chunks need not be one snapshot (a long read would hold back SQLite's checkpoints).
        """
        after = 0
        while True:
            self._check_stopping()
            with database.read() as tx:
                page = tx.execute("SELECT id, embedding FROM images WHERE id > ? ORDER BY id LIMIT ?",
                                  (after, BUILD_CHUNK)).fetchall()
                if not page:
                    return
                ids, vectors = _unpacked(page, dim, tx)
            yield ids, vectors
            after = page[-1][0]

    def _check_stopping(self) -> None:
        if self._stopping.is_set():
            raise _Stopped

    def close(self, timeout: float = 10.0) -> None:
        """Stop maintenance at its next step (nothing half-saved is left in use) and drop the view."""
        self._stopping.set()
        self.wait_for_maintenance(timeout)
        with self._lock:
            self._index, self._stamp, self._delta, self._tail_check = None, None, None, None


def candidates_for(k: int) -> int:
    """Candidates asked of the index per query for a top ``k``, to be re-scored exactly."""
    return max(candidate_count(k), MIN_CANDIDATES)


def run_when_idle() -> None:
    """Give the calling thread (and threads it starts) the lowest CPU priority: Linux schedules
    threads one by one, so only this thread yields to the process's others and to other processes."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), IDLE_NICENESS)
    except OSError as exc:  # not allowed here (a sandbox): it only runs at the usual priority
        log.info("ann_index_priority_unchanged", reason=str(exc))


def index_proposer(index: HnswIndex, shared: np.ndarray, tail_check: TailCheck,
                   on_untrusted: Callable[[], None] = lambda: None) -> Proposer:
    """Candidates from ``index`` plus the ``shared`` ids for every query, trusted per ``tail_check``
    (its bars for a batch in one product: a link batch or a model switch asks for thousands)."""

    def propose(queries: np.ndarray, k: int, exclude_ids: Sequence[Collection[int]] | None,
                floor: float) -> Proposal:
        bars = tail_check.bars(queries)

        def trusted(row: int, needed: float) -> bool:
            if np.isfinite(needed) and needed > bars[row]:
                return True
            on_untrusted()
            return False

        return Proposal(index.candidates(queries, candidates_for(k), exclude_ids), shared, trusted)

    return propose


class TailCheck:
    """Whether a score is far out in the tail of a query's scores against the library.

    The reference is a fixed random sample of the library's vectors (copied: the shared
    mapping may move), drawn once per opened index; seeded, so answers are repeatable.
    """

    def __init__(self, view: SlotVectors) -> None:
        ids = view.ids()
        chosen = np.random.default_rng(0).choice(ids, size=min(REFERENCE_IMAGES, len(ids)), replace=False)
        self._reference = view.vectors(np.sort(chosen))

    def bars(self, queries: np.ndarray) -> np.ndarray:
        """Per query (a row), the score an answer must stay above to be far out in its tail: the
        mean of its scores against the reference plus TRUSTED_FROM_SD standard deviations
        (infinite, i.e. never, without a reference to tell)."""
        queries = np.asarray(queries, dtype=np.float32).reshape(-1, self._reference.shape[1])
        if len(self._reference) < 2:
            return np.full(len(queries), np.inf)
        scores = queries @ self._reference.T
        bars: np.ndarray = scores.mean(axis=1) + TRUSTED_FROM_SD * scores.std(axis=1)
        return bars


class _Stopped(Exception):
    """The store was closed during maintenance."""


def _unpacked(page: list[tuple[int, bytes]], dim: int, tx: Transaction) -> tuple[np.ndarray, np.ndarray]:
    ids, blobs = checked_rows(page, dim, tx)
    vectors = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(page), dim)
    return np.asarray(ids, dtype=np.int64), vectors
