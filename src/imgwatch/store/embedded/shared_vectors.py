"""The store's embeddings in memory-mapped files beside the SQLite file: one copy per machine.

Every process that searches the store (workers, the CLI, the web server) maps the same
files, so the vectors sit once in the kernel's page cache and a new process searches
without loading anything.

Files, beside ``store.sqlite3``:

- ``store.sqlite3.vectors``: a 4 KiB header, then one row of ``dim`` float32 values per
  slot; slot ``i`` holds the embedding of SQLite image id ``i`` (ids are never reused).
  It grows in large steps (sparse ``ftruncate``); readers remap when it outgrew them.
- ``store.sqlite3.vectors-live``: a small header, then one byte per slot, 1 while the slot
  holds a stored image: unused and removed slots never appear in results.
- ``store.sqlite3.vectors-lock``: empty; ``flock`` on it orders access across processes.
  A search holds it shared (rows never change under a scan), a write exclusive. flock,
  not POSIX ``lockf``: two store objects in one process must exclude each other too.

SQLite stays the source of truth. The header records the store revision the files
reflect. After a commit that changes embeddings the writer brings the files up to the
new revision by reading back the rows and tombstones newer than the header's; any
process that finds the files behind does the same, which also repairs a crash between a
commit and the file update (rows are rewritten whole, so applying twice is harmless).
Files that cannot be trusted are rebuilt from SQLite into temporary files renamed into
place, and that is logged: files missing, truncated or damaged, of another embedding
size or another store (an identity kept in SQLite ``meta``), ahead of SQLite's revision
(the SQLite file went back: replaced by an older copy, or lost commits), or written
before the last reboot. Nothing here is fsynced; files from an earlier boot may have lost
some pages in a crash, so they are rebuilt rather than trusted (seconds, once per boot).

Lock order: a caller's SQLite transaction first, then this object's thread lock, then the
file lock; nothing here waits for the SQLite write lock while holding the file lock.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import secrets
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from imgwatch.errors import StoreError
from imgwatch.log import get_logger
from imgwatch.store.batching import PAGE_SIZE
from imgwatch.store.embedded.sqlite import Transaction
from imgwatch.store.embedded.vectors import SlotVectors

log = get_logger("imgwatch.store")

FORMAT_VERSION = 1
HEADER_BYTES = 4096  # rows start page-aligned
LIVE_OFFSET = 64
SLOT_STEP = 16384  # files grow by at least half their capacity, in whole steps of this many slots

_VECTORS_MAGIC = b"IMGWVEC\x00"
_LIVE_MAGIC = b"IMGWLIV\x00"
# magic, format, dim, revision, slots, store id, boot id, generation; then a crc32 of those
_HEADER = struct.Struct("<8sIIqQ16s16s16s")
_CRC = struct.Struct("<I")
_LIVE_HEADER = struct.Struct("<8s16s")  # magic, generation (the vectors file's)

STORE_ID_KEY = "store_id"  # meta key: this SQLite file's identity, which the files must carry
PREVIOUS_STORE_ID_KEY = "previous_store_id"  # the identity before the last renew_store_identity
_NO_STORE_ID = bytes(16)  # a store written by an imgwatch that kept no identity yet

BEHIND = "behind"  # the one problem a catch-up repairs; every other one needs a rebuild
SWITCHED = "of the vectors before the model was switched"  # switch_space renewed the identity
_ROUTINE_REBUILDS = ("written before the last reboot", "store identity recorded", SWITCHED)  # not worth a warning
_MAX_REPAIRS = 5


def record_store_identity(tx: Transaction) -> None:
    """Give the store an identity on its first write (a write transaction; idempotent)."""
    tx.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (STORE_ID_KEY, secrets.token_hex(16)))


def renew_store_identity(tx: Transaction) -> None:
    """A new identity (a write transaction): the vector files and the HNSW index of the vectors
    before it are rebuilt by whoever finds them, as when the model is switched (switch_space).
    The one before is kept, so that files still carrying it are known for what they are."""
    tx.execute("INSERT OR REPLACE INTO meta (key, value) SELECT ?, value FROM meta WHERE key = ?",
               (PREVIOUS_STORE_ID_KEY, STORE_ID_KEY))
    tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (STORE_ID_KEY, secrets.token_hex(16)))


def store_identity(tx: Transaction) -> bytes:
    """This SQLite file's identity (zeros before its first write recorded one)."""
    row = tx.execute("SELECT value FROM meta WHERE key = ?", (STORE_ID_KEY,)).fetchone()
    if row is None:
        return _NO_STORE_ID
    try:
        return bytes.fromhex(str(row[0]))
    except ValueError:
        raise StoreError(f"store {tx.path} is damaged: meta {STORE_ID_KEY!r} is {row[0]!r}") from None


