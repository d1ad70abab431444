"""The data dir: where the embedded store, the embedded queue and the run lock live.

One place names every file in it, so the queue server, the store and the CLI agree
on the layout without importing each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from imgwatch.errors import AlreadyRunning, DataDirUnusable

EMBEDDED_DB_NAME = "store.sqlite3"


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
    def run_lock_file(self) -> Path:
        return self.path / "run.lock"

    def create(self) -> Path:
        """Make sure the data dir exists; DataDirUnusable says why it cannot."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataDirUnusable(
                f"cannot use data dir {self.path}: {exc.strerror}; "
                "fix general.data_dir (--data-dir, IMGWATCH_GENERAL_DATA_DIR)"
            ) from None
        return self.path

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
