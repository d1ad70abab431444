"""A worker's heartbeat (imgwatch.workers.heartbeat) against a real Valkey."""

from __future__ import annotations

import time

from rq.serializers import JSONSerializer

from imgwatch.workers import heartbeat
from imgwatch.workers.worker import ImgwatchWorker
from imgwatch.workqueue import WorkQueue


def test_a_workers_registration_lives_a_minute_and_keep_alive_renews_it_during_a_job(
    work_queue: WorkQueue,
) -> None:
    worker = ImgwatchWorker(work_queue, "imgwatch-run-99-0")
    worker.register_birth()
    worker.heartbeat()
    assert 0 < work_queue.connection.ttl(worker.key) <= heartbeat.HEARTBEAT_TTL_SECONDS
    work_queue.enqueue_paths(["/p/a.jpg"], batch_size=1)
    result = work_queue.rq_queue.dequeue_any([work_queue.rq_queue], None, connection=work_queue.connection,
                                             serializer=JSONSerializer)
    assert result is not None
    job, _ = result
    execution = worker.prepare_execution(job)
    worker.prepare_job_execution(job)  # RQ asks for the job's whole timeout here (1800 s + 60)
    assert work_queue.connection.ttl(worker.key) <= heartbeat.HEARTBEAT_TTL_SECONDS
    work_queue.connection.expire(worker.key, 2)
    before = float(work_queue.connection.hget(execution.key, "last_heartbeat") or 0)

    with heartbeat.KeepAlive(worker, interval=0.05):
        time.sleep(0.3)

    assert work_queue.connection.ttl(worker.key) > 2
    assert float(work_queue.connection.hget(execution.key, "last_heartbeat") or 0) > before
    worker.register_death()
