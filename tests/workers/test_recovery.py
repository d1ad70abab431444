"""Requeueing dead workers' jobs (imgwatch.workers.recovery) against a real Valkey."""

from __future__ import annotations

import time

import pytest
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from imgwatch.workers import poison, recovery
from imgwatch.workqueue import FailureLedger, WorkQueue, job_paths, take_snapshot
from tests.workers.conftest import KILLED, expire_registration, queued, started_count, take_job


def test_a_dead_workers_job_is_requeued_at_once_first_in_line_and_the_worker_forgotten(
    work_queue: WorkQueue,
) -> None:
    [dead_job_id] = work_queue.enqueue_paths(["/p/a.jpg", "/p/b.jpg"], batch_size=32)
    worker, job = take_job(work_queue, "imgwatch-run-4242-0")
    work_queue.enqueue_paths(["/p/later.jpg"], batch_size=32)
    assert started_count(work_queue) == 1

    [done] = recovery.requeue_jobs_of(work_queue, worker.name, KILLED)

    assert (done.job_id, done.action, done.deaths, done.paths) == (dead_job_id, "requeued", 1, 2)
    first, second = queued(work_queue)
    assert first.id == dead_job_id and job_paths(first) == ["/p/a.jpg", "/p/b.jpg"]
    assert first.meta[poison.DEATHS_META] == 1 and first.meta[poison.CAUSE_META] == KILLED
    assert job_paths(second) == ["/p/later.jpg"]
    snapshot = take_snapshot(work_queue, FailureLedger.for_queue(work_queue))
    assert (snapshot.running_jobs, snapshot.workers, snapshot.queued_jobs) == (0, 0, 2)
    assert not work_queue.connection.exists(worker.key)


def test_orphans_are_found_by_their_expired_registration_and_live_workers_keep_their_jobs(
    work_queue: WorkQueue,
) -> None:
    work_queue.enqueue_paths(["/p/alive.jpg"], batch_size=1)
    work_queue.enqueue_paths(["/p/orphan.jpg"], batch_size=1)
    alive, alive_job = take_job(work_queue, "imgwatch-host-1")
    gone, gone_job = take_job(work_queue, "imgwatch-host-2")
    expire_registration(work_queue, gone)

    assert recovery.requeue_orphaned_jobs(work_queue) == 1

    [requeued] = queued(work_queue)
    assert requeued.id == gone_job.id and requeued.meta[poison.DEATHS_META] == 1
    assert "imgwatch-host-2 stopped sending heartbeats" in requeued.meta[poison.CAUSE_META]
    assert started_count(work_queue) == 1  # the live worker's job is still running
    assert alive_job.get_status(refresh=True) == "started"
    assert take_snapshot(work_queue, FailureLedger.for_queue(work_queue)).workers == 1
    assert recovery.requeue_orphaned_jobs(work_queue) == 0  # nothing left to do


def test_a_worker_killed_before_it_marked_its_job_started_still_gets_its_job_requeued(
    work_queue: WorkQueue,
) -> None:
    [job_id] = work_queue.enqueue_paths(["/p/a.jpg"], batch_size=1)
    worker = SimpleWorker([work_queue.rq_queue], connection=work_queue.connection, serializer=JSONSerializer,
                          name="imgwatch-run-5-0")
    worker.register_birth()
    result = work_queue.rq_queue.dequeue_any([work_queue.rq_queue], None, connection=work_queue.connection,
                                             serializer=JSONSerializer)
    assert result is not None
    worker.prepare_execution(result[0])  # ...and SIGKILL before prepare_job_execution
    intermediate = work_queue.rq_queue.intermediate_queue_key
    assert work_queue.connection.lrange(intermediate, 0, -1) == [job_id.encode()]

    [done] = recovery.requeue_jobs_of(work_queue, worker.name, KILLED)

    assert (done.job_id, done.action) == (job_id, "requeued")
    assert work_queue.rq_queue.get_job_ids() == [job_id]
    assert work_queue.connection.lrange(intermediate, 0, -1) == [] and started_count(work_queue) == 0


def test_a_job_is_requeued_once_however_many_look_for_orphans(work_queue: WorkQueue) -> None:
    work_queue.enqueue_paths(["/p/a.jpg"], batch_size=1)
    worker, _ = take_job(work_queue, "imgwatch-run-1-0")
    assert len(recovery.requeue_jobs_of(work_queue, worker.name, KILLED)) == 1
    assert recovery.requeue_jobs_of(work_queue, worker.name, KILLED) == []
    assert recovery.requeue_orphaned_jobs(work_queue) == 0
    assert len(work_queue.rq_queue.get_job_ids()) == 1


def test_a_live_workers_stale_execution_is_run_again_without_counting_a_death(work_queue: WorkQueue) -> None:
    """A queue restored from its append-only file may remember a job its (live) worker finished."""
    work_queue.enqueue_paths(["/p/a.jpg"], batch_size=1)
    worker, job = take_job(work_queue, "imgwatch-run-7-0")
    [execution] = worker.executions.values()
    stale = time.time() - recovery.STALE_EXECUTION_SECONDS - 1
    work_queue.connection.hset(execution.key, "last_heartbeat", stale)

    assert recovery.requeue_orphaned_jobs(work_queue) == 1

    [requeued] = queued(work_queue)
    assert requeued.id == job.id and requeued.meta[poison.DEATHS_META] == 0
    assert work_queue.connection.exists(worker.key)  # the worker itself is fine


def test_a_fresh_run_requeues_its_previous_workers_jobs_without_counting_deaths(work_queue: WorkQueue) -> None:
    for path in ["/p/a.jpg", "/p/b.jpg", "/p/c.jpg"]:
        work_queue.enqueue_paths([path], batch_size=1)
    take_job(work_queue, "imgwatch-run-1-0")
    take_job(work_queue, "imgwatch-run-1-1")  # registrations still live: the run was killed a moment ago
    take_job(work_queue, "imgwatch-otherhost-7")  # a separate `imgwatch worker`, alive

    recovered = recovery.requeue_abandoned(work_queue, "the previous `imgwatch run` stopped", "imgwatch-run-")

    assert sorted(r.action for r in recovered) == ["requeued", "requeued"]
    assert [j.meta[poison.DEATHS_META] for j in queued(work_queue)] == [0, 0]
    assert started_count(work_queue) == 1
    assert take_snapshot(work_queue, FailureLedger.for_queue(work_queue)).workers == 1


@pytest.mark.parametrize("exitcode", [-9, -11, 1, 75, None])
def test_causes_read_like_the_log_line(exitcode: int | None) -> None:
    expected = {-9: "killed by signal SIGKILL", -11: "killed by signal SIGSEGV", 1: "exited with code 1",
                75: "exited with code 75", None: "ended for an unknown reason"}[exitcode]
    assert recovery.signal_cause(exitcode) == expected


def test_a_dead_workers_foreign_job_is_dropped_not_requeued(work_queue: WorkQueue) -> None:
    # Anyone who can write to Redis can put a job there; a dead worker's copy of it must not come back.
    work_queue.rq_queue.enqueue("os.system", "touch /tmp/imgwatch-must-not-exist")
    worker, job = take_job(work_queue, "imgwatch-run-4243-0")

    [done] = recovery.requeue_jobs_of(work_queue, worker.name, KILLED)

    assert (done.job_id, done.action) == (job.id, "dropped")
    assert queued(work_queue) == [] and started_count(work_queue) == 0
