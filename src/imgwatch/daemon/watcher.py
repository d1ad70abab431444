"""watchdog observers and the handler that turns their events into settler calls."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Sequence

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserver

from imgwatch.daemon.settler import Settler
from imgwatch.errors import WatchError
from imgwatch.files import PathFilter, root_of, walk_images
from imgwatch.log import get_logger

log = get_logger("imgwatch.daemon")


class EventRouter(FileSystemEventHandler):
    """Routes watchdog events for image files to the settler.

    Directories removed or moved away are collected in ``removed_dirs``: the
    daemon turns each into the stored paths below it.
    """

    def __init__(self, settler: Settler, path_filter: PathFilter, roots: Sequence[str]) -> None:
        self.settler = settler
        self.path_filter = path_filter
        self.roots = list(roots)
        self._lock = threading.Lock()
        self._removed_dirs: list[str] = []

    def take_removed_dirs(self) -> list[str]:
        with self._lock:
            dirs, self._removed_dirs = self._removed_dirs, []
        return dirs

    def _accepts(self, path: str) -> bool:
        root = root_of(path, self.roots)
        return root is not None and self.path_filter.accepts(path, root)

    def _dir_watched(self, path: str) -> bool:
        root = root_of(path, self.roots)
        if root is None:
            return False
        relative = os.path.relpath(path, root)
        return relative == "." or not any(
            self.path_filter.is_excluded_name(part) for part in relative.split(os.sep)
        )

    def _arrived_dir(self, path: str) -> None:
        if self._dir_watched(path):
            for file_path, _ in walk_images(path, self.path_filter):
                self.settler.closed(file_path)

    def _left_dir(self, path: str) -> None:
        with self._lock:
            self._removed_dirs.append(path)

    def on_any_event(self, event: FileSystemEvent) -> None:
        # An empty side of a move is outside every watched root (full inotify events).
        src = os.fsdecode(event.src_path)
        if isinstance(event, FileMovedEvent):
            dest = os.fsdecode(event.dest_path)
            if src and self._accepts(src):
                self.settler.gone(src)
            if dest and self._accepts(dest):
                self.settler.closed(dest)  # a rename into place is a finished file
        elif isinstance(event, DirMovedEvent):
            dest = os.fsdecode(event.dest_path)
            if src:
                self._left_dir(src)
            if dest:
                self._arrived_dir(dest)
        elif isinstance(event, DirCreatedEvent):
            # Files copied in with the folder may predate the watch on it.
            self._arrived_dir(src)
        elif isinstance(event, DirDeletedEvent):
            self._left_dir(src)
        elif not self._accepts(src):
            return
        elif isinstance(event, FileClosedEvent) or (event.is_synthetic and isinstance(event, FileCreatedEvent)):
            # A synthetic "created" stands for a file found inside a folder that arrived whole.
            self.settler.closed(src)
        elif isinstance(event, (FileCreatedEvent, FileModifiedEvent)):
            self.settler.written(src)
        elif isinstance(event, FileDeletedEvent):
            self.settler.gone(src)


def make_observer(kind: str, polling_interval: float) -> BaseObserver:
    if kind == "polling":
        return PollingObserver(timeout=polling_interval)
    from watchdog.observers.inotify import InotifyObserver

    # Full events report a move in from outside a root as a move (a finished file),
    # not as a "created" file whose writer we would wait for.
    return InotifyObserver(generate_full_events=True)


def start_observer(observer: BaseObserver, router: EventRouter, roots: Sequence[str]) -> dict[str, ObservedWatch]:
    """Watch every root recursively; on WatchError the observer is stopped (it may own threads already)."""
    try:
        watches = {}
        for root in roots:
            if not os.path.isdir(root):
                raise WatchError(f"cannot watch {root}: it is not a directory (create it or fix `general.roots`)")
            try:
                watches[root] = observer.schedule(router, root, recursive=True)
            except OSError as exc:
                raise _explain(exc, root) from None
        try:
            observer.start()
        except OSError as exc:
            raise _explain(exc, ", ".join(roots)) from None
    except WatchError:
        observer.stop()
        raise
    return watches


def _explain(exc: OSError, where: str) -> WatchError:
    if exc.errno == errno.ENOSPC:
        return WatchError(
            f"cannot watch {where}: the inotify watch limit is reached; raise it "
            "(sysctl fs.inotify.max_user_watches=524288) or set watch.observer = \"polling\""
        )
    if exc.errno == errno.EMFILE:
        return WatchError(
            f"cannot watch {where}: too many inotify instances; raise fs.inotify.max_user_instances "
            "or set watch.observer = \"polling\""
        )
    return WatchError(f"cannot watch {where}: {exc.strerror or exc}")
