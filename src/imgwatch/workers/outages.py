"""Riding out a queue outage (e.g. the embedded server being restarted) in a worker.

A worker's Redis commands retry for about 15 s before its job gives up
(:func:`ride_out_outages`); a stopping worker fails fast again
(:func:`stop_riding_out_outages`). A queue still out of reach in the middle of a job
ends the worker process (:class:`QueueLost`): it is restarted, and its job requeued as
orphaned (imgwatch.workers.recovery).
"""

from __future__ import annotations

import contextlib
import logging
import time

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

# A worker's Redis commands retry through a queue outage (e.g. the embedded server being
# restarted) for about 15 s before its job gives up.
OUTAGE_RETRIES = 20
OUTAGE_BACKOFF_CAP_SECONDS = 1.0
# RQ logs every reconnection attempt; during a long outage one such line a minute is enough.
RECONNECT_LOG_SECONDS = 60.0


class QueueLost(SystemExit):
    """The queue stayed out of reach in the middle of a job: the worker process exits
    (code errors.EXIT_UNAVAILABLE) and is restarted, and its job is requeued as orphaned.

    A SystemExit because RQ's work loop lets only that through quietly: any other
    exception out of a job's bookkeeping is logged with a traceback."""


def ride_out_outages(connection: redis.Redis) -> None:
    """Make ``connection`` retry through a short queue outage instead of failing at once,
    and keep RQ's reconnection messages to one a minute."""
    connection.set_retry(Retry(ExponentialBackoff(cap=OUTAGE_BACKOFF_CAP_SECONDS, base=0.05), retries=OUTAGE_RETRIES))
    rq_log = logging.getLogger("rq.worker")
    if not any(isinstance(f, _ThrottleReconnects) for f in rq_log.filters):
        rq_log.addFilter(_ThrottleReconnects())


def stop_riding_out_outages(connection: redis.Redis) -> None:
    """Fail fast again (a worker that is stopping); commands retrying right now stop soon too."""
    pool = connection.connection_pool
    try:  # each pooled connection has its own Retry; a command in its retry loop reads it on the next failure
        pooled = [*getattr(pool, "_available_connections", ()), *getattr(pool, "_in_use_connections", ())]
    except RuntimeError:  # changed size under us (another thread): the new policy below still applies
        pooled = []
    for pooled_connection in pooled:
        with contextlib.suppress(AttributeError):
            pooled_connection.retry.update_retries(1)
    connection.set_retry(Retry(NoBackoff(), retries=1))


class _ThrottleReconnects(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self._last = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        if "could not connect to Redis" not in str(record.msg):
            return True
        now = time.monotonic()
        if now - self._last < RECONNECT_LOG_SECONDS:
            return False
        self._last = now
        return True