def _boot_id() -> bytes:
    try:
        return uuid.UUID(Path("/proc/sys/kernel/random/boot_id").read_text().strip()).bytes
    except (OSError, ValueError):
        return bytes(16)  # no boot id (not Linux): files are trusted across reboots


BOOT_ID = _boot_id()


@dataclass(frozen=True)
class Header:
    dim: int
    revision: int  # the SQLite store revision the files reflect
    slots: int  # one past the highest slot that may be live: searches scan [0, slots)
    store_id: bytes
    boot_id: bytes
    generation: bytes  # random per build; the live file carries the same

    def pack(self) -> bytes:
        fields = _HEADER.pack(_VECTORS_MAGIC, FORMAT_VERSION, self.dim, self.revision, self.slots,
                              self.store_id, self.boot_id, self.generation)
        return fields + _CRC.pack(zlib.crc32(fields))

    @classmethod
    def unpack(cls, data: bytes) -> Header | None:
        """The header in ``data``; None if it is not one this version wrote whole."""
        if len(data) < _HEADER.size + _CRC.size:
            return None
        fields = data[: _HEADER.size]
        if _CRC.unpack_from(data, _HEADER.size)[0] != zlib.crc32(fields):
            return None
        magic, version, dim, revision, slots, store_id, boot_id, generation = _HEADER.unpack(fields)
        if magic != _VECTORS_MAGIC or version != FORMAT_VERSION or dim <= 0:
            return None
        return cls(dim, revision, slots, store_id, boot_id, generation)


@dataclass(frozen=True)
class _Snapshot:
    """What the files must match, read from one SQLite snapshot."""

    dim: int
    revision: int
    store_id: bytes


