"""The failed-file ledger: files a worker could not index, with the reason.

A Redis hash beside the queue, so `imgwatch status` can show them and
reconciliation does not retry an unchanged bad file on every start.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis

if TYPE_CHECKING:
    from imgwatch.workqueue.jobs import WorkQueue

_LEDGER_KEY = "imgwatch:{queue}:failed-files"


@dataclass
class FailedFile:
    path: str
    reason: str
    size: int | None
    mtime_ns: int | None
    at: float


class FailureLedger:
    def __init__(self, connection: redis.Redis, queue_name: str) -> None:
        self.connection = connection
        self.key = _LEDGER_KEY.format(queue=queue_name)

    @classmethod
    def for_queue(cls, work_queue: WorkQueue) -> FailureLedger:
        """The ledger of the files that ``work_queue``'s jobs failed on."""
        return cls(work_queue.connection, work_queue.name)

    def record(self, path: str, reason: str, size: int | None, mtime_ns: int | None) -> None:
        value = json.dumps({"reason": reason, "size": size, "mtime_ns": mtime_ns, "at": time.time()})
        # fsencode: a file name that is not valid UTF-8 still gets its record.
        self.connection.hset(self.key, os.fsencode(path), value)

    def clear(self, paths: Iterable[str]) -> None:
        keys = [os.fsencode(p) for p in paths]
        if keys:
            self.connection.hdel(self.key, *keys)

    def failed_files(self) -> list[FailedFile]:
        files = []
        for raw_path, raw_value in self.connection.hscan_iter(self.key):
            value = json.loads(raw_value)
            files.append(FailedFile(os.fsdecode(raw_path), value["reason"], value.get("size"),
                                    value.get("mtime_ns"), value.get("at", 0.0)))
        return sorted(files, key=lambda f: f.path)

    def failed_signatures(self) -> dict[str, tuple[int, int]]:
        """(size, mtime_ns) each failed file had, for reconciliation."""
        return {
            f.path: (f.size, f.mtime_ns)
            for f in self.failed_files()
            if f.size is not None and f.mtime_ns is not None
        }
