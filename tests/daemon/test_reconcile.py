from __future__ import annotations

import os
from pathlib import Path

import pytest

from imgwatch.daemon.reconcile import KnownFailure, plan_reconcile
from imgwatch.files import PathFilter, signature_of
from imgwatch.store import FileState

FILTER = PathFilter.create(["jpg", "png"], [".*", "@eaDir"])


def state_of(path: Path) -> FileState:
    return FileState(str(path), *signature_of(path.stat()))


def test_new_changed_gone_and_unchanged_files_are_told_apart(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    unchanged = root / "same.jpg"
    unchanged.write_bytes(b"1")
    changed = root / "sub" / "changed.png"
    changed.write_bytes(b"22")
    new = root / "sub" / "new.JPG"
    new.write_bytes(b"3")
    (root / ".hidden.jpg").write_bytes(b"h")
    (root / "@eaDir").mkdir()
    (root / "@eaDir" / "thumb.jpg").write_bytes(b"t")
    (root / "readme.txt").write_text("no")

    stored = [
        state_of(unchanged),
        FileState(str(changed), 2, changed.stat().st_mtime_ns - 1_000_000_000),
        FileState(str(root / "deleted.jpg"), 5, 1),
    ]
    plan = plan_reconcile([str(root)], FILTER, stored)
    assert plan.changed == sorted([str(changed), str(new)])
    assert plan.gone == [str(root / "deleted.jpg")]
    assert plan.unchanged == 1


def test_a_file_rewritten_with_its_old_size_and_mtime_or_stored_without_a_full_signature_is_changed(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    rewritten, legacy, same = root / "rewritten.jpg", root / "legacy.jpg", root / "same.jpg"
    for photo in (rewritten, legacy, same):
        photo.write_bytes(b"before")
    stored = [state_of(rewritten), state_of(same),
              FileState(str(legacy), legacy.stat().st_size, legacy.stat().st_mtime_ns)]  # an older store's row
    old = rewritten.stat()
    rewritten.write_bytes(b"after!")
    os.utime(rewritten, ns=(old.st_atime_ns, old.st_mtime_ns))

    plan = plan_reconcile([str(root)], FILTER, stored)
    assert plan.changed == [str(legacy), str(rewritten)]
    assert plan.unchanged == 1


def test_an_unchanged_file_that_failed_before_is_not_retried_but_a_changed_one_is(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    bad = root / "bad.jpg"
    bad.write_bytes(b"not an image")
    fixed = root / "fixed.jpg"
    fixed.write_bytes(b"now complete")
    failed = {str(bad): (bad.stat().st_size, bad.stat().st_mtime_ns), str(fixed): (3, 1),
              str(root / "deleted-bad.jpg"): (1, 1), str(tmp_path / "elsewhere" / "bad.jpg"): (1, 1)}
    plan = plan_reconcile([str(root)], FILTER, [], failed)
    assert plan.changed == [str(fixed)]
    assert plan.known_failures == 1
    assert plan.gone == [str(root / "deleted-bad.jpg")]  # enqueued so its failure record is cleared


def test_unchanged_failures_are_retried_only_when_the_ledger_says_attempts_are_left(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    files = {name: root / f"{name}.jpg" for name in ["transient", "exhausted", "permanent-changed"]}
    for path in files.values():
        path.write_bytes(b"x")

    def signature(path: Path) -> tuple[int, int]:
        return path.stat().st_size, path.stat().st_mtime_ns

    failed = {
        str(files["transient"]): KnownFailure(*signature(files["transient"]), retry_unchanged=True),
        str(files["exhausted"]): KnownFailure(*signature(files["exhausted"]), retry_unchanged=False),
        str(files["permanent-changed"]): KnownFailure(1, 1, retry_unchanged=False),
    }
    plan = plan_reconcile([str(root)], FILTER, [], failed)
    assert plan.changed == sorted([str(files["transient"]), str(files["permanent-changed"])])
    assert (plan.known_failures, plan.retried_failures) == (1, 1)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a folder whatever its mode")
def test_unreadable_folders_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "root"
    locked = root / "locked"
    locked.mkdir(parents=True)
    (locked / "a.jpg").write_bytes(b"x")
    (root / "b.jpg").write_bytes(b"x")
    os.chmod(locked, 0)
    try:
        plan = plan_reconcile([str(root)], FILTER, [])
    finally:
        os.chmod(locked, 0o755)
    assert plan.changed == [str(root / "b.jpg")]