class _LockFile:
    """The flock that orders access to the files; reopened if the lock file was deleted or replaced."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def acquire(self, mode: int) -> None:
        """Take (or convert to) ``fcntl.LOCK_SH`` or ``fcntl.LOCK_EX``; waits for other processes."""
        while True:
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._fd, mode)
            try:
                current = os.stat(self._path)
            except FileNotFoundError:
                current = None
            held = os.fstat(self._fd)
            if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
                return
            self.close()  # we locked a file nobody else will find: lock the one at the path

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


class _MappedFiles:
    """This process's open descriptors and read-only mappings of one build of the two files."""

    def __init__(self, vectors_path: Path, live_path: Path) -> None:
        self.paths = (vectors_path, live_path)
        self.fds: list[int] = []
        try:
            for path in self.paths:
                self.fds.append(os.open(path, os.O_RDWR))
        except BaseException:
            self.close()
            raise
        self.identity = tuple((s.st_dev, s.st_ino) for s in map(os.fstat, self.fds))
        self._maps: tuple[mmap.mmap, mmap.mmap] | None = None
        self.matrix = np.empty((0, 1), dtype=np.float32)
        self.live = np.empty(0, dtype=np.uint8)

    def is_at_paths(self) -> bool:
        """Whether these are still the files at the paths (not deleted or replaced by a rebuild)."""
        try:
            return tuple((s.st_dev, s.st_ino) for s in map(os.stat, self.paths)) == self.identity
        except FileNotFoundError:
            return False

    def sizes(self) -> tuple[int, int]:
        vectors, live = (os.fstat(fd).st_size for fd in self.fds)
        return vectors, live

    def header(self) -> Header | None:
        return Header.unpack(os.pread(self.fds[0], _HEADER.size + _CRC.size, 0))

    def live_generation(self) -> bytes | None:
        data = os.pread(self.fds[1], _LIVE_HEADER.size, 0)
        if len(data) < _LIVE_HEADER.size:
            return None
        magic, generation = _LIVE_HEADER.unpack(data)
        return generation if magic == _LIVE_MAGIC else None

    def capacity(self, dim: int) -> int:
        """Slots both files have room for, as they are now."""
        vectors, live = self.sizes()
        return max(0, min((vectors - HEADER_BYTES) // (4 * dim), live - LIVE_OFFSET))

    def map(self, dim: int, slots: int) -> None:
        """Map at least ``slots`` rows (remapping the whole files when they grew past the mapping)."""
        if self.matrix.shape == (self.matrix.shape[0], dim) and self.matrix.shape[0] >= slots:
            return
        capacity = self.capacity(dim)
        maps = tuple(mmap.mmap(fd, 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ) for fd in self.fds)
        self.matrix = np.frombuffer(maps[0], dtype="<f4", count=capacity * dim, offset=HEADER_BYTES)
        self.matrix = self.matrix.reshape(capacity, dim)
        self.live = np.frombuffer(maps[1], dtype=np.uint8, count=capacity, offset=LIVE_OFFSET)
        self._maps = maps  # the old mappings go when the last array viewing them does

    def view(self, slots: int) -> SlotVectors:
        return SlotVectors(self.matrix[:slots], self.live[:slots])

    # -- writes (exclusive lock held): pwrite, so a full disk is an error, never a SIGBUS --------

    def write_rows(self, dim: int, ids: Sequence[int], blobs: Sequence[bytes]) -> None:
        """Write embeddings to their slots and mark them live; consecutive ids in one call."""
        order = sorted(range(len(ids)), key=ids.__getitem__)
        for run in _runs([ids[i] for i in order]):
            first = run[0]
            positions = order[: len(run)]
            order = order[len(run):]
            _pwrite_all(self.fds[0], b"".join(blobs[i] for i in positions), HEADER_BYTES + first * 4 * dim)
            _pwrite_all(self.fds[1], b"\x01" * len(run), LIVE_OFFSET + first)

    def mark_dead(self, ids: Sequence[int], capacity: int) -> None:
        for run in _runs(sorted(i for i in ids if 0 <= i < capacity)):
            _pwrite_all(self.fds[1], bytes(len(run)), LIVE_OFFSET + run[0])

    def grow(self, dim: int, needed: int) -> None:
        """Room for ``needed`` slots, in a large step (sparse: unwritten rows take no disk)."""
        capacity = self.capacity(dim)
        if capacity >= needed:
            return
        target = _rounded_capacity(max(needed, capacity + capacity // 2))
        os.ftruncate(self.fds[0], HEADER_BYTES + target * 4 * dim)
        os.ftruncate(self.fds[1], LIVE_OFFSET + target)

    def write_header(self, header: Header) -> None:
        _pwrite_all(self.fds[0], header.pack(), 0)

    def close(self) -> None:
        self._maps = None
        self.matrix = np.empty((0, 1), dtype=np.float32)
        self.live = np.empty(0, dtype=np.uint8)
        for fd in self.fds:
            os.close(fd)
        self.fds = []


class SharedVectors:
    """The memory-mapped vectors of the store at ``db_path``, kept at SQLite's revision.

    Use :meth:`current` inside a transaction of the store's database. Thread-safe (one
    thread at a time; others wait).
    """

    def __init__(self, db_path: Path) -> None:
        self.vectors_path = Path(f"{db_path}.vectors")
        self.live_path = Path(f"{db_path}.vectors-live")
        self._lock_file = _LockFile(Path(f"{db_path}.vectors-lock"))
        self._thread_lock = threading.RLock()
        self._files: _MappedFiles | None = None
        self._checked_count = False  # files compared with SQLite's image count once per opening
        self.rebuilds = 0  # by this object: tests and the bench read it

    @property
    def paths(self) -> tuple[Path, Path]:
        return self.vectors_path, self.live_path

    @contextmanager
    def current(self, tx: Transaction) -> Iterator[SlotVectors | None]:
        """The vectors as of ``tx`` or newer, held still for the ``with`` block; None without a model.

        ``tx`` must not have read anything yet (its snapshot then starts once the files are
        locked, so files ahead of it mean SQLite went back) or be a write transaction.
        Catches up or rebuilds the files first when needed. The view may hold ids newer
        than ``tx`` sees: callers resolve ids through SQLite and drop the unknown ones.
        """
        with self._thread_lock:
            try:
                self._lock_file.acquire(fcntl.LOCK_SH)
            except OSError as exc:
                raise StoreError(f"cannot lock vector files {self.vectors_path}: {exc}") from exc
            try:
                snapshot = _read_snapshot(tx)
                try:
                    view = None if snapshot is None else self._usable(tx, snapshot)
                except OSError as exc:  # say, a full disk while catching up
                    raise StoreError(f"vector files {self.vectors_path}: {exc}") from exc
                yield view
            finally:
                self._lock_file.release()

    def close(self) -> None:
        with self._thread_lock:
            self._close_files()
            self._lock_file.close()

    # -- checks and repairs ---------------------------------------------------------------

    def _usable(self, tx: Transaction, snapshot: _Snapshot) -> SlotVectors:
        """With the shared lock held: the files' view, after any repair (which converts the lock)."""
        fresh = True  # the snapshot started under this hold of the lock
        for _ in range(_MAX_REPAIRS):
            problem = self._problem(tx, snapshot, fresh)
            if problem is None:
                files, header = self._files, self._header()
                assert files is not None and header is not None
                files.map(snapshot.dim, header.slots)
                return files.view(header.slots)
            generation = self._generation()
            self._lock_file.acquire(fcntl.LOCK_EX)  # converted, not atomically: re-check under it
            try:
                self._repair(tx, snapshot, problem, generation)
            finally:
                self._lock_file.acquire(fcntl.LOCK_SH)
            fresh = False
        raise StoreError(f"vector files {self.vectors_path} keep changing under this process; try again")

    def _problem(self, tx: Transaction, snapshot: _Snapshot, fresh: bool) -> str | None:
        """Why the files cannot serve ``snapshot`` (BEHIND, or a reason to rebuild); None if they can."""
        if self._files is not None and not self._files.is_at_paths():
            self._close_files()
        if self._files is None:
            try:
                self._files = _MappedFiles(self.vectors_path, self.live_path)
            except FileNotFoundError:
                return "missing"
            self._checked_count = False
        header = self._header()
        if header is None:
            return "damaged header"
        if header.generation != self._files.live_generation():
            return "vectors and live flags from different builds"
        if header.store_id != snapshot.store_id:
            # Zeros: written before the store had an identity (its first write records one).
            if header.store_id == _NO_STORE_ID:
                return "store identity recorded"
            previous = tx.execute("SELECT value FROM meta WHERE key = ?", (PREVIOUS_STORE_ID_KEY,)).fetchone()
            switched = previous is not None and previous[0] == header.store_id.hex()
            return SWITCHED if switched else "files of another store"
        if header.boot_id != BOOT_ID:
            return "written before the last reboot"
        if header.dim != snapshot.dim:
            return f"embedding size {header.dim}, the store's is {snapshot.dim}"
        if self._files.capacity(header.dim) < header.slots:
            return "truncated"
        if header.revision > snapshot.revision and fresh:
            return f"at revision {header.revision}, ahead of the store's {snapshot.revision}"
        if header.revision < snapshot.revision:
            return BEHIND
        if header.revision == snapshot.revision and not self._checked_count:
            stored = tx.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            self._files.map(header.dim, header.slots)
            live = int(np.count_nonzero(self._files.live[: header.slots]))
            if live != stored:
                return f"{live} live slots for {stored} images"
            self._checked_count = True
        return None

    def _repair(self, tx: Transaction, snapshot: _Snapshot, problem: str, generation: bytes | None) -> None:
        """With the exclusive lock held: catch up or rebuild, unless another process did meanwhile."""
        now = self._problem(tx, snapshot, fresh=False)
        if now is None and problem != BEHIND and self._generation() == generation:
            now = problem  # found while the snapshot was fresh, and nobody rebuilt since
        if now is None:
            return
        if now == BEHIND:
            self._catch_up(tx, snapshot)
        else:
            self._rebuild(tx, snapshot, now)

    def _catch_up(self, tx: Transaction, snapshot: _Snapshot) -> None:
        """Apply the rows and tombstones newer than the header's revision, then advance it."""
        files, header = self._files, self._header()
        assert files is not None and header is not None
        dim, slots = header.dim, header.slots
        # Tombstones first: a row still present in this snapshot is alive, whatever its past.
        gone = [row[0] for row in tx.execute("SELECT id FROM tombstones WHERE rev > ?", (header.revision,))]
        files.mark_dead(gone, files.capacity(dim))
        cursor = tx.execute("SELECT id, embedding FROM images WHERE rev > ?", (header.revision,))
        while page := cursor.fetchmany(PAGE_SIZE):
            ids, blobs = checked_rows(page, dim, tx)
            files.grow(dim, max(ids) + 1)
            files.write_rows(dim, ids, blobs)
            slots = max(slots, max(ids) + 1)
        files.write_header(replace(header, revision=snapshot.revision, slots=slots))

    def _rebuild(self, tx: Transaction, snapshot: _Snapshot, reason: str) -> None:
        """Write both files from ``tx`` into temporary files and rename them into place."""
        started = time.monotonic()
        self._remove_leftovers()
        self._close_files()
        max_id = tx.execute("SELECT max(id) FROM images").fetchone()[0] or 0
        slots = max_id + 1
        generation = secrets.token_bytes(16)
        suffix = f".tmp-{os.getpid()}-{secrets.token_hex(4)}"
        temporary = [Path(f"{path}{suffix}") for path in self.paths]
        try:
            for path in temporary:
                os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
            files = _MappedFiles(*temporary)
            try:
                files.grow(snapshot.dim, _rounded_capacity(slots + slots // 4))
                count = 0
                cursor = tx.execute("SELECT id, embedding FROM images")
                while page := cursor.fetchmany(PAGE_SIZE):
                    ids, blobs = checked_rows(page, snapshot.dim, tx)
                    files.write_rows(snapshot.dim, ids, blobs)
                    count += len(ids)
                _pwrite_all(files.fds[1], _LIVE_HEADER.pack(_LIVE_MAGIC, generation), 0)
                files.write_header(Header(snapshot.dim, snapshot.revision, slots, snapshot.store_id, BOOT_ID,
                                          generation))
            finally:
                files.close()
            # Live flags first: until the vectors file follows, the generations differ and
            # an opener waits for this lock, then finds both new.
            for path, target in zip(temporary, self.paths, strict=True):
                os.replace(path, target)
        except OSError as exc:
            for path in temporary:
                path.unlink(missing_ok=True)
            raise StoreError(f"cannot write vector files {self.vectors_path}: {exc}") from exc
        finally:
            self._close_files()
        self.rebuilds += 1
        # Once per rebuild, and only by the process that rebuilt: the others find good files.
        seconds = round(time.monotonic() - started, 2)
        if reason == "missing":
            log.info("vector_files_created", file=str(self.vectors_path), images=count, seconds=seconds)
        else:
            report = log.info if reason in _ROUTINE_REBUILDS else log.warning
            report("vector_files_rebuilt", file=str(self.vectors_path), reason=reason, images=count,
                   revision=snapshot.revision, seconds=seconds)

    # -- small parts ------------------------------------------------------------------------

    def _header(self) -> Header | None:
        return None if self._files is None else self._files.header()

    def _generation(self) -> bytes | None:
        header = self._header()
        return None if header is None else header.generation

    def _close_files(self) -> None:
        if self._files is not None:
            files, self._files = self._files, None
            files.close()

    def _remove_leftovers(self) -> None:
        """Temporary files of rebuilds that died (the exclusive lock is held: none is running)."""
        for path in self.paths:
            for leftover in path.parent.glob(f"{path.name}.tmp-*"):
                leftover.unlink(missing_ok=True)


def _read_snapshot(tx: Transaction) -> _Snapshot | None:
    recorded = tx.recorded_model()
    if recorded is None:
        return None
    return _Snapshot(recorded[1], tx.revision(), store_identity(tx))


def checked_rows(page: list[tuple[int, bytes]], dim: int, tx: Transaction) -> tuple[list[int], list[bytes]]:
    """A page of (id, embedding blob) rows split in two, refusing a blob that is not ``dim`` float32 values."""
    ids = [image_id for image_id, _ in page]
    blobs = [blob for _, blob in page]
    if any(len(blob) != 4 * dim for blob in blobs):
        raise StoreError(f"store {tx.path} holds an embedding that is not {dim} float32 values")
    return ids, blobs


def _runs(ids: Sequence[int]) -> Iterator[list[int]]:
    """Sorted ids cut into runs of consecutive values."""
    run: list[int] = []
    for vector_id in ids:
        if run and vector_id != run[-1] + 1:
            yield run
            run = []
        run.append(vector_id)
    if run:
        yield run


def _rounded_capacity(slots: int) -> int:
    return max(SLOT_STEP, -(-slots // SLOT_STEP) * SLOT_STEP)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
