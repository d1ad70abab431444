"""An inotify observer that reports what watchdog 7.1 keeps to itself.

- **Lost events.** When more than ``fs.inotify.max_queued_events`` events wait
  unread, the kernel drops the rest and queues IN_Q_OVERFLOW. watchdog's
  ``InotifyFD.handle_event`` logs "filesystem events were lost" and calls
  ``on_queue_overflow()`` on every watch group, which drops the events it held and
  rebuilds the watches below its root, but no event handler hears of it: files
  written in that window would never be indexed. Here the watch group is a subclass
  (:class:`ReportingWatchGroup`) whose ``on_queue_overflow`` — the public method of
  watchdog's ``WatchCallback`` protocol — lets watchdog rebuild the watches first and
  then reports :class:`~imgwatch.daemon.notices.EventsLost` for its root. Reporting
  after the rebuild matters: the rescan that follows then cannot miss a folder that
  was created in the lost window and is still being filled.
- **Unwatchable folders.** When the inotify watch limit is reached, watchdog raises
  for a root but silently skips a subfolder (a new one, or one re-watched after an
  overflow). The watch group reaches the shared inotify instance only through
  ``add_callback``/``remove_callbacks``; handing it a proxy (:class:`_WatchLimitSpy`)
  sees ENOSPC before watchdog swallows it and reports
  :class:`~imgwatch.daemon.notices.FolderUnwatchable`.

Both reports go through the emitter's own ``queue_event``, so they reach the
handler on the dispatcher thread in order with the file events. The hooks used are
extension points, not patches: the emitter class an observer is built with, the
emitter's ``on_thread_start`` (mirrored from watchdog 7.1's ``InotifyEmitter`` with
the group class swapped) and the group's ``on_queue_overflow``. Nothing global in
watchdog changes, so other observers in the process behave as before.
tests/faults/test_missed_events.py overflows a real inotify queue and exhausts the
real watch limit to hold this to account when watchdog changes.

Linux only: importing this module loads libc's inotify functions.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from watchdog.events import FileSystemEvent
from watchdog.observers.inotify import InotifyFullEmitter, InotifyObserver, InotifyWatchGroup

from imgwatch.daemon.notices import EventsLost, FolderUnwatchable

if TYPE_CHECKING:
    from watchdog.observers.inotify_c import CallbackId, InotifyFD, Mask, WatchCallback, WatchDescriptor

Report = Callable[[FileSystemEvent], None]


class _WatchLimitSpy:
    """Stands in for the shared ``InotifyFD`` in one watch group: reports ENOSPC, then behaves the same."""

    def __init__(self, inotify_fd: InotifyFD, report: Report) -> None:
        self._inotify_fd = inotify_fd
        self._report = report

    def add_callback(self, path: bytes, mask: Mask, callback: WatchCallback, id_: CallbackId) -> WatchDescriptor:
        try:
            return self._inotify_fd.add_callback(path, mask, callback, id_)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                self._report(FolderUnwatchable(os.fsdecode(path)))
            raise  # watchdog decides, as before: raised for the root, skipped for a subfolder

    def __getattr__(self, name: str) -> Any:  # remove_callbacks, and anything a later watchdog uses
        return getattr(self._inotify_fd, name)


@dataclass
class ReportingWatchGroup(InotifyWatchGroup):
    """watchdog's watch group for one root, reporting a queue overflow once its watches are rebuilt."""

    report: Report | None = field(default=None, kw_only=True)

    def on_queue_overflow(self) -> None:
        super().on_queue_overflow()  # drops the events it held, re-adds every watch below the root
        if self.is_active and self.report is not None:
            self.report(EventsLost(os.fsdecode(self.path)))


class ReportingInotifyEmitter(InotifyFullEmitter):
    """watchdog's full-events inotify emitter with a :class:`ReportingWatchGroup`."""

    def on_thread_start(self) -> None:
        # As InotifyEmitter.on_thread_start (watchdog 7.1), with the group class swapped.
        self._inotify = ReportingWatchGroup(
            cast("InotifyFD", _WatchLimitSpy(self._inotify_fd, self.queue_event)),
            os.fsencode(self.watch.path),
            is_recursive=self.watch.is_recursive,
            event_mask=self.get_event_mask_from_filter(),
            follow_symlink=self.watch.follow_symlink,
            report=self.queue_event,
        )


class ReportingInotifyObserver(InotifyObserver):
    """An ``InotifyObserver`` (full events) whose emitters report lost events and unwatchable folders."""

    def __init__(self) -> None:
        # Full events report a move in from outside a root as a move (a finished file),
        # not as a "created" file whose writer we would wait for.
        super().__init__(generate_full_events=True)
        self._emitter_class = ReportingInotifyEmitter  # what BaseObserver.schedule builds emitters from

    @property
    def reader_alive(self) -> bool:
        """Whether the thread reading the inotify file descriptor still runs."""
        return self._inotify_fd.is_alive()
