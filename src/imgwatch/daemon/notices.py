"""What an observer tells the daemon besides file events.

Notices are delivered like file events (through the observer's event queue to the
root's handler) so they need no channel of their own; their ``event_type`` names
the handler method watchdog's dispatch calls (``on_events_lost``, ...).
"""

from __future__ import annotations

from watchdog.events import FileSystemEvent

WATCH_LIMIT_SYSCTL = "fs.inotify.max_user_watches"


def watch_limit_advice() -> str:
    """What to do when inotify cannot add another watch (ENOSPC)."""
    return (f"raise it (sysctl {WATCH_LIMIT_SYSCTL}=524288, and in /etc/sysctl.d/ to keep it) "
            "or set watch.observer = \"polling\"")


class Notice(FileSystemEvent):
    """Not a file event: something the daemon must act on about ``src_path``."""

    is_directory = True


class EventsLost(Notice):
    """The kernel dropped events below ``src_path`` (a watched root): it must be rescanned."""

    event_type = "events_lost"


class FolderUnwatchable(Notice):
    """``src_path`` (a folder) could not be watched: the inotify watch limit is reached."""

    event_type = "folder_unwatchable"
