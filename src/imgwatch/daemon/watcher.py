"""watchdog observers and the handler that turns their events into settler calls.

On inotify the observer is :class:`~imgwatch.daemon.inotify.ReportingInotifyObserver`,
which also reports lost events and unwatchable folders (see that module for why and how).
"""

from __future__ import annotations

import errno
import os
import threading
from collections import deque
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

from imgwatch.daemon.moves import moved_along
from imgwatch.daemon.notices import Notice, watch_limit_advice
from imgwatch.daemon.settler import Settler
from imgwatch.errors import WatchError
from imgwatch.files import PathFilter, resolves_inside, root_of, walk_images


class EventRouter(FileSystemEventHandler):
    """Routes watchdog events for image files to the settler.

    Directories removed or moved away are collected in ``removed_dirs``: the
    daemon turns each into the stored paths below it. Files and folders moved
    from one watched place to another are collected in ``moves``: the store renames
    them (no re-embedding). Roots that lost events and folders that could not be
    watched are collected for the daemon as well.
    """

    def __init__(self, settler: Settler, path_filter: PathFilter, roots: Sequence[str]) -> None:
        self.settler = settler
        self.path_filter = path_filter
        self.roots = list(roots)
        self._lock = threading.Lock()
        self._removed_dirs: list[str] = []
        self._moves: list[tuple[str, str]] = []
        # Folder moves seen lately: watchdog follows one with a synthetic move for everything
        # inside it (inotify), which the folder's move already covers.
        self._folder_moves: deque[tuple[str, str]] = deque(maxlen=64)
        self._lost_roots: list[str] = []
        self._unwatchable: list[str] = []

    def take_removed_dirs(self) -> list[str]:
        with self._lock:
            dirs, self._removed_dirs = self._removed_dirs, []
        return dirs

    def take_moves(self) -> list[tuple[str, str]]:
        """(old, new) of the files and folders moved within the watched roots since the last call, in order."""
        with self._lock:
            moves, self._moves = self._moves, []
        return moves

    def take_lost_roots(self) -> list[str]:
        """Roots whose events were lost since the last call (each once)."""
        with self._lock:
            roots, self._lost_roots = self._lost_roots, []
        return list(dict.fromkeys(roots))

    def take_unwatchable(self) -> list[str]:
        """Folders that could not be watched since the last call."""
        with self._lock:
            folders, self._unwatchable = self._unwatchable, []
        return folders

    def on_events_lost(self, event: FileSystemEvent) -> None:
        with self._lock:
            self._lost_roots.append(os.fsdecode(event.src_path))

    def on_folder_unwatchable(self, event: FileSystemEvent) -> None:
        with self._lock:
            self._unwatchable.append(os.fsdecode(event.src_path))

    def _accepts(self, path: str) -> bool:
        root = root_of(path, self.roots)
        if root is None or not self.path_filter.accepts(path, root):
            return False
        return not os.path.islink(path) or resolves_inside(path, self.roots)  # the link rule (files.py)

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
            for file_path, _ in walk_images(path, self.path_filter, self.roots):
                self.settler.closed(file_path)

    def _left_dir(self, path: str) -> None:
        with self._lock:
            self._removed_dirs.append(path)

    def _moved(self, old: str, new: str, *, folder: bool, synthetic: bool) -> None:
        with self._lock:
            if synthetic and any(moved_along(old, new, f_old, f_new) for f_old, f_new in self._folder_moves):
                return
            self._moves.append((old, new))
            if folder:
                self._folder_moves.append((old, new))

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, Notice):
            return  # reports, not file events: see on_events_lost / on_folder_unwatchable
        # An empty side of a move is outside every watched root (full inotify events).
        src = os.fsdecode(event.src_path)
        if isinstance(event, FileMovedEvent):
            dest = os.fsdecode(event.dest_path)
            from_here, to_here = bool(src) and self._accepts(src), bool(dest) and self._accepts(dest)
            if from_here and to_here:  # the move job renames it in the store, then indexes both names
                self._moved(src, dest, folder=False, synthetic=event.is_synthetic)
            elif from_here:  # moved out of the roots (or out of sight): a delete
                self.settler.gone(src)
            elif to_here and not event.is_synthetic:  # a synthetic one's folder was walked as a whole
                self.settler.closed(dest)  # a rename into place is a finished file
        elif isinstance(event, DirMovedEvent):
            dest = os.fsdecode(event.dest_path)
            if src and dest and self._dir_watched(src) and self._dir_watched(dest):
                self._moved(src, dest, folder=True, synthetic=event.is_synthetic)
            else:  # moved in from outside: new files; moved out: deleted ones
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
        elif isinstance(event, FileClosedEvent) or (
            isinstance(event, FileCreatedEvent) and (event.is_synthetic or os.path.islink(src))
        ):
            # A synthetic "created" stands for a file found inside a folder that arrived whole;
            # a symbolic link is complete once created (no writer, so no close event follows).
            self.settler.closed(src)
        elif isinstance(event, (FileCreatedEvent, FileModifiedEvent)):
            self.settler.written(src)
        elif isinstance(event, FileDeletedEvent):
            self.settler.gone(src)


