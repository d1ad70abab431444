"""guard.refusal on jobs as RQ stores them (real Valkey): what passes, what is refused, and
how a refused job is disarmed so that RQ reads, imports, calls and retries nothing."""

from __future__ import annotations

import pytest
from rq import Callback, Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from imgwatch.workers import guard
from imgwatch.workqueue import INDEX_JOB, WorkQueue
from imgwatch.workqueue.queue import REINDEX_JOB


def stored(work_queue: WorkQueue, job: Job) -> Job:
    """The job as a worker gets it: fetched back from Redis with the JSON serializer."""
    return Job.fetch(job.id, connection=work_queue.connection, serializer=JSONSerializer)


def test_imgwatchs_own_jobs_pass(work_queue: WorkQueue) -> None:
    [job] = work_queue.fetch_jobs(work_queue.enqueue_paths(["/photos/a.jpg", "/photos/b.jpg"], batch_size=32))
    assert guard.refusal(job) is None
    assert job.retries_left == 2  # an accepted job keeps its retries
    empty = stored(work_queue, work_queue.rq_queue.enqueue(INDEX_JOB, []))
    assert guard.refusal(empty) is None
    [reindex] = work_queue.fetch_jobs(work_queue.enqueue_reindex(["/photos/a.jpg"], batch_size=32))
    assert guard.refusal(reindex) is None
    relative = stored(work_queue, work_queue.rq_queue.enqueue(REINDEX_JOB, ["photos/a.jpg"]))
    assert "is not absolute" in (guard.refusal(relative) or "")


@pytest.mark.parametrize(
    ("func", "args", "kwargs", "expected"),
    [
        ("os.system", ("touch /tmp/x",), {}, "the job runs 'os.system'"),
        ("builtins.eval", ("1",), {}, "the job runs 'builtins.eval'"),
        (INDEX_JOB, ("/photos/a.jpg",), {}, "must be a list of paths, not a str"),
        (INDEX_JOB, ([None],), {}, "every path must be a string"),
        (INDEX_JOB, (["/photos/" + "x" * 5000],), {}, "longer than any the system allows"),
        (INDEX_JOB, (), {}, "this one has 0"),
    ],
)
def test_anything_else_is_refused_and_disarmed(
    work_queue: WorkQueue, func: str, args: tuple[object, ...], kwargs: dict[str, object], expected: str
) -> None:
    job = stored(work_queue, work_queue.rq_queue.enqueue(func, args=args, kwargs=kwargs, retry=Retry(max=3)))
    reason = guard.refusal(job)
    assert reason is not None and expected in reason
    assert not job.should_retry  # RQ would retry a failed job with retries left
    assert guard.refusal(job) == reason  # asked again (from a later hook): the same answer


def test_a_refused_job_keeps_no_callback_for_rq_to_import_or_call(work_queue: WorkQueue) -> None:
    called = Callback("tests.helpers.record_call")
    job = stored(work_queue, work_queue.rq_queue.enqueue("os.getpid", on_success=called, on_failure=called,
                                                         on_stopped=called))
    assert guard.refusal(job) is not None
    assert (job.success_callback, job.failure_callback, job.stopped_callback) == (None, None, None)


def test_callbacks_on_an_index_job_are_refused(work_queue: WorkQueue) -> None:
    job = stored(work_queue, work_queue.rq_queue.enqueue(
        INDEX_JOB, ["/photos/a.jpg"], on_failure=Callback("tests.helpers.record_call")))
    reason = guard.refusal(job)
    assert reason is not None and "a failure callback ('tests.helpers.record_call')" in reason
    assert job.failure_callback is None


def test_a_pickled_job_is_refused_without_unpickling_and_left_readable_for_rq(work_queue: WorkQueue) -> None:
    pickled = Queue(work_queue.name, connection=work_queue.connection).enqueue(
        "os.getpid", retry=Retry(max=2), on_failure=Callback("tests.helpers.record_call"))
    job = stored(work_queue, pickled)
    reason = guard.refusal(job)
    assert reason is not None and "not a JSON imgwatch job" in reason
    assert not job.should_retry and job.failure_callback is None
    # RQ's own bookkeeping reads these around the job; they must not raise any more.
    assert (job.func_name, job.args, job.kwargs) == (None, (), {})
    assert stored(work_queue, pickled).data == pickled.data  # the stored payload is untouched
