"""Moving one file (cleanup/transfer.py) on real file systems: within one (a rename that never
replaces), across two (the temp folder's and a tmpfs of the test's own: copy, check, rename in,
then remove the source), a full disk, every state a kill can leave, and a real SIGKILL."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from imgwatch.cleanup.transfer import partial_path, rename_no_replace, transfer
from imgwatch.errors import ContentChanged, MoveRefused
from tests.cleanup.conftest import partials_in, sha256_bytes, whole_copies

PHOTO = b"\xff\xd8\xff\xe0 a photo's bytes " + bytes(range(256)) * 64
TAKEN_NS = 1_234_567_891_123_456_789  # an mtime with nanoseconds: the photo's date as file managers sort it


def write_photo(path: Path, content: bytes = PHOTO, mode: int = 0o640) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    path.chmod(mode)
    os.utime(path, ns=(TAKEN_NS, TAKEN_NS))
    return path


def assert_moved(source: Path, target: Path, content: bytes = PHOTO, mode: int = 0o640) -> None:
    """``target`` holds ``content`` with the photo's date and mode; ``source`` and any partial copy are gone."""
    assert not os.path.lexists(source), f"{source} is still there"
    assert target.read_bytes() == content
    assert target.stat().st_mtime_ns == TAKEN_NS
    assert target.stat().st_mode & 0o7777 == mode
    assert partials_in(source.parent, target.parent) == []


# -- within one file system ---------------------------------------------------------------------


def test_a_move_within_one_file_system_is_a_rename_keeping_bytes_date_and_mode(tmp_path: Path) -> None:
    source = write_photo(tmp_path / "photos" / "a.jpg")
    inode = source.stat().st_ino
    target = tmp_path / "duplicates" / "2024" / "a.jpg"  # folders made as needed

    transfer(str(source), str(target), sha256_bytes(PHOTO))

    assert_moved(source, target)
    assert target.stat().st_ino == inode  # renamed, not copied


def test_rename_no_replace_never_replaces_an_existing_file(tmp_path: Path) -> None:
    source = write_photo(tmp_path / "a.jpg")
    existing = write_photo(tmp_path / "b.jpg", b"another photo")

    with pytest.raises(FileExistsError):
        rename_no_replace(str(source), str(existing))

    assert source.read_bytes() == PHOTO
    assert existing.read_bytes() == b"another photo"


def test_a_target_holding_other_content_is_refused_and_both_files_stay(tmp_path: Path) -> None:
    source = write_photo(tmp_path / "photos" / "a.jpg")
    existing = write_photo(tmp_path / "duplicates" / "a.jpg", b"another photo")
    inode = existing.stat().st_ino

    with pytest.raises(MoveRefused, match="already exists with other content"):
        transfer(str(source), str(existing), sha256_bytes(PHOTO))

    assert source.read_bytes() == PHOTO
    assert existing.read_bytes() == b"another photo" and existing.stat().st_ino == inode


def test_a_source_changed_since_it_was_indexed_is_left_in_place(tmp_path: Path) -> None:
    source = write_photo(tmp_path / "photos" / "a.jpg", b"edited since")
    target = tmp_path / "duplicates" / "a.jpg"

    with pytest.raises(ContentChanged, match="changed since it was indexed"):
        transfer(str(source), str(target), sha256_bytes(PHOTO))

    assert source.read_bytes() == b"edited since"
    assert not os.path.lexists(target)


def test_a_changed_source_beside_a_whole_target_keeps_both(tmp_path: Path) -> None:
    """A kill after the copy, then the source edited: the target holds the indexed content, the source the edit."""
    source = write_photo(tmp_path / "photos" / "a.jpg", b"edited since")
    target = write_photo(tmp_path / "duplicates" / "a.jpg")

    with pytest.raises(ContentChanged, match="both are left in place"):
        transfer(str(source), str(target), sha256_bytes(PHOTO))

    assert source.read_bytes() == b"edited since" and target.read_bytes() == PHOTO


@pytest.mark.parametrize("second_name", ["the same path", "through a linked folder", "through a linked folder, "
                                         "the photo having another hard link"])
def test_one_file_under_two_names_is_refused_not_removed(tmp_path: Path, second_name: str) -> None:
    """Two names of one directory entry look like a move finished but for the unlink: the unlink would lose it."""
    source = write_photo(tmp_path / "photos" / "a.jpg")
    (tmp_path / "linked").symlink_to(tmp_path / "photos")
    if second_name.endswith("hard link"):
        os.link(source, tmp_path / "elsewhere.jpg")
    target = source if second_name == "the same path" else tmp_path / "linked" / "a.jpg"

    with pytest.raises(MoveRefused, match="are one file"):
        transfer(str(source), str(target), sha256_bytes(PHOTO))
    with pytest.raises(MoveRefused, match="are one file"):
        transfer(str(target), str(source), sha256_bytes(PHOTO))

    assert source.read_bytes() == PHOTO


