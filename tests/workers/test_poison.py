"""Poison files (imgwatch.workers.poison): the rule alone, then applied to a dead worker's job in a real Valkey."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgwatch.files import file_signature
from imgwatch.workers import poison, recovery
from imgwatch.workqueue import FailureLedger, WorkQueue, job_paths
from tests.workers.conftest import KILLED, queued, started_count, take_job


@pytest.mark.parametrize(("paths", "deaths", "max_attempts", "step"), [
    (1, 2, 3, "requeued"),
    (1, 3, 3, "failed"),
    (1, 0, 1, "requeued"),  # a death that does not count (the queue was lost, the run stopped)
    (1, 1, 1, "failed"),
    (2, 1, 3, "requeued"),  # the first death may have had nothing to do with the files
    (2, 2, 3, "split"),
    (2, 1, 1, "split"),  # never more deaths than max_attempts before the file at fault is found
])
def test_a_job_is_requeued_split_or_its_file_failed_by_its_paths_and_worker_deaths(
    paths: int, deaths: int, max_attempts: int, step: str,
) -> None:
    assert poison.next_step(paths, deaths, max_attempts) == step


def test_a_file_that_keeps_killing_workers_is_isolated_then_recorded_as_failed(
    work_queue: WorkQueue, tmp_path: Path
) -> None:
    poison_file, fine = tmp_path / "poison.jpg", tmp_path / "fine.jpg"
    poison_file.write_bytes(b"\xff\xd8 pretend this crashes the decoder")
    fine.write_bytes(b"\xff\xd8 fine")
    assert work_queue.max_attempts == 3
    work_queue.enqueue_paths([str(poison_file), str(fine)], batch_size=32)
    deaths = 0

    def kill_the_worker_on_the_next_job() -> list[recovery.Recovery]:
        nonlocal deaths
        deaths += 1
        worker, _ = take_job(work_queue, f"imgwatch-run-{deaths}-0")
        return recovery.requeue_jobs_of(work_queue, worker.name, KILLED)

    # 1st death: the whole job again (the death may have had nothing to do with its files).
    assert [r.action for r in kill_the_worker_on_the_next_job()] == ["requeued"]
    # 2nd death of the same job: one job per file, each remembering one death.
    assert [r.action for r in kill_the_worker_on_the_next_job()] == ["split"]
    singles = queued(work_queue)
    assert sorted(job_paths(j)[0] for j in singles) == sorted([str(poison_file), str(fine)])
    assert all(len(job_paths(j)) == 1 and j.meta[poison.DEATHS_META] == 1 for j in singles)
    # The poison file's job is taken first and kills its worker twice more.
    work_queue.rq_queue.remove(next(j for j in singles if job_paths(j) == [str(fine)]))
    assert [(r.action, r.deaths) for r in kill_the_worker_on_the_next_job()] == [("requeued", 2)]
    assert [(r.action, r.deaths) for r in kill_the_worker_on_the_next_job()] == [("failed", 3)]

    assert work_queue.rq_queue.get_job_ids() == [] and started_count(work_queue) == 0
    [failed] = FailureLedger.for_queue(work_queue).failed_files()
    assert failed.path == str(poison_file)
    assert f"the worker died 3 times while indexing this file (last: {KILLED})" in failed.reason
    assert (failed.size, failed.mtime_ns) == file_signature(str(poison_file))[:2]  # type: ignore[index]  # retried once the file changes
