"""How names and failure reasons are shown to a person (imgwatch.display)."""

from __future__ import annotations

import errno

import pytest

from imgwatch.display import KEPT_END, file_name, human_size, name_ends, reason_beside
from imgwatch.embedding.decode import unreadable_reason
from imgwatch.errors import DecodeError


def test_a_name_keeps_its_end_whole_and_gives_way_at_the_end_of_its_start() -> None:
    assert name_ends("a.jpg") == ("", "a.jpg")
    start, end = name_ends("IMG_20240101_123456789_portrait_edit.jpg")
    assert (start, end) == ("IMG_20240101_123456789_por", "trait_edit.jpg") and len(end) == KEPT_END
    accented = "x" * 20 + "e\u0301" + "y" * (KEPT_END - 1)  # é as e + combining acute, at the cut
    start, end = name_ends(accented)
    assert start + end == accented and end.startswith("e\u0301")


def test_a_file_name_is_shown_escaped() -> None:
    assert file_name("/photos/a\nb\x1b.jpg") == "a\\nb\\x1b.jpg"
    assert file_name("/") == "/"


UNDECODABLE_NAME = "/p/caf\udce9.jpg"  # a name that is not UTF-8, as os.listdir gives it


@pytest.mark.parametrize(("path", "reason", "shown"), [
    ("/p/broken.jpg", str(DecodeError("/p/broken.jpg", "truncated image file", "replace it")),
     "cannot decode: truncated image file (replace it)"),
    ("/p/locked.jpg", unreadable_reason("/p/locked.jpg", PermissionError(errno.EACCES, "Permission denied")),
     "cannot read: Permission denied (check its permissions)"),
    ("/p/poison.heic",
     "the worker died 3 times while indexing this file (last: SIGKILL); /p/poison.heic is retried when it changes",
     "the worker died 3 times while indexing this file (last: SIGKILL); it is retried when it changes"),
    (UNDECODABLE_NAME, f"cannot index {UNDECODABLE_NAME!r}: its name is not valid UTF-8; rename it",
     "cannot index: its name is not valid UTF-8; rename it"),
    ("/p/a.jpg", "an unexpected error: disk full", "an unexpected error: disk full"),
])
def test_a_reason_beside_its_path_does_not_repeat_it(path: str, reason: str, shown: str) -> None:
    assert reason_beside(reason, path) == shown


def test_sizes_are_said_in_decimal_units_as_file_managers_show_them() -> None:
    assert [human_size(n) for n in (0, 999, 1000, 120_400, 5_100_000, 3 * 10**9, 10**16)] == [
        "0 B", "999 B", "1.0 kB", "120.4 kB", "5.1 MB", "3.0 GB", "10000.0 TB"]
