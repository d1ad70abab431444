"""The folders each running worker indexes, announced on the queue's Redis.

A worker refuses paths outside its roots, so `imgwatch scan` of another folder would only
fill the failed-file list: scan reads the announcements and refuses it up front instead.
Each worker renews its entry with its heartbeat; an entry not renewed (a killed worker)
stops counting when it expires and is dropped by the next announcement.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import redis
from redis.client import Pipeline

from imgwatch.errors import ConfigError
from imgwatch.files import root_of

if TYPE_CHECKING:
    from imgwatch.workqueue.jobs import WorkQueue

_ROOTS_KEY = "imgwatch:{queue}:worker-roots"


class WorkerRoots:
    """worker name → the roots it indexes, with the time its entry expires."""

    def __init__(self, connection: redis.Redis, queue_name: str) -> None:
        self.connection = connection
        self.key = _ROOTS_KEY.format(queue=queue_name)

    @classmethod
    def for_queue(cls, work_queue: WorkQueue) -> WorkerRoots:
        return cls(work_queue.connection, work_queue.name)

    def announce(self, worker: str, roots: Sequence[str], ttl: float) -> None:
        """``worker`` indexes ``roots`` for the next ``ttl`` seconds; entries that expired go."""
        now = time.time()
        expired = [name for name, entry in self._entries().items() if entry["until"] < now and name != worker]
        with self.connection.pipeline() as pipe:
            self.renew(worker, roots, ttl, pipe)
            if expired:
                pipe.hdel(self.key, *expired)
            pipe.execute()

    def renew(self, worker: str, roots: Sequence[str], ttl: float, pipeline: Pipeline) -> None:
        """Queue the renewal of ``worker``'s entry on ``pipeline`` (sent with the heartbeat)."""
        pipeline.hset(self.key, worker, json.dumps({"roots": list(roots), "until": time.time() + ttl}))

    def withdraw(self, worker: str) -> None:
        self.connection.hdel(self.key, worker)

    def current(self) -> list[list[str]]:
        """The roots of each worker whose entry has not expired."""
        now = time.time()
        return [entry["roots"] for entry in self._entries().values() if entry["until"] >= now]

    def _entries(self) -> dict[str, dict]:
        return {name.decode(): json.loads(raw) for name, raw in self.connection.hgetall(self.key).items()}


def check_workers_take(folders: Sequence[str], announced: list[list[str]]) -> None:
    """ConfigError when running workers are known and none of them indexes one of ``folders``."""
    if not announced:
        return  # no worker running (or none announced yet): nothing to check against
    taken = sorted({root for roots in announced for root in roots})
    outside = [folder for folder in folders if root_of(folder, taken) is None]
    if outside:
        raise ConfigError(
            f"cannot scan {', '.join(outside)}: the running workers index only files below "
            f"{', '.join(taken)} and refuse any other; scan those folders or folders inside them, or add it to "
            "general.roots (or to the folders given to `imgwatch run` / `imgwatch worker`) and restart them"
        )
