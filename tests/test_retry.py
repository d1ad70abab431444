"""Failed files: attempts counted per content, rescans that give up, and `imgwatch retry`.

A real Valkey queue and ledger, a real store, real files, the real model (random weights).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

from imgwatch.config import Config
from imgwatch.daemon.scan import reconcile_and_enqueue
from imgwatch.embedding import Embedder, EmbeddingModel
from imgwatch.files import PathFilter
from imgwatch.store import GraphStore
from imgwatch.workers.indexer import Indexer, LinkPolicy
from imgwatch.workqueue import FailureLedger, WorkQueue, job_paths
from imgwatch.workqueue.failures import retry_failed, select_failed
from tests.helpers import imgwatch, process_env


def queued(work_queue: WorkQueue) -> list[str]:
    jobs = work_queue.fetch_jobs(work_queue.rq_queue.get_job_ids())
    return sorted(path for job in jobs for path in job_paths(job))


def signature(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


# -- the ledger ------------------------------------------------------------------------------


def test_attempts_count_failures_of_the_same_content_and_start_over_when_it_changes(
    failures: FailureLedger,
) -> None:
    assert failures.record("/p/a.jpg", "cannot read /p/a.jpg: Permission denied", 10, 100).attempts == 1
    assert failures.record("/p/a.jpg", "cannot read /p/a.jpg: Permission denied", 10, 100).attempts == 2
    assert failures.record("/p/a.jpg", "cannot read /p/a.jpg: Permission denied", 11, 200).attempts == 1
    stored = failures.get("/p/a.jpg")
    assert stored is not None
    assert (stored.size, stored.mtime_ns, stored.attempts, stored.permanent) == (11, 200, 1, False)
    # The worker-recovery call: the count and permanence given outright.
    dead = failures.record("/p/b.jpg", "the worker died 3 times", 5, 5, permanent=True, attempts=3)
    assert failures.get("/p/b.jpg") == dead and (dead.attempts, dead.permanent) == (3, True)
    assert failures.get("/p/none.jpg") is None


def test_a_transient_failure_is_due_until_max_attempts_a_permanent_one_never(failures: FailureLedger) -> None:
    transient = failures.record("/p/t.jpg", "cannot read", 1, 1)
    assert transient.retry_due(max_attempts=2)
    assert not failures.record("/p/t.jpg", "cannot read", 1, 1).retry_due(max_attempts=2)
    assert not failures.record("/p/d.jpg", "cannot decode", 1, 1, permanent=True).retry_due(max_attempts=3)


def test_records_written_before_attempts_were_counted_read_as_one_attempt(failures: FailureLedger) -> None:
    old = json.dumps({"reason": "cannot decode /p/old.jpg: truncated", "size": 3, "mtime_ns": 4, "at": 1.0})
    failures.connection.hset(failures.key, os.fsencode("/p/old.jpg"), old)
    [record] = failures.failed_files()
    assert (record.path, record.attempts, record.permanent) == ("/p/old.jpg", 1, False)
    assert failures.record("/p/old.jpg", "again", 3, 4).attempts == 2


def test_concurrent_workers_count_every_attempt(failures: FailureLedger) -> None:
    def fail_often() -> None:
        for _ in range(20):
            failures.record("/p/busy.jpg", "cannot read", 1, 1)

    threads = [threading.Thread(target=fail_often) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    record = failures.get("/p/busy.jpg")
    assert record is not None and record.attempts == 120


def test_retry_selects_files_and_folders_resets_attempts_and_requeues(
    failures: FailureLedger, work_queue: WorkQueue
) -> None:
    for path in ["/p/a/1.jpg", "/p/a/sub/2.jpg", "/p/ab/3.jpg", "/q/4.jpg"]:
        failures.record(path, "cannot decode", 1, 1, permanent=True, attempts=5)
    everything = failures.failed_files()
    assert [f.path for f in select_failed(everything, ["/p/a"])] == ["/p/a/1.jpg", "/p/a/sub/2.jpg"]
    assert [f.path for f in select_failed(everything, ["/q/4.jpg", "/p/ab/"])] == ["/p/ab/3.jpg", "/q/4.jpg"]
    assert select_failed(everything, ["/nowhere"]) == []
    assert len(select_failed(everything)) == 4

    assert retry_failed(work_queue, ["/p/a"], batch_size=32) == ["/p/a/1.jpg", "/p/a/sub/2.jpg"]
    assert queued(work_queue) == ["/p/a/1.jpg", "/p/a/sub/2.jpg"]
    by_path = {f.path: f for f in failures.failed_files()}  # still listed, with their reasons, until they pass
    assert (by_path["/p/a/1.jpg"].attempts, by_path["/p/a/1.jpg"].permanent) == (0, False)
    assert (by_path["/q/4.jpg"].attempts, by_path["/q/4.jpg"].permanent) == (5, True)


# -- rescans weigh the ledger ------------------------------------------------------------------


def test_rescans_retry_transient_failures_until_max_attempts_and_permanent_ones_when_changed(
    config: Config, store: GraphStore, failures: FailureLedger, work_queue: WorkQueue, tmp_path: Path
) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    config.general.roots = [str(root)]
    config.workers.max_attempts = 3
    files = {name: root / f"{name}.jpg" for name in ["transient", "exhausted", "permanent", "fixed"]}
    for path in files.values():
        path.write_bytes(b"not yet an image")
    failures.record(str(files["transient"]), "cannot read", *signature(files["transient"]), attempts=2)
    failures.record(str(files["exhausted"]), "cannot read", *signature(files["exhausted"]), attempts=3)
    failures.record(str(files["permanent"]), "cannot decode", *signature(files["permanent"]), permanent=True)
    failures.record(str(files["fixed"]), "cannot decode", 1, 1, permanent=True)  # changed since

    plan = reconcile_and_enqueue(config, store, failures, work_queue)
    assert plan.changed == sorted([str(files["transient"]), str(files["fixed"])])
    assert (plan.known_failures, plan.retried_failures) == (2, 1)

    # `imgwatch retry` asks again: the next rescans try each up to max_attempts times again.
    assert len(retry_failed(work_queue, [str(root)])) == 4
    again = reconcile_and_enqueue(config, store, failures, work_queue)
    assert again.changed == sorted(str(p) for p in files.values())


def test_the_indexer_marks_undecodable_files_permanent_and_counts_attempts(
    random_model: EmbeddingModel, store: GraphStore, failures: FailureLedger, tmp_path: Path,
    write_photo: Callable[..., Path],
) -> None:
    root = tmp_path / "photos"
    good = write_photo(root / "good.jpg", "coffee")
    corrupt = root / "corrupt.jpg"
    corrupt.write_bytes(good.read_bytes()[:2000])
    store.ensure_model(random_model.identity, random_model.dim)
    with Embedder(random_model, batch_size=4, decode_threads=1) as embedder:
        indexer = Indexer(embedder, store, failures, lambda paths: None, LinkPolicy(0.0, 2),
                          PathFilter.create(["jpg"], [".*"]), [str(root)])
        indexer.index([str(good), str(corrupt)])
        first = failures.get(str(corrupt))
        indexer.index([str(corrupt)])
    second = failures.get(str(corrupt))
    assert first is not None and second is not None
    assert first.permanent and (first.attempts, second.attempts) == (1, 2)
    assert failures.get(str(good)) is None


# -- the command ------------------------------------------------------------------------------


def test_imgwatch_retry_requeues_what_is_asked_and_says_how_many(
    config: Config, failures: FailureLedger, work_queue: WorkQueue, tmp_path: Path
) -> None:
    root = tmp_path / "photos"
    (root / "album").mkdir(parents=True)
    paths = [root / "album" / "1.jpg", root / "album" / "2.jpg", root / "3.jpg"]
    for path in paths:
        path.write_bytes(b"bad")
        failures.record(str(path), "cannot decode", *signature(path), permanent=True, attempts=3)
    env = process_env(tmp_path, IMGWATCH_QUEUE_REDIS_URL=config.queue.redis_url,
                      IMGWATCH_QUEUE_NAME=config.queue.name)

    result = imgwatch(env, "retry", str(root / "album"))
    assert result.stdout.strip() == "requeued 2 failed file(s)"
    assert queued(work_queue) == sorted(str(p) for p in paths[:2])
    assert {f.path: f.attempts for f in failures.failed_files()} == {str(paths[0]): 0, str(paths[1]): 0,
                                                                      str(paths[2]): 3}

    assert imgwatch(env, "retry", str(paths[2])).stdout.strip() == "requeued 1 failed file(s)"
    assert imgwatch(env, "retry").stdout.strip() == "requeued 3 failed file(s)"
    (tmp_path / "elsewhere").mkdir()
    nothing = imgwatch(env, "retry", str(tmp_path / "elsewhere")).stdout
    assert nothing == f"no failed file at or below {tmp_path / 'elsewhere'}\n"
    assert len(queued(work_queue)) == 6