def test_a_source_gone_with_no_target_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MoveRefused, match="is gone"):
        transfer(str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg"), sha256_bytes(PHOTO))


# -- across file systems ------------------------------------------------------------------------


def test_a_move_across_file_systems_and_back_keeps_bytes_date_and_mode(tmp_path: Path, tmpfs: Path) -> None:
    source = write_photo(tmp_path / "photos" / "a.jpg")
    target = tmpfs / "duplicates" / "a.jpg"
    assert source.stat().st_dev != tmpfs.stat().st_dev

    transfer(str(source), str(target), sha256_bytes(PHOTO))
    assert_moved(source, target)

    transfer(str(target), str(source), sha256_bytes(PHOTO))  # the undo
    assert_moved(target, source)


def test_a_target_with_other_content_on_another_file_system_is_refused_before_any_copy(
    tmp_path: Path, tmpfs: Path
) -> None:
    source = write_photo(tmp_path / "photos" / "a.jpg")
    existing = write_photo(tmpfs / "a.jpg", b"another photo")

    with pytest.raises(MoveRefused):
        transfer(str(source), str(existing), sha256_bytes(PHOTO))

    assert source.read_bytes() == PHOTO and existing.read_bytes() == b"another photo"
    assert partials_in(tmpfs) == []


def test_a_full_disk_leaves_the_source_whole_and_no_partial_copy(tmp_path: Path, tmpfs: Path) -> None:
    """The 8 MiB tmpfs cannot take a 12 MiB photo: the copy fails part-way and is removed at once (not
    left hidden, filling the disk, for a later run to find)."""
    content = os.urandom(12 << 20)
    source = write_photo(tmp_path / "photos" / "big.jpg", content)
    target = tmpfs / "duplicates" / "big.jpg"

    with pytest.raises(OSError) as raised:
        transfer(str(source), str(target), sha256_bytes(content))

    assert raised.value.errno == errno.ENOSPC
    assert source.read_bytes() == content and source.stat().st_mtime_ns == TAKEN_NS
    assert not os.path.lexists(target)
    assert list((tmpfs / "duplicates").iterdir()) == []  # no partial: the disk has its space back


# -- every state a kill can leave ---------------------------------------------------------------


def _source_only(source: Path, target: Path) -> None:
    write_photo(source)


def _source_and_a_stale_partial(source: Path, target: Path) -> None:
    """Killed while copying: half a copy, hidden beside the target."""
    write_photo(source)
    write_photo(Path(partial_path(str(target))), PHOTO[: len(PHOTO) // 2])


def _source_and_a_whole_target(source: Path, target: Path) -> None:
    """Killed after the copy was renamed in, before the source was removed: two whole copies."""
    write_photo(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)


def _target_only(source: Path, target: Path) -> None:
    write_photo(target)


def _target_and_a_stale_partial_beside_the_source(source: Path, target: Path) -> None:
    """An undo killed while copying back: the moved file, and half a copy hidden beside the source."""
    write_photo(target)
    write_photo(Path(partial_path(str(source))), PHOTO[: len(PHOTO) // 3])


KILLED_STATES = [_source_only, _source_and_a_stale_partial, _source_and_a_whole_target, _target_only,
                 _target_and_a_stale_partial_beside_the_source]


@pytest.mark.parametrize("undo_first", [False, True], ids=["finish", "undo"])
@pytest.mark.parametrize("killed_state", KILLED_STATES, ids=lambda state: state.__name__.strip("_"))
def test_a_rerun_or_an_undo_finishes_from_every_state_a_kill_leaves(
    tmp_path: Path, tmpfs: Path, killed_state: Callable[[Path, Path], None], undo_first: bool
) -> None:
    source, target = tmp_path / "photos" / "a.jpg", tmpfs / "duplicates" / "a.jpg"
    killed_state(source, target)
    there, back = (source, target) if not undo_first else (target, source)

    transfer(str(there), str(back), sha256_bytes(PHOTO))
    assert_moved(there, back)

    transfer(str(back), str(there), sha256_bytes(PHOTO))
    assert_moved(back, there)


def test_a_link_made_before_a_kill_within_one_file_system_is_finished(tmp_path: Path) -> None:
    """Without RENAME_NOREPLACE a move is a hard link then an unlink: a kill between leaves one file at both names."""
    source = write_photo(tmp_path / "photos" / "a.jpg")
    target = tmp_path / "duplicates" / "a.jpg"
    target.parent.mkdir()
    os.link(source, target)

    transfer(str(source), str(target), sha256_bytes(PHOTO))

    assert_moved(source, target)


# -- a real kill --------------------------------------------------------------------------------

MOVING_TO_AND_FRO = """
import sys
from imgwatch.cleanup.transfer import transfer
here, there, sha256 = sys.argv[1:4]
print("moving", flush=True)
while True:
    transfer(here, there, sha256)
    transfer(there, here, sha256)
"""

KILL_AFTER_SECONDS = (0.05, 0.3, 0.6, 1.0)  # spread so the kills land in different steps of a move


def test_a_sigkill_part_way_loses_nothing_and_doubles_nothing(
    tmp_path: Path, mount_tmpfs: Callable[[str], Path]
) -> None:
    """A process moving a 50 MiB file to a tmpfs and back, killed part-way each time; then the
    move run again: exactly one whole copy, at the target, and nothing hidden left anywhere."""
    tmpfs = mount_tmpfs("80m")  # the file and one partial copy of it
    content = os.urandom(50 << 20)
    here, there = write_photo(tmp_path / "photos" / "big.jpg", content), tmpfs / "duplicates" / "big.jpg"
    sha256 = sha256_bytes(content)

    for delay in KILL_AFTER_SECONDS:
        mover = subprocess.Popen([sys.executable, "-c", MOVING_TO_AND_FRO, str(here), str(there), sha256],
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert mover.stdout is not None and mover.stdout.readline() == "moving\n"
            time.sleep(delay)
        finally:
            mover.send_signal(signal.SIGKILL)
            mover.wait(timeout=30)
            mover.stdout.close()  # type: ignore[union-attr]
        assert whole_copies(content, here, there), f"killed after {delay}s: no whole copy left"

        transfer(str(here), str(there), sha256)

        assert whole_copies(content, here, there) == [there], f"killed after {delay}s"
        assert there.stat().st_mtime_ns == TAKEN_NS
        assert partials_in(here.parent, there.parent) == []
