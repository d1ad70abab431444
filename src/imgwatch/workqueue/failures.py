"""The failed-file ledger: files a worker could not index, with the reason.

A Redis hash beside the queue, so `imgwatch status` can show them and
reconciliation knows which failures to retry. Each record keeps the file's
(size, mtime_ns) when it failed, how many ``attempts`` in a row failed on that
same content, and whether the failure is ``permanent`` (a file that cannot be
decoded fails again until it changes). Reconciliation retries a transient failure
until ``workers.max_attempts`` attempts failed, a permanent one only when the
file changed; `imgwatch retry` resets the count and requeues (:func:`retry_failed`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis

from imgwatch.files import root_of

if TYPE_CHECKING:
    from imgwatch.workqueue.queue import WorkQueue

_LEDGER_KEY = "imgwatch:{queue}:failed-files"


@dataclass
class FailedFile:
    path: str
    reason: str
    size: int | None
    mtime_ns: int | None
    at: float
    attempts: int = 1  # failures in a row with this (size, mtime_ns); 0 after `imgwatch retry`
    permanent: bool = False  # retrying the unchanged file cannot help (e.g. it cannot be decoded)

    def retry_due(self, max_attempts: int) -> bool:
        """Whether the unchanged file is worth another attempt (a changed one always is)."""
        return not self.permanent and self.attempts < max_attempts


class FailureLedger:
    def __init__(self, connection: redis.Redis, queue_name: str) -> None:
        self.connection = connection
        self.key = _LEDGER_KEY.format(queue=queue_name)

    @classmethod
    def for_queue(cls, work_queue: WorkQueue) -> FailureLedger:
        """The ledger of the files that ``work_queue``'s jobs failed on."""
        return cls(work_queue.connection, work_queue.name)

    def record(
        self,
        path: str,
        reason: str,
        size: int | None,
        mtime_ns: int | None,
        *,
        permanent: bool = False,
        attempts: int | None = None,
    ) -> FailedFile:
        """Record that ``path`` failed; returns the record as stored.

        ``attempts`` counts on from the previous record when the file still has the same
        (size, mtime_ns), and starts at 1 when it changed; pass ``attempts`` to set it.
        """
        field = os.fsencode(path)  # a file name that is not valid UTF-8 still gets its record
        with self.connection.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(self.key)  # read, count on and write as one step against other workers
                    previous = _decode(path, pipe.hget(self.key, field))
                    if attempts is not None:
                        count = attempts
                    elif previous is not None and (previous.size, previous.mtime_ns) == (size, mtime_ns):
                        count = previous.attempts + 1
                    else:
                        count = 1
                    failed = FailedFile(path, reason, size, mtime_ns, time.time(), count, permanent)
                    pipe.multi()
                    pipe.hset(self.key, field, _encode(failed))
                    pipe.execute()
                    return failed
                except redis.WatchError:
                    continue  # another record of this ledger landed in between: read it again

    def get(self, path: str) -> FailedFile | None:
        return _decode(path, self.connection.hget(self.key, os.fsencode(path)))

    def clear(self, paths: Iterable[str]) -> None:
        keys = [os.fsencode(p) for p in paths]
        if keys:
            self.connection.hdel(self.key, *keys)

    def reset_attempts(self, paths: Iterable[str]) -> list[str]:
        """Set the attempt count of these failed files to 0 (and forget "permanent"); returns those reset."""
        reset = []
        for path in paths:
            with self.connection.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(self.key)
                        current = _decode(path, pipe.hget(self.key, os.fsencode(path)))
                        if current is None:
                            pipe.unwatch()
                            break
                        current.attempts, current.permanent = 0, False
                        pipe.multi()
                        pipe.hset(self.key, os.fsencode(path), _encode(current))
                        pipe.execute()
                        reset.append(path)
                        break
                    except redis.WatchError:
                        continue
        return reset

    def failed_files(self) -> list[FailedFile]:
        files = []
        for raw_path, raw_value in self.connection.hscan_iter(self.key):
            failed = _decode(os.fsdecode(raw_path), raw_value)
            if failed is not None:
                files.append(failed)
        return sorted(files, key=lambda f: f.path)

    def failed_signatures(self) -> dict[str, tuple[int, int]]:
        """(size, mtime_ns) each failed file had."""
        return {
            f.path: (f.size, f.mtime_ns)
            for f in self.failed_files()
            if f.size is not None and f.mtime_ns is not None
        }


def select_failed(failed: Iterable[FailedFile], selection: Sequence[str] = ()) -> list[FailedFile]:
    """The failed files named in ``selection`` or below a folder in it; all of them when it is empty."""
    if not selection:
        return list(failed)
    return [f for f in failed if root_of(f.path, selection) is not None]


def retry_failed(work_queue: WorkQueue, selection: Sequence[str] = (), batch_size: int = 32) -> list[str]:
    """`imgwatch retry`: requeue failed files (see :func:`select_failed`) with their attempt counts reset.

    Returns the paths requeued.
    """
    ledger = FailureLedger.for_queue(work_queue)
    chosen = [f.path for f in select_failed(ledger.failed_files(), selection)]
    reset = ledger.reset_attempts(chosen)
    work_queue.enqueue_paths(reset, batch_size)
    return reset


def _encode(failed: FailedFile) -> str:
    return json.dumps({"reason": failed.reason, "size": failed.size, "mtime_ns": failed.mtime_ns, "at": failed.at,
                       "attempts": failed.attempts, "permanent": failed.permanent})


def _decode(path: str, raw: bytes | str | None) -> FailedFile | None:
    if raw is None:
        return None
    value = json.loads(raw)
    # Records written before attempts were counted stand for one failed attempt.
    return FailedFile(path, value["reason"], value.get("size"), value.get("mtime_ns"), value.get("at", 0.0),
                      int(value.get("attempts", 1)), bool(value.get("permanent", False)))
