"""Entries that running processes announce on the queue's Redis and keep renewing.

Each announcer's entry is a key that Redis expires (no host's clock is trusted), renewed by
announcing again; a set names the entries, and a name whose key expired (a killed process)
is dropped by the next reader. WorkerRoots and RootStates are two kinds of entry.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Self

import redis

if TYPE_CHECKING:
    from imgwatch.workqueue.queue import WorkQueue

ENTRY_TTL_SECONDS = 60  # seconds an entry outlives its announcer's last renewal
RENEW_SECONDS = 20


class Announcements:
    """name → a JSON value, for as long as its announcer keeps renewing it. A kind sets KIND."""

    KIND = ""  # the keys' middle part, e.g. "worker-roots"

    def __init__(self, connection: redis.Redis, queue_name: str) -> None:
        self.connection = connection
        self.queue_name = queue_name
        self.names_key = f"imgwatch:{queue_name}:{self.KIND}"

    @classmethod
    def for_queue(cls, work_queue: WorkQueue) -> Self:
        return cls(work_queue.connection, work_queue.name)

    def withdraw(self, name: str) -> None:
        with self.connection.pipeline() as pipe:
            pipe.delete(self._entry_key(name))
            pipe.srem(self.names_key, name)
            pipe.execute()

    def _put(self, name: str, value: object, ttl: int) -> None:
        """``name`` announces ``value`` for the next ``ttl`` seconds."""
        with self.connection.pipeline() as pipe:
            pipe.set(self._entry_key(name), json.dumps(value), ex=ttl)
            pipe.sadd(self.names_key, name)
            pipe.execute()

    def _live_values(self) -> list[object]:
        """The values of the entries not yet expired, in name order."""
        names = sorted(name.decode() for name in self.connection.smembers(self.names_key))
        if not names:
            return []
        entries = self.connection.mget([self._entry_key(name) for name in names])
        expired = [name for name, entry in zip(names, entries, strict=True) if entry is None]
        if expired:
            self.connection.srem(self.names_key, *expired)  # announcing again adds a name back
        return [json.loads(entry) for entry in entries if entry is not None]

    def _entry_key(self, name: str) -> str:
        return f"{self.names_key}:{name}"
