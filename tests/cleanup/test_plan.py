"""Which copies a clean-up moves where and which stay, decided before anything moves: real files,
groups made by the duplicates code from links chosen by hand."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest

from imgwatch.cleanup.plan import Destination, plan_moves, target_in_folder
from imgwatch.duplicates import group_exact
from imgwatch.errors import CleanupRefused
from imgwatch.store import StoredImage
from imgwatch.store.base import Decision


def stored(path: Path, content: bytes, pixels: int = 100) -> StoredImage:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_symlink():
        path.write_bytes(content)
    return StoredImage(path=str(path), sha256=hashlib.sha256(content).hexdigest(), size=len(content),
                       mtime_ns=0, width=pixels, height=pixels, model="test-model/v1")


def exact_group(*images: StoredImage):  # noqa: ANN201 - a DuplicateGroup
    [group] = group_exact([[image.path for image in images]], {image.path: image for image in images})
    return group


def test_each_copy_goes_below_its_roots_name_mirroring_its_path(tmp_path: Path) -> None:
    root = str(tmp_path / "Pictures")
    assert target_in_folder("/dups", f"{root}/2024/a.jpg", [root]) == "/dups/Pictures/2024/a.jpg"
    assert target_in_folder("/dups", "/elsewhere/b.jpg", [root]) == "/dups/elsewhere/b.jpg"  # no root: its whole path


def test_a_folder_inside_a_watched_one_is_refused_unless_allowed(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    group = exact_group(stored(root / "a.jpg", b"x", 200), stored(root / "b.jpg", b"x"))
    with pytest.raises(CleanupRefused, match="inside the watched folder"):
        plan_moves([group], [str(root)], Destination.folder(str(root / "dups")))
    moves, refused = plan_moves([group], [str(root)], Destination.folder(str(root / "dups"), into_watched=True))
    assert [move.target for move in moves] == [str(root / "dups" / "photos" / "b.jpg")] and refused == []


def test_a_link_a_taken_target_two_copies_for_one_place_and_a_not_duplicates_group_stay(tmp_path: Path) -> None:
    one, two = tmp_path / "one" / "photos", tmp_path / "two" / "photos"  # two roots of the same name
    dups = tmp_path / "dups"
    (dups / "photos").mkdir(parents=True)
    (dups / "photos" / "taken.jpg").write_bytes(b"someone else's")
    kept = stored(one / "keep.jpg", b"c", 400)
    os.symlink(tmp_path / "outside.jpg", one / "link.jpg")
    (tmp_path / "outside.jpg").write_bytes(b"c")
    groups = [
        exact_group(kept, stored(one / "link.jpg", b"c"), stored(one / "taken.jpg", b"c"),
                    stored(one / "same.jpg", b"c"), stored(two / "same.jpg", b"c")),
    ]
    burst = exact_group(stored(one / "b1.jpg", b"b", 400), stored(one / "b2.jpg", b"b"))
    burst = dataclasses.replace(burst, decision=Decision("not_duplicates", frozenset({"x", "y"}), None, 0.0))

    moves, refused = plan_moves([*groups, burst], [str(one), str(two)], Destination.folder(str(dups)))

    assert [move.source for move in moves] == [str(one / "same.jpg")]  # the first to claim dups/photos/same.jpg
    why = {Path(refusal.path).relative_to(tmp_path).as_posix(): refusal.reason for refusal in refused}
    assert why["one/photos/link.jpg"].startswith("a symbolic link")
    assert why["one/photos/taken.jpg"].endswith("already exists: left in place (move or rename that file, then run "
                                                "again)")
    assert "already exists" in why["two/photos/same.jpg"]
    assert why["one/photos/b2.jpg"] == "its group was decided 'not duplicates': left in place"
    assert (dups / "photos" / "taken.jpg").read_bytes() == b"someone else's"  # a plan writes nothing
