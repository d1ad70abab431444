"""The keeper rule: one small table per criterion, each case deciding on that criterion alone, with
the reason it gives; capture times read from real files' EXIF."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from imgwatch.keeper import (
    DEFAULT_RULE,
    Candidate,
    KeeperRule,
    choose_keeper,
    has_copy_mark,
    keeper_order,
    prefer_folders_problem,
    prefer_formats_problem,
    read_capture_time,
)
from imgwatch.store import StoredImage
from tests.helpers import MODEL


def image(path: str, width: int = 100, height: int = 100, size: int = 1000, mtime_ns: int = 0) -> StoredImage:
    return StoredImage(path=path, sha256="-", size=size, mtime_ns=mtime_ns, width=width, height=height, model=MODEL)


def no_capture_time(path: str) -> str | None:
    return None


def keeper(*candidates: StoredImage | Candidate, rule: KeeperRule = DEFAULT_RULE,
           capture_time: Callable[[str], str | None] = no_capture_time) -> tuple[str, str]:
    chosen = choose_keeper([c if isinstance(c, Candidate) else Candidate(c) for c in candidates], rule, capture_time)
    return chosen.image.path, chosen.reason


def test_a_file_before_a_symbolic_link_even_one_better_on_everything_else() -> None:
    assert keeper(Candidate(image("/p/a.CR3", 8000, 6000), is_link=True), image("/p/longer-name.jpg")) == (
        "/p/longer-name.jpg", "a file, not a symbolic link like a.CR3")


@pytest.mark.parametrize(("better", "worse", "reason"), [
    (image("/p/IMG_1.CR3", 3000, 2000, size=20), image("/p/IMG_1.JPG", 6000, 4000, size=900),
     "RAW preferred over JPEG"),
    (image("/p/IMG_2.HEIC", size=20), image("/p/IMG_2.jpg", size=900), "HEIC preferred over JPEG"),
    (image("/p/x.dng", 400, 300), image("/p/x.avif", 800, 600), "RAW preferred over AVIF"),
    (image("/p/x.jxl"), image("/p/x.png", 900, 700), "JXL preferred over PNG"),
    (image("/p/scan.tif"), image("/p/scan.jpeg", 900, 900), "TIFF preferred over JPEG"),
    (image("/p/x.jpg"), image("/p/x.webp", 900, 900), "JPEG preferred over WEBP"),  # unlisted: last
])
def test_the_preferred_format_first(better: StoredImage, worse: StoredImage, reason: str) -> None:
    assert keeper(worse, better) == (better.path, reason)


def test_prefer_formats_reorders_and_ties_formats() -> None:
    jpeg_first = KeeperRule.from_settings(["jpeg", "raw"])
    assert keeper(image("/p/x.nef", 900, 900), image("/p/x.jpg"), rule=jpeg_first) == (
        "/p/x.jpg", "JPEG preferred over RAW")
    dng_before_raw = KeeperRule.from_settings(["dng", "raw"])
    assert keeper(image("/p/a.nef"), image("/p/b.dng"), rule=dng_before_raw)[0] == "/p/b.dng"
    png_and_jpeg_equal = KeeperRule.from_settings(["png/jpeg"])
    assert keeper(image("/p/x.png"), image("/p/x.jpg", 900, 900), rule=png_and_jpeg_equal) == (
        "/p/x.jpg", "more pixels: 900×900 vs 100×100")


def test_a_preferred_folder_before_pixels_the_first_listed_first() -> None:
    rule = KeeperRule.from_settings(["raw"], ["/p/originals", "/p/phone"])
    assert keeper(image("/p/edits/x.jpg", 900, 900), image("/p/phone/x.jpg"), image("/p/originals/deep/x.jpg"),
                  rule=rule) == ("/p/originals/deep/x.jpg", "in a preferred folder: /p/originals")
    assert keeper(image("/p/edits/x.jpg", 900, 900), image("/p/phone/x.jpg"), rule=rule)[0] == "/p/phone/x.jpg"
    assert keeper(image("/p/phone-old/x.jpg"), image("/p/b/x.jpg", 900, 900), rule=rule)[0] == "/p/b/x.jpg"  # a prefix


@pytest.mark.parametrize(("better", "worse", "reason"), [
    (image("/p/long-name.jpg", 4032, 3024, size=100), image("/p/a.jpg", 1024, 768, size=900_000),
     "more pixels: 4032×3024 vs 1024×768"),
    (image("/p/square.jpg", 1000, 1000), image("/p/wide.jpg", 1500, 600), "more pixels: 1000×1000 vs 1500×600"),
])
def test_the_most_pixels(better: StoredImage, worse: StoredImage, reason: str) -> None:
    assert keeper(worse, better) == (better.path, reason)


def write_jpeg(path: Path, taken: str | None) -> str:
    from PIL import Image

    exif = Image.Exif()
    if taken is not None:
        exif.get_ifd(0x8769)[0x9003] = taken  # DateTimeOriginal
    Image.new("RGB", (8, 8), "grey").save(path, exif=exif)
    return str(path)


def test_the_oldest_capture_time_read_from_the_files_exif_and_only_when_it_decides(tmp_path: Path) -> None:
    early = write_jpeg(tmp_path / "later-name.jpg", "2019:07:01 09:30:00")
    late = write_jpeg(tmp_path / "a.jpg", "2023:01:02 03:04:05")
    stripped = write_jpeg(tmp_path / "b.jpg", None)  # a messenger's copy: no EXIF left
    assert read_capture_time(early) == "2019:07:01 09:30:00" and read_capture_time(stripped) is None
    assert read_capture_time(str(tmp_path / "gone.jpg")) is None

    assert keeper(image(late), image(early), capture_time=read_capture_time) == (
        early, "taken earlier: 2019-07-01 09:30:00 vs 2023-01-02 03:04:05")
    assert keeper(image(stripped), image(late), capture_time=read_capture_time) == (
        late, "taken earlier: 2023-01-02 03:04:05 vs no capture time")

    read: list[str] = []

    def recording(path: str) -> str | None:
        read.append(path)
        return read_capture_time(path)

    keeper(image(late, 900, 900), image(early), capture_time=recording)
    assert read == []  # the pixels decided: no file was opened


@pytest.mark.parametrize(("better", "worse", "reason"), [
    (image("/p/long-name.jpg", size=5_100_000), image("/p/a.jpg", size=120_400),
     "larger file: 5,100,000 bytes vs 120,400 bytes"),
    (image("/p/long-name.jpg", size=5_100_100), image("/p/a.jpg", size=5_100_000),
     "larger file: 5,100,100 bytes vs 5,100,000 bytes"),  # what "5.1 MB" would hide
])
def test_the_largest_file(better: StoredImage, worse: StoredImage, reason: str) -> None:
    assert keeper(worse, better) == (better.path, reason)


def test_the_oldest_file() -> None:
    older = image("/p/long-name.jpg", mtime_ns=1_500_000_000 * 10**9)
    newer = image("/p/a.jpg", mtime_ns=1_700_000_000 * 10**9)
    path, reason = keeper(newer, older)
    assert path == older.path and reason.startswith("older file: modified 2017-07-1")
    # In the same second (a copy made as its original was): the milliseconds tell them apart.
    original = image("/p/IMG.jpg", mtime_ns=1_700_000_000_250_000_000)
    copy = image("/p/IMG copy.jpg", mtime_ns=1_700_000_000_900_000_000)
    path, reason = keeper(copy, original)
    assert path == original.path and re.fullmatch(r"older file: modified \S+ (\S+)\.250 vs \S+ \1\.900", reason)


def test_a_name_without_a_copy_mark_then_the_shortest_path_then_the_first() -> None:
    # Before this rule an exact copy named dropped/IMG copy.jpg beat its original on path length.
    assert keeper(image("/p/dropped/IMG copy.jpg"), image("/p/2024/summer/IMG.jpg")) == (
        "/p/2024/summer/IMG.jpg", "no copy mark in the name (IMG copy.jpg has one)")
    assert keeper(image("/p/copies/x.jpg"), image("/p/x.jpg")) == ("/p/x.jpg", "shorter path")
    assert keeper(image("/p/b.jpg"), image("/p/a.jpg")) == ("/p/a.jpg", "all else equal: first in path order")


@pytest.mark.parametrize("name", [
    "IMG copy.jpg", "IMG copy 2.jpg", "IMG - Copy.jpg", "IMG - Copy (2).jpg", "Copy of IMG.jpg", "IMG (1).jpg",
    "IMG(2).JPG", "IMG (copy).jpg", "IMG (another copy).jpg", "IMG (3rd copy).jpg", "IMG-1.jpg", "IMG_copy.png",
])
def test_copy_marks(name: str) -> None:
    assert has_copy_mark(f"/p/{name}")


@pytest.mark.parametrize("name", ["IMG_1234.jpg", "2024-05-01.jpg", "IMG-10.jpg", "copycat.jpg", "Copy.jpg",
                                  "photo (edited).jpg", "holiday-2024.heic"])
def test_names_without_a_copy_mark(name: str) -> None:
    assert not has_copy_mark(f"/p/{name}")


def test_the_order_to_keep_in_begins_with_the_keeper_and_reads_capture_times_only_of_ties(tmp_path: Path) -> None:
    early = write_jpeg(tmp_path / "x.jpg", "2019:07:01 09:30:00")
    late = write_jpeg(tmp_path / "y.jpg", "2023:01:02 03:04:05")
    copies = [Candidate(image("/p/small.jpg", 10, 10)), Candidate(image(late)), Candidate(image("/p/raw.dng")),
              Candidate(image(early)), Candidate(image("/p/link.jpg", 900, 900), is_link=True)]
    read: list[str] = []

    def recording(path: str) -> str | None:
        read.append(path)
        return read_capture_time(path)

    ordered = [c.path for c in keeper_order(copies, capture_time=recording)]
    assert ordered == ["/p/raw.dng", early, late, "/p/small.jpg", "/p/link.jpg"]
    assert ordered[0] == choose_keeper(copies, capture_time=recording).image.path
    assert set(read) == {early, late}  # the two that tie on format and pixels


def test_what_the_settings_may_hold() -> None:
    assert prefer_formats_problem(["raw", "heic/avif/jxl", "png/tiff", "jpeg"]) is None
    assert prefer_formats_problem(["dng", "raw", "JPG"]) is None
    assert "'jpgg' is no format name" in (prefer_formats_problem(["jpgg"]) or "")
    assert "'jpeg' is listed twice" in (prefer_formats_problem(["jpeg", "png/jpeg"]) or "")
    assert prefer_folders_problem(["/photos", "~/Pictures"]) is None
    assert "'photos' is not one" in (prefer_folders_problem(["photos"]) or "")
    with pytest.raises(ValueError, match="two or more"):
        choose_keeper([Candidate(image("/p/a.jpg"))])
