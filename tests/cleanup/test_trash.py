"""The freedesktop.org trash (cleanup/trash.py) on real file systems: the home trash for files on
the home's file system, a volume's own trash (``.Trash/$uid`` when sticky, else ``.Trash-$uid``) on
a tmpfs of the test's own, the .trashinfo a desktop restores from, and names taken in the trash."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgwatch.cleanup.transfer import transfer
from imgwatch.cleanup.trash import TrashSlot, choose_slot, claim_slot, home_trash, original_in, trash_for, volume_top
from tests.cleanup.conftest import sha256_bytes

ODD_NAME = os.fsdecode(b"a b \xc3\xa9 \xff.jpg")  # spaces, non-ASCII, and a byte that is not UTF-8
ODD_NAME_QUOTED = "a%20b%20%C3%A9%20%FF.jpg"
PHOTO = b"a photo's bytes"
WHEN = 1_700_000_000.0  # 2023-11-14T22:13:20 UTC
UID = str(os.getuid())


@pytest.fixture
def home_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """XDG_DATA_HOME on the temp folder's file system: its Trash is the home trash for files there."""
    data = tmp_path / "data"
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    return data


@pytest.fixture
def india_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time 5:30 ahead of UTC, so that a date written in UTC would show."""
    monkeypatch.setenv("TZ", "IST-5:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def photo_at(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(PHOTO)
    return path


def info_lines(slot: TrashSlot) -> list[str]:
    return Path(slot.info).read_text(encoding="ascii").splitlines()


# -- which trash --------------------------------------------------------------------------------


def test_a_file_on_the_homes_file_system_goes_to_the_home_trash_with_its_absolute_path(
    tmp_path: Path, home_data: Path, india_time: None
) -> None:
    photo = photo_at(tmp_path / "photos" / ODD_NAME)

    slot = choose_slot(str(photo), set())
    assert claim_slot(slot, WHEN)
    transfer(str(photo), slot.files, sha256_bytes(PHOTO))

    trash = home_data / "Trash"
    assert trash_for(str(photo)) == (trash, None)
    assert (slot.files, slot.info) == (str(trash / "files" / ODD_NAME), str(trash / "info" / f"{ODD_NAME}.trashinfo"))
    assert Path(slot.files).read_bytes() == PHOTO and not photo.exists()
    assert info_lines(slot) == ["[Trash Info]", f"Path={tmp_path}/photos/{ODD_NAME_QUOTED}",
                                "DeletionDate=2023-11-15T03:43:20"]  # local time, as the spec asks
    assert original_in(slot.info) == str(photo)
    assert {(folder.name, folder.stat().st_mode & 0o777) for folder in (trash, trash / "info", trash / "files")} == {
        ("Trash", 0o700), ("info", 0o700), ("files", 0o700)}


def test_without_xdg_data_home_or_with_a_relative_one_the_home_trash_is_under_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for unusable in ("", "relative/data"):  # the XDG spec: a relative path is invalid and ignored
        monkeypatch.setenv("XDG_DATA_HOME", unusable)
        assert home_trash() == tmp_path / "home" / ".local" / "share" / "Trash", unusable


def test_a_file_on_another_volume_goes_to_its_trash_dash_uid_with_a_relative_path(
    tmpfs: Path, home_data: Path
) -> None:
    photo = photo_at(tmpfs / "holidays" / ODD_NAME)

    slot = choose_slot(str(photo), set())
    assert claim_slot(slot, WHEN)
    transfer(str(photo), slot.files, sha256_bytes(PHOTO))

    trash = tmpfs / f".Trash-{UID}"
    assert volume_top(str(photo)) == tmpfs
    assert trash_for(str(photo)) == (trash, tmpfs)
    assert slot.files == str(trash / "files" / ODD_NAME) and Path(slot.files).read_bytes() == PHOTO
    assert info_lines(slot)[1] == f"Path=holidays/{ODD_NAME_QUOTED}"  # relative to the volume's top
    assert original_in(slot.info) == f"holidays/{ODD_NAME}"
    assert re.fullmatch(r"DeletionDate=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", info_lines(slot)[2])
    assert trash.stat().st_mode & 0o777 == 0o700
    assert not (home_data / "Trash").exists()


def test_a_sticky_dot_trash_made_by_the_administrator_holds_a_folder_per_user(tmpfs: Path, home_data: Path) -> None:
    shared = tmpfs / ".Trash"
    shared.mkdir()
    shared.chmod(0o1777)
    photo = photo_at(tmpfs / "a.jpg")

    slot = choose_slot(str(photo), set())
    assert claim_slot(slot, WHEN)

    assert trash_for(str(photo)) == (shared / UID, tmpfs)
    assert slot.files == str(shared / UID / "files" / "a.jpg")
    assert info_lines(slot)[1] == "Path=a.jpg"
    assert (shared / UID).stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("unsafe", ["not sticky", "a link to a sticky folder", "its uid folder another user's",
                                    "its uid folder a link"])
def test_a_dot_trash_that_another_user_could_have_set_up_is_not_used(tmpfs: Path, home_data: Path, unsafe: str) -> None:
    """The spec (and GIO): anyone could have made it, so files put there could be read or removed by them."""
    shared, elsewhere = tmpfs / ".Trash", tmpfs / "elsewhere"
    elsewhere.mkdir()
    elsewhere.chmod(0o1777)
    if unsafe == "not sticky":
        shared.mkdir(mode=0o777)
    elif unsafe == "a link to a sticky folder":
        shared.symlink_to(elsewhere)
    else:
        shared.mkdir()
        shared.chmod(0o1777)
        if unsafe == "its uid folder a link":
            (shared / UID).symlink_to(elsewhere)
        else:
            (shared / UID).mkdir()
            os.chown(shared / UID, os.getuid() + 4321, os.getgid() + 4321)
    photo = photo_at(tmpfs / "a.jpg")

    assert trash_for(str(photo)) == (tmpfs / f".Trash-{UID}", tmpfs)


def test_a_dash_uid_trash_that_is_a_link_is_refused_and_nothing_is_written_through_it(
    tmpfs: Path, home_data: Path
) -> None:
    (tmpfs / "someone-elses").mkdir()
    (tmpfs / f".Trash-{UID}").symlink_to(tmpfs / "someone-elses")
    slot = choose_slot(str(photo_at(tmpfs / "a.jpg")), set())

    with pytest.raises(PermissionError, match="not a folder of yours"):
        claim_slot(slot, WHEN)

    assert list((tmpfs / "someone-elses").iterdir()) == []


def test_a_file_reached_through_a_linked_folder_is_named_relative_to_its_real_volume(
    tmp_path: Path, tmpfs: Path, home_data: Path
) -> None:
    """A watched folder that is a link onto a USB disk: Path= must lead from the disk's top to the file."""
    photo_at(tmpfs / "photos" / "a.jpg")
    (tmp_path / "usb-photos").symlink_to(tmpfs / "photos")

    slot = choose_slot(str(tmp_path / "usb-photos" / "a.jpg"), set())

    assert slot.files == str(tmpfs / f".Trash-{UID}" / "files" / "a.jpg")
    assert slot.original == "photos/a.jpg"


