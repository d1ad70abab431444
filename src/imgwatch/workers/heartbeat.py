"""A worker's heartbeat: its registration, and its running job's execution, kept alive.

An idle worker heartbeats from RQ's own loop. While a job runs in a SimpleWorker RQ does
not, so :class:`KeepAlive` does from a thread: a worker that stops heartbeating (SIGKILL,
the OOM killer) loses its registration after ``HEARTBEAT_TTL_SECONDS`` seconds, and other workers
then requeue its job (imgwatch.workers.recovery).
"""

from __future__ import annotations

import threading
import time

import redis
from rq.registry import StartedJobRegistry
from rq.worker import BaseWorker

# RQ's worker_ttl for imgwatch workers: an idle worker blocks on the queue for
# WORKER_TTL_SECONDS - 15 s, then heartbeats. Its registration lives HEARTBEAT_TTL_SECONDS seconds.
WORKER_TTL_SECONDS = 40
HEARTBEAT_TTL_SECONDS = 60
# While a job runs, KeepAlive renews the registration (and the execution) this often.
KEEPALIVE_SECONDS = 15.0


class KeepAlive:
    """While a job runs in a SimpleWorker, renew the worker's registration and the
    job's execution from a thread: RQ itself does not heartbeat an in-process job, and
    a registration that outlived its worker by half an hour would hide its death."""

    def __init__(self, worker: BaseWorker, interval: float = KEEPALIVE_SECONDS) -> None:
        self.worker = worker
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"keepalive-{worker.name}", daemon=True)

    def __enter__(self) -> KeepAlive:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                beat(self.worker)
            except redis.RedisError:
                pass  # the queue is down: the worker's own calls report it


def beat(worker: BaseWorker) -> None:
    """One heartbeat: the worker's registration and its executions' last_heartbeat."""
    timestamp = time.time()
    registries = {queue.name: StartedJobRegistry(name=queue.name, connection=worker.connection).key
                  for queue in worker.queues}
    with worker.connection.pipeline() as pipe:
        worker.heartbeat(HEARTBEAT_TTL_SECONDS, pipeline=pipe)
        for execution in list(worker.executions.values()):
            for registry_key in registries.values():
                pipe.eval(_TOUCH_EXECUTION, 2, execution.key, registry_key, timestamp, EXECUTION_TTL_SECONDS,
                          execution.composite_key)
        pipe.execute()


# Seconds a running job's execution record and started-registry entry live past each beat.
# RQ gives them min(timeout, 30) + 60 s at start and renews them only from its own
# heartbeat loop, which SimpleWorker does not run during a job: without this, a batch
# running longer than ~90 s would look abandoned to other workers' cleanup.
EXECUTION_TTL_SECONDS = HEARTBEAT_TTL_SECONDS + 60

# Renew a running execution unless it just ended (HSET alone would recreate it): its
# last_heartbeat, its key's TTL, and its started-registry score (XX: never re-add it).
_TOUCH_EXECUTION = """
if redis.call('exists', KEYS[1]) == 1 then
  redis.call('hset', KEYS[1], 'last_heartbeat', ARGV[1])
  redis.call('expire', KEYS[1], ARGV[2])
  redis.call('zadd', KEYS[2], 'XX', tonumber(ARGV[1]) + tonumber(ARGV[2]), ARGV[3])
end
"""