def make_observer(kind: str, polling_interval: float) -> BaseObserver:
    if kind == "polling":
        return PollingObserver(timeout=polling_interval)
    from imgwatch.daemon.inotify import ReportingInotifyObserver  # Linux only

    return ReportingInotifyObserver()


def start_observer(observer: BaseObserver, router: EventRouter, roots: Sequence[str]) -> dict[str, ObservedWatch]:
    """Watch every root recursively; on WatchError the observer is stopped (it may own threads already)."""
    try:
        watches = {}
        for root in roots:
            if not os.path.isdir(root):
                raise WatchError(f"cannot watch {root}: it is not a folder (fix `general.roots` or the ROOT argument)")
            try:
                watches[root] = observer.schedule(router, root, recursive=True)
            except OSError as exc:
                raise explain_watch_error(exc, root) from None
        try:
            observer.start()
        except OSError as exc:
            raise explain_watch_error(exc, ", ".join(roots)) from None
    except WatchError:
        stop_observer(observer)
        raise
    return watches


def stop_observer(observer: BaseObserver, timeout: float = 5.0) -> None:
    """Stop ``observer`` and every thread it owns, whether it started, died or never ran."""
    observer.stop()  # stops the emitters and, on inotify, the reader thread
    if observer.is_alive():
        observer.join(timeout=timeout)


def observer_trouble(observer: BaseObserver, watches: dict[str, ObservedWatch]) -> str | None:
    """Why ``observer`` no longer delivers the events of ``watches`` (root → watch), or None.

    A dead dispatcher thread, a dead inotify reader, or a root's emitter thread that
    ended (an exception inside watchdog; also a deleted root, which callers rule out first).
    """
    if not observer.is_alive():
        return "the observer thread ended"
    if not getattr(observer, "reader_alive", True):
        return "the inotify reader thread ended"
    alive = {emitter.watch for emitter in list(observer.emitters) if emitter.is_alive()}
    dead = [root for root, watch in watches.items() if watch not in alive]
    if dead:
        return "the watcher thread of " + ", ".join(dead) + " ended"
    return None


def explain_watch_error(exc: OSError, where: str) -> WatchError:
    if exc.errno == errno.ENOSPC:
        return WatchError(f"cannot watch {where}: the inotify watch limit is reached; {watch_limit_advice()}")
    if exc.errno == errno.EMFILE:
        return WatchError(
            f"cannot watch {where}: too many inotify instances; raise fs.inotify.max_user_instances "
            "or set watch.observer = \"polling\""
        )
    return WatchError(f"cannot watch {where}: {exc.strerror or exc}")
