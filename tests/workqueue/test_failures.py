"""The failed-file ledger (imgwatch.workqueue.failures) against a real embedded Valkey server."""

from __future__ import annotations

import os

from imgwatch.workqueue import FailureLedger, WorkQueue, take_snapshot


def test_failed_files_are_kept_with_reason_and_signature_until_cleared(
    work_queue: WorkQueue, failures: FailureLedger
) -> None:
    failures.record("/p/bad.jpg", "cannot decode /p/bad.jpg: truncated", 10, 1234)
    failures.record("/p/gone.jpg", "cannot read", None, None)
    assert [f.path for f in take_snapshot(work_queue, failures).failed_files] == ["/p/bad.jpg", "/p/gone.jpg"]
    assert failures.failed_signatures() == {"/p/bad.jpg": (10, 1234)}
    failures.clear(["/p/bad.jpg"])
    assert [f.path for f in failures.failed_files()] == ["/p/gone.jpg"]


def test_the_ledger_keeps_one_record_per_path_and_names_that_are_not_utf8(failures: FailureLedger) -> None:
    odd = os.fsdecode(b"/p/caf\xe9.jpg")  # a Latin-1 name on a UTF-8 system
    failures.record(odd, "first reason", 1, 1)
    failures.record(odd, "second reason", 2, 2)  # a later failure replaces the record
    [failed] = failures.failed_files()
    assert (failed.path, failed.reason, failed.size, failed.mtime_ns) == (odd, "second reason", 2, 2)
    assert failed.at > 0
    failures.clear([])  # nothing to clear is fine
    failures.clear([odd])
    assert failures.failed_files() == []


def test_each_queue_has_a_ledger_of_its_own(work_queue: WorkQueue, failures: FailureLedger) -> None:
    other = FailureLedger(work_queue.connection, work_queue.name + "-other")
    failures.record("/p/bad.jpg", "bad", 1, 1)
    assert other.failed_files() == []
    assert [f.path for f in FailureLedger.for_queue(work_queue).failed_files()] == ["/p/bad.jpg"]
