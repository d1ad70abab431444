"""Coalescing file events per path until the file has settled.

A path is released once it is fully written: its last write was closed (or it
was renamed into place) and its size and mtime have not changed for
``settle_seconds``. Observers without close events (polling) rely on stability
alone. Deletions are released at the next poll. Many events for one path
become one release.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from imgwatch.files import FileSignature, file_signature


@dataclass
class _Pending:
    awaiting_close: bool
    gone: bool
    signature: FileSignature = None
    stable_since: float | None = None
    version: int = 0  # bumped by every event, so due() never releases a path that changed meanwhile


class Settler:
    """Thread-safe: observer threads report events, the daemon loop calls :meth:`due`.

    ``unclosed_grace`` releases a file whose writer never reported a close
    (attribute-only changes such as chmod or touch produce no close event) once
    it has been stable that long.
    """

    def __init__(
        self,
        settle_seconds: float,
        *,
        close_events: bool,
        unclosed_grace: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        stat: Callable[[str], FileSignature] = file_signature,
    ) -> None:
        self.settle_seconds = settle_seconds
        self.close_events = close_events
        self.unclosed_grace = max(unclosed_grace, settle_seconds)
        self._clock = clock
        self._stat = stat
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def pending_paths(self) -> set[str]:
        """Paths with events not released yet (they will be, once settled)."""
        with self._lock:
            return set(self._pending)

    def written(self, path: str) -> None:
        """Created or modified: a writer may still have the file open."""
        with self._lock:
            entry = self._pending.get(path)
            if entry is None or entry.gone:
                self._pending[path] = _Pending(awaiting_close=self.close_events, gone=False)
            else:
                entry.awaiting_close = self.close_events
                entry.stable_since = None
                entry.version += 1

    def closed(self, path: str) -> None:
        """Closed after writing, renamed into place, or found by a directory walk."""
        with self._lock:
            entry = self._pending.get(path)
            if entry is None or entry.gone:
                self._pending[path] = _Pending(awaiting_close=False, gone=False)
            else:
                entry.awaiting_close = False
                entry.stable_since = None
                entry.version += 1

    def close_events_lost(self, under: str) -> None:
        """Events below ``under`` were lost: stop waiting for close events there, settle on stability alone.

        Otherwise a file whose close event was among the lost ones would wait ``unclosed_grace``.
        """
        prefix = under.rstrip(os.sep) + os.sep
        with self._lock:
            for path, entry in self._pending.items():
                if entry.awaiting_close and path.startswith(prefix):
                    entry.awaiting_close = False
                    entry.stable_since = None
                    entry.version += 1

    def gone(self, path: str) -> None:
        with self._lock:
            self._pending[path] = _Pending(awaiting_close=False, gone=True)

    def due(self) -> list[str]:
        """Paths ready to be enqueued now; they leave the pending set."""
        with self._lock:
            candidates = [(path, entry, entry.version) for path, entry in self._pending.items()]
        now = self._clock()
        ready: list[str] = []
        for path, entry, _ in candidates:
            if entry.gone:
                ready.append(path)
                continue
            signature = self._stat(path)
            if signature is None:
                ready.append(path)  # vanished before settling: the worker drops it from the store
                continue
            if signature != entry.signature or entry.stable_since is None:
                entry.signature = signature
                entry.stable_since = now
                continue
            stable_for = now - entry.stable_since
            needed = self.unclosed_grace if entry.awaiting_close else self.settle_seconds
            if stable_for >= needed:
                ready.append(path)
        seen = {path: (entry, version) for path, entry, version in candidates}
        released = []
        with self._lock:
            for path in ready:
                entry, version = seen[path]
                # An event that arrived while we were stat-ing keeps the path waiting.
                if self._pending.get(path) is entry and entry.version == version:
                    del self._pending[path]
                    released.append(path)
        return released