# -- names in the trash -------------------------------------------------------------------------


def test_choose_slot_numbers_a_name_already_taken_before_its_extension(tmpfs: Path, home_data: Path) -> None:
    photo = photo_at(tmpfs / "name.jpg")
    trash = tmpfs / f".Trash-{UID}"
    photo_at(trash / "files" / "name.jpg")  # a file trashed earlier from elsewhere
    photo_at(trash / "info" / "name.2.jpg.trashinfo")  # a .trashinfo whose file is not there (yet)
    taken: set[str] = set()

    first = choose_slot(str(photo), taken)
    second = choose_slot(str(photo), taken)  # another copy of the same clean-up, same name

    assert (first.files, first.info) == (str(trash / "files" / "name.3.jpg"),
                                         str(trash / "info" / "name.3.jpg.trashinfo"))
    assert second.files == str(trash / "files" / "name.4.jpg")
    assert not Path(first.info).exists()  # choosing creates nothing


def test_claim_slot_refuses_a_slot_another_file_took_and_accepts_its_own_again(tmpfs: Path, home_data: Path) -> None:
    mine, other = photo_at(tmpfs / "a" / "x.jpg"), photo_at(tmpfs / "b" / "x.jpg")
    slot = choose_slot(str(mine), set())
    taken_meanwhile = choose_slot(str(other), set())  # the same free name, chosen before either claimed it
    assert taken_meanwhile.info == slot.info

    assert claim_slot(taken_meanwhile, WHEN)
    written = Path(slot.info).read_bytes()
    assert not claim_slot(slot, WHEN + 60)
    assert Path(slot.info).read_bytes() == written  # never over another's

    Path(slot.info).unlink()
    assert claim_slot(slot, WHEN)
    assert claim_slot(slot, WHEN + 60)  # a run killed after claiming, run again
    assert original_in(slot.info) == "a/x.jpg"
    assert "DeletionDate=" + time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(WHEN)) in info_lines(slot)


def test_original_in_an_unreadable_or_pathless_trashinfo_is_none(tmp_path: Path) -> None:
    (tmp_path / "empty.trashinfo").write_text("[Trash Info]\nDeletionDate=2023-11-15T03:43:20\n")
    assert original_in(str(tmp_path / "empty.trashinfo")) is None
    assert original_in(str(tmp_path / "missing.trashinfo")) is None
