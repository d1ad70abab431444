"""What each running daemon's roots are doing, announced on the queue's Redis for `imgwatch status`.

Only the daemon knows whether a root is watched (by inotify, or by polling), missing (a typo, a
share not mounted) or not watchable (the inotify watch limit). `imgwatch status` and the web page
read it here without talking to the daemon: the daemon writes one entry, its roots and their
states, whenever a state changes and every RENEW_SECONDS; Redis expires an entry that is not
renewed (no host's clock is trusted), so a killed daemon's roots drop out. A set names the
entries; a name whose entry expired is dropped by the next reader.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import redis

if TYPE_CHECKING:
    from imgwatch.workqueue.jobs import WorkQueue

WATCHING = "watching"  # inotify sees every change below it
POLLING = "polling"  # watch.observer = "polling": changes are found every watch.polling_interval
MISSING = "missing"  # not there: watched as soon as it appears
NOT_WATCHABLE = "not watchable"  # there, but no watch could be added (the inotify limit): only rescans find changes

_NAMES_KEY = "imgwatch:{queue}:root-states"
_ENTRY_KEY = "imgwatch:{queue}:root-states:{daemon}"
ANNOUNCEMENT_TTL = 60  # seconds an entry outlives its daemon's last renewal
RENEW_SECONDS = 20


@dataclass(frozen=True)
class RootState:
    root: str
    state: str  # WATCHING, POLLING, MISSING or NOT_WATCHABLE
    detail: str = ""  # why, and what to do, for any state but WATCHING and POLLING


class RootStates:
    """daemon name → its roots' states, for as long as the daemon keeps renewing them."""

    def __init__(self, connection: redis.Redis, queue_name: str) -> None:
        self.connection = connection
        self.queue_name = queue_name
        self.names_key = _NAMES_KEY.format(queue=queue_name)

    @classmethod
    def for_queue(cls, work_queue: WorkQueue) -> RootStates:
        return cls(work_queue.connection, work_queue.name)

    def publish(self, daemon: str, states: Sequence[RootState], ttl: int = ANNOUNCEMENT_TTL) -> None:
        """``daemon``'s roots are in ``states`` for the next ``ttl`` seconds (publish again to renew)."""
        with self.connection.pipeline() as pipe:
            pipe.set(self._entry_key(daemon), json.dumps([asdict(state) for state in states]), ex=ttl)
            pipe.sadd(self.names_key, daemon)
            pipe.execute()

    def withdraw(self, daemon: str) -> None:
        with self.connection.pipeline() as pipe:
            pipe.delete(self._entry_key(daemon))
            pipe.srem(self.names_key, daemon)
            pipe.execute()

    def current(self) -> list[RootState]:
        """Every running daemon's roots with their states, by root (empty when no daemon runs)."""
        names = sorted(name.decode() for name in self.connection.smembers(self.names_key))
        if not names:
            return []
        entries = self.connection.mget([self._entry_key(name) for name in names])
        expired = [name for name, entry in zip(names, entries, strict=True) if entry is None]
        if expired:
            self.connection.srem(self.names_key, *expired)  # publishing adds a name back
        states = {RootState(**fields) for entry in entries if entry is not None for fields in json.loads(entry)}
        return sorted(states, key=lambda state: (state.root, state.state))

    def _entry_key(self, daemon: str) -> str:
        return _ENTRY_KEY.format(queue=self.queue_name, daemon=daemon)
