"""The data dir: where the embedded store, the embedded queue, the run lock and exported engines live.

One place names every file in it, so the queue server, the store and the CLI agree
on the layout without importing each other.

The data dir is private to its user: folders 0700, files 0600. :func:`private_umask`
makes every file imgwatch (and the Valkey server it starts) creates so; a data dir or
queue dir that an older version or a hand-made folder left open is closed on use.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from imgwatch.errors import AlreadyRunning, DataDirUnusable
from imgwatch.log import get_logger

EMBEDDED_DB_NAME = "store.sqlite3"
PRIVATE_UMASK = 0o077  # no group or other bits: folders 0700, files 0600

log = get_logger("imgwatch.datadir")


_user_umask: int | None = None  # the umask this process started with, before private_umask()


def private_umask() -> None:
    """Make this process (and what it starts) create files private to its user.

    Called where the CLI starts and whenever the data dir is used; it only adds bits
    to the umask, so a stricter one stays.
    """
    global _user_umask
    current = os.umask(PRIVATE_UMASK)
    if _user_umask is None:
        _user_umask = current
    os.umask(current | PRIVATE_UMASK)


def as_the_user_would_create(path: str | os.PathLike[str]) -> None:
    """Give a file the user asked for outside the data dir (a contact sheet) the mode their own
    umask gives, not the private one imgwatch runs with."""
    if _user_umask is not None:
        os.chmod(path, 0o666 & ~_user_umask)


class DataDir:
    """The layout of one data dir (nothing is created until asked)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @property
    def store_file(self) -> Path:
        return self.path / EMBEDDED_DB_NAME

    @property
    def queue_dir(self) -> Path:
        return self.path / "queue"

    @property
    def queue_socket(self) -> Path:
        return self.queue_dir / "redis.sock"

    @property
    def engine_cache(self) -> Path:
        """Inference engines exported from the model (ONNX files), made once and shared by every process."""
        return self.path / "engines"

    @property
    def cleanups(self) -> Path:
        """The manifests of clean-ups of duplicates (what moved where), for --undo and to finish one a kill stopped."""
        return self.path / "moves"

    @property
    def run_lock_file(self) -> Path:
        return self.path / "run.lock"

    def create(self) -> Path:
        """Make sure the data dir exists and is private; DataDirUnusable says why it cannot."""
        private_umask()
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise DataDirUnusable(
                f"cannot use data dir {self.path}: {exc.strerror}; "
                "fix general.data_dir (--data-dir, IMGWATCH_GENERAL_DATA_DIR)"
            ) from None
        _make_private(self)
        return self.path

    def own_files(self) -> list[Path]:
        """imgwatch's files directly in the data dir (the store with its WAL, the run lock)."""
        try:
            names = os.listdir(self.path)
        except OSError:
            return []
        return [self.path / name for name in names
                if name.startswith(EMBEDDED_DB_NAME) or name == self.run_lock_file.name]

    def create_queue_dir(self) -> Path:
        """The embedded queue's folder, created private (its server inherits the umask)."""
        self.create()
        try:
            self.queue_dir.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise DataDirUnusable(f"cannot create {self.queue_dir}: {exc.strerror}") from None
        return self.queue_dir

    @contextlib.contextmanager
    def exclusive_run_lock(self) -> Iterator[None]:
        """One `imgwatch run` (or migration) per data dir: it owns the embedded queue there."""
        self.create()
        try:
            handle = open(self.run_lock_file, "a+")  # not "w": a refused second run must not wipe the owner's pid
        except OSError as exc:
            raise DataDirUnusable(
                f"cannot use data dir {self.path}: {exc.strerror}; "
                "fix general.data_dir (--data-dir, IMGWATCH_GENERAL_DATA_DIR)"
            ) from None
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AlreadyRunning(
                    f"another `imgwatch run` is already using {self.path}; "
                    "stop it first or pass a different --data-dir"
                ) from None
            handle.truncate(0)
            handle.write(str(os.getpid()))
            handle.flush()
            yield


def _queue_files(queue_dir: Path) -> list[Path]:
    """Everything in the embedded queue's folder (a handful of the server's files), if it is one."""
    if not any((queue_dir / name).exists() for name in ("valkey.log", "appendonlydir")):
        return []
    found: list[Path] = []
    for current, dirs, files in os.walk(queue_dir):
        found.extend(Path(current, name) for name in [*dirs, *files])
    return found


def _make_private(data_dir: DataDir) -> None:
    """Close the data dir and queue dir if group or others can enter them, and imgwatch's files in them.

    Only imgwatch's own files (the store, the run lock, what is in the queue dir), only what
    belongs to this user, and never a shared folder (sticky bit, like /tmp): a data dir
    pointed at such a place is left alone with a warning instead.
    """
    tightened: list[str] = []
    for folder, contents in ((data_dir.path, data_dir.own_files),
                             (data_dir.queue_dir, lambda: _queue_files(data_dir.queue_dir))):
        try:
            info = folder.stat()
        except OSError:
            continue  # not there (yet), or unusable: create() or the store says so
        if not info.st_mode & 0o077:
            continue
        if info.st_uid != os.geteuid() or info.st_mode & stat.S_ISVTX:
            log.warning("data_dir_not_private", path=str(folder), mode=oct(stat.S_IMODE(info.st_mode)),
                        note="shared or not ours: left as it is; use a folder of your own for general.data_dir")
            continue
        tightened.extend(str(path) for path in [folder, *contents()] if _chmod_private(path))
    if tightened:
        log.warning("data_dir_made_private", paths=len(tightened), first=tightened[0],
                    note="group and others could read imgwatch's files; now only you can")


def _chmod_private(path: Path) -> bool:
    try:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode) or not info.st_mode & 0o077 or info.st_uid != os.geteuid():
            return False
        path.chmod(stat.S_IMODE(info.st_mode) & 0o700)
    except OSError:
        return False
    return True
