"""Which copy of a photo to keep, and why, in one line: the ``[duplicates]`` keeper rule.

The rule, criterion by criterion, each one deciding only among the copies the ones before it tie:

1. a file, not a symbolic link (deleting a link's target would leave a broken link);
2. the preferred format (``duplicates.prefer_formats``; default RAW, then HEIC/AVIF/JXL, then
   PNG/TIFF, then JPEG, then any other), told by the file's extension, so no file is read;
3. below a preferred folder (``duplicates.prefer_folders``, the first listed wins);
4. the most pixels (width × height);
5. the oldest capture time (EXIF DateTimeOriginal, read from the file's header only when the
   criteria before tie; a copy without one comes after copies with one: messengers strip it);
6. the largest file;
7. the oldest file (modification time);
8. a name without a copy mark (" copy", "(1)", "-1", "Copy of " ...);
9. the shortest path, then the alphabetically first.

:func:`choose_keeper` returns the keeper with the reason: the criterion that set it apart from
the runner-up (the copy that tied with it longest), e.g. "RAW preferred over JPEG".
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from imgwatch.photos.formats import DEFAULT_EXTENSIONS, RAW_EXTENSIONS

if TYPE_CHECKING:  # config.py checks [duplicates] with this module, and the store imports config
    from imgwatch.store.base import StoredImage

RAW = "raw"
# Format names a person writes, each standing for the extensions it is stored under.
FORMAT_EXTENSIONS: dict[str, tuple[str, ...]] = {
    RAW: RAW_EXTENSIONS, "jpeg": ("jpg", "jpeg", "jpe"), "heic": ("heic", "heif", "hif"), "tiff": ("tif", "tiff"),
}
# prefer_formats entries are tiers, best first; formats in one entry, joined by "/", rank equal.
DEFAULT_PREFER_FORMATS = ["raw", "heic/avif/jxl", "png/tiff", "jpeg"]
TIER_SEPARATOR = "/"

# Copy marks at the end of a name's stem (or "Copy of " at its start) that file managers, browsers
# and sync tools add: "IMG copy", "IMG copy 2" (macOS), "IMG - Copy", "Copy of IMG" (Windows, Google
# Drive), "IMG (1)" (browsers, Windows), "IMG (copy)", "IMG (another copy)", "IMG (3rd copy)" (GNOME),
# "IMG-1" (sync tools). "-1" to "-9" only: "2024-05-01" ends in a date, not a copy mark.
COPY_MARK = re.compile(
    r"^copy of |[ _-]copy( \d+)?$|\s*\((\d+|copy|another copy|\d+(st|nd|rd|th) copy)\)$|-[1-9]$",
    re.IGNORECASE,
)
# EXIF DateTimeOriginal, "YYYY:MM:DD HH:MM:SS": sorted as text it sorts by time.
EXIF_IFD, DATETIME_ORIGINAL = 0x8769, 0x9003
EXIF_DATETIME = re.compile(r"\d{4}:\d{2}:\d{2} \d{2}:\d{2}:\d{2}")


def has_copy_mark(path: str) -> bool:
    stem = os.path.splitext(os.path.basename(path))[0]
    return COPY_MARK.search(stem) is not None


def format_name(path: str) -> str:
    """The format a file is named as: "raw", "jpeg", "heic", "tiff" or its extension (lower case)."""
    extension = os.path.splitext(path)[1][1:].lower()
    return next((name for name, extensions in FORMAT_EXTENSIONS.items() if extension in extensions), extension)


def known_format_names() -> set[str]:
    """The names prefer_formats accepts: "raw" and the other FORMAT_EXTENSIONS names, and any image
    extension (e.g. "dng" to rank DNG before the other RAWs: the first tier naming a format counts)."""
    aliases = (extension for extensions in FORMAT_EXTENSIONS.values() for extension in extensions)
    return {*FORMAT_EXTENSIONS, *DEFAULT_EXTENSIONS, *aliases}


def extensions_of(name: str) -> tuple[str, ...]:
    """The extensions a prefer_formats name stands for."""
    return FORMAT_EXTENSIONS.get(name, (name,))


def prefer_formats_problem(entries: Sequence[str]) -> str | None:
    """Why ``entries`` is no valid duplicates.prefer_formats (an unknown or repeated name), or None."""
    known, seen = known_format_names(), set()
    for entry in entries:
        for name in entry.lower().split(TIER_SEPARATOR):
            name = name.strip()
            if name not in known:
                names = sorted({format_name(f"x.{extension}") for extension in DEFAULT_EXTENSIONS})
                return (f"format names best first, formats of equal rank joined by '/', e.g. "
                        f"{', '.join(DEFAULT_PREFER_FORMATS)}; {name!r} is no format name ({', '.join(names)}, "
                        "or an image extension such as dng)")
            if name in seen:
                return f"each format once; {name!r} is listed twice"
            seen.add(name)
    return None


def prefer_folders_problem(entries: Sequence[str]) -> str | None:
    """Why ``entries`` is no valid duplicates.prefer_folders (a relative or empty path), or None."""
    for entry in entries:
        if not os.path.isabs(os.path.expanduser(entry)):
            return f"absolute folder paths (or from ~), best first; {entry!r} is not one"
    return None


def read_capture_time(path: str) -> str | None:
    """The photo's EXIF DateTimeOriginal ("YYYY:MM:DD HH:MM:SS"), read from its header; None when it
    has none or cannot be read (a RAW that Pillow does not open, a file gone)."""
    from PIL import Image

    from imgwatch.photos.formats import register_plugins

    register_plugins()
    try:
        with Image.open(path) as image:  # reads the header, not the pixels
            value = image.getexif().get_ifd(EXIF_IFD).get(DATETIME_ORIGINAL)
    except Exception:  # noqa: BLE001 - any unreadable header only means "no capture time"
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return value[:19] if isinstance(value, str) and EXIF_DATETIME.match(value) else None


@dataclass(frozen=True)
class Candidate:
    """A copy the keeper is chosen among: its stored facts, and whether its path is a symbolic link."""

    image: StoredImage
    is_link: bool = False

    @property
    def path(self) -> str:
        return self.image.path


@dataclass(frozen=True)
class Keeper:
    image: StoredImage
    reason: str  # one line: why this copy and not the runner-up


@dataclass(frozen=True)
class _Criterion:
    value: Callable[[Candidate], Any]  # lower is better
    reason: Callable[[Candidate, Candidate], str]  # (the keeper, the runner-up) -> why the keeper


@dataclass(frozen=True)
class KeeperRule:
    """The configured parts of the rule: format tiers (best first) and preferred folders (best first)."""

    format_tiers: tuple[frozenset[str], ...]  # extensions, lower case
    folders: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, prefer_formats: Iterable[str], prefer_folders: Iterable[str] = ()) -> KeeperRule:
        """From duplicates.prefer_formats and prefer_folders as config.py checked them."""
        tiers = tuple(frozenset(extension for name in entry.split(TIER_SEPARATOR)
                                for extension in extensions_of(name.strip().lower()))
                      for entry in prefer_formats)
        folders = tuple(os.path.realpath(os.path.expanduser(folder)) for folder in prefer_folders)
        return cls(tiers, folders)

    def format_rank(self, path: str) -> int:
        extension = os.path.splitext(path)[1][1:].lower()
        return next((rank for rank, tier in enumerate(self.format_tiers) if extension in tier), len(self.format_tiers))

    def folder_rank(self, path: str) -> int:
        return next((rank for rank, folder in enumerate(self.folders)
                     if path.startswith(folder.rstrip(os.sep) + os.sep)), len(self.folders))

    def criteria(self, capture_time: Callable[[str], str | None]) -> list[_Criterion]:
        def taken(candidate: Candidate) -> tuple[int, str]:
            value = capture_time(candidate.path)
            return (0, value) if value is not None else (1, "")

        def pixels(candidate: Candidate) -> str:
            return f"{candidate.image.width}×{candidate.image.height}"

        return [
            _Criterion(lambda c: c.is_link, lambda k, r: f"a file, not a symbolic link like {_name(r)}"),
            _Criterion(lambda c: self.format_rank(c.path),
                       lambda k, r: f"{_format_label(k.path)} preferred over {_format_label(r.path)}"),
            _Criterion(lambda c: self.folder_rank(c.path),
                       lambda k, r: f"in a preferred folder: {self.folders[self.folder_rank(k.path)]}"),
            _Criterion(lambda c: -c.image.width * c.image.height,
                       lambda k, r: f"more pixels: {pixels(k)} vs {pixels(r)}"),
            _Criterion(taken, lambda k, r: f"taken earlier: {_exif_time(capture_time(k.path))} vs "
                                           f"{_exif_time(capture_time(r.path)) or 'no capture time'}"),
            _Criterion(lambda c: -c.image.size,
                       lambda k, r: f"larger file: {_sizes(k, r)}"),
            _Criterion(lambda c: c.image.mtime_ns,
                       lambda k, r: f"older file: modified {_mtimes(k, r)}"),
            _Criterion(lambda c: has_copy_mark(c.path), lambda k, r: f"no copy mark in the name ({_name(r)} has one)"),
            _Criterion(lambda c: len(c.path), lambda k, r: "shorter path"),
            _Criterion(lambda c: c.path, lambda k, r: "all else equal: first in path order"),
        ]


DEFAULT_RULE = KeeperRule.from_settings(DEFAULT_PREFER_FORMATS)


def choose_keeper(candidates: Iterable[Candidate], rule: KeeperRule = DEFAULT_RULE,
                  capture_time: Callable[[str], str | None] = read_capture_time) -> Keeper:
    """The copy to keep among ``candidates`` (at least two, distinct paths) and why, by ``rule``.

    Criterion by criterion, only the copies that tie on every criterion so far stay in the running,
    so a costly one (the capture time, read from the file) is asked only of those. The reason is
    the last criterion that left a copy behind: what set the keeper apart from the runner-up.
    """
    running = sorted(candidates, key=lambda c: c.path)
    if len(running) < 2:
        raise ValueError("a keeper is chosen among two or more copies")
    for criterion in rule.criteria(capture_time):
        values = {c.path: criterion.value(c) for c in running}
        best = min(values.values())
        behind = [c for c in running if values[c.path] != best]
        running = [c for c in running if values[c.path] == best]
        if len(running) == 1:
            runner_up = min(behind, key=lambda c: (values[c.path], c.path))
            return Keeper(running[0].image, criterion.reason(running[0], runner_up))
    raise AssertionError("paths are distinct: the last criterion leaves one")


def keeper_order(candidates: Iterable[Candidate], rule: KeeperRule = DEFAULT_RULE,
                 capture_time: Callable[[str], str | None] = read_capture_time) -> list[Candidate]:
    """``candidates`` best to keep first, by the criteria choose_keeper applies (its keeper comes
    first). Two are compared criterion by criterion, so the capture time is read only of copies
    that tie with another on everything before it."""
    criteria = rule.criteria(capture_time)

    def compare(one: Candidate, other: Candidate) -> int:
        for criterion in criteria:
            a, b = criterion.value(one), criterion.value(other)
            if a != b:
                return -1 if a < b else 1
        return 0

    return sorted(candidates, key=functools.cmp_to_key(compare))


def _format_label(path: str) -> str:
    return format_name(path).upper() or "no extension"


def _name(candidate: Candidate) -> str:
    from imgwatch.errors import printable

    return printable(os.path.basename(candidate.path))


def _exif_time(value: str | None) -> str:
    """EXIF's "2024:05:01 10:00:00" as "2024-05-01 10:00:00"."""
    return value.replace(":", "-", 2) if value else ""


def _mtimes(kept: Candidate, other: Candidate) -> str:
    """Both modification times, to the second; to the millisecond when the seconds are the same
    (a copy made in the same second as its original)."""
    shown = [time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c.image.mtime_ns // 10**9)) for c in (kept, other)]
    if shown[0] == shown[1]:
        shown = [f"{text}.{c.image.mtime_ns // 10**6 % 1000:03d}" for text, c in zip(shown, (kept, other), strict=True)]
    return f"{shown[0]} vs {shown[1]}"


def _sizes(keeper: Candidate, runner_up: Candidate) -> str:
    """In bytes: a size rounded for people would often read the same for two copies."""
    return f"{keeper.image.size:,} bytes vs {runner_up.image.size:,} bytes"
