"""Shots of one burst: the same camera (EXIF make and model) within BURST_SECONDS, by EXIF time.

Bursts are near-identical photos that are not copies: `imgwatch eval` shows whether they score
above the suggested duplicates threshold (then `imgwatch duplicates` groups them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from PIL import Image

BURST_SECONDS = 2.0
_EXIF_IFD = 0x8769
_MAKE, _MODEL = 0x010F, 0x0110
_DATETIME_ORIGINAL, _SUBSEC_TIME_ORIGINAL = 0x9003, 0x9291
_EXIF_TIME = "%Y:%m:%d %H:%M:%S"


@dataclass(frozen=True)
class Shot:
    path: str
    camera: str  # "make model"
    taken: datetime


def read_shot(path: str) -> Shot | None:
    """The camera and time a photo was taken, from its EXIF; None without both (or unreadable)."""
    try:
        with Image.open(path) as image:
            exif = image.getexif()
    except (OSError, ValueError, SyntaxError):
        return None
    details = exif.get_ifd(_EXIF_IFD)
    camera = " ".join(str(exif.get(tag, "")).strip("\x00 ") for tag in (_MAKE, _MODEL)).strip()
    stamp = details.get(_DATETIME_ORIGINAL)
    if not camera or not isinstance(stamp, str):
        return None
    try:
        taken = datetime.strptime(stamp.strip("\x00 "), _EXIF_TIME)
    except ValueError:
        return None
    fraction = str(details.get(_SUBSEC_TIME_ORIGINAL, "")).strip("\x00 ")
    if fraction.isdigit():
        taken = taken.replace(microsecond=int(fraction.ljust(6, "0")[:6]))
    return Shot(path, camera, taken)


def same_burst(one: Shot, other: Shot) -> bool:
    return one.camera == other.camera and abs((one.taken - other.taken).total_seconds()) <= BURST_SECONDS


def burst_pairs(pairs: Iterable[tuple[Shot, Shot]]) -> list[tuple[Shot, Shot]]:
    """The pairs of shots that are of one burst, each pair once (in either order)."""
    seen: set[frozenset[str]] = set()
    found = []
    for one, other in pairs:
        key = frozenset((one.path, other.path))
        if one.path != other.path and key not in seen and same_burst(one, other):
            seen.add(key)
            found.append((one, other))
    return found
