"""Shots of one burst, told by their EXIF camera and time."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from PIL import Image

from imgwatch.evaluation.bursts import Shot, burst_pairs, read_shot


def write_shot(path: Path, make: str | None, model: str, taken: str | None, subsec: str | None = None) -> str:
    exif = Image.Exif()
    if make is not None:
        exif[0x010F], exif[0x0110] = make, model
    details = exif.get_ifd(0x8769)
    if taken is not None:
        details[0x9003] = taken
    if subsec is not None:
        details[0x9291] = subsec
    Image.new("RGB", (8, 8), (90, 120, 30)).save(path, "JPEG", exif=exif)
    return str(path)


def test_a_shot_is_read_from_exif(tmp_path: Path) -> None:
    shot = read_shot(write_shot(tmp_path / "a.jpg", "Apple", "iPhone 15", "2024:07:01 12:00:05", "25"))
    assert shot is not None and shot.camera == "Apple iPhone 15"
    assert shot.taken == datetime(2024, 7, 1, 12, 0, 5, 250000)
    assert read_shot(write_shot(tmp_path / "b.jpg", None, "", "2024:07:01 12:00:05")) is None  # no camera
    assert read_shot(write_shot(tmp_path / "c.jpg", "Apple", "iPhone 15", None)) is None  # no time
    (tmp_path / "d.jpg").write_bytes(b"not a photo")
    assert read_shot(str(tmp_path / "d.jpg")) is None


def test_one_camera_within_two_seconds_is_a_burst_each_pair_once() -> None:
    def shot(path: str, camera: str, second: float) -> Shot:
        return Shot(path, camera, datetime(2024, 7, 1, 12, 0, int(second), int(second % 1 * 1e6)))

    a, b = shot("a", "Canon R6", 1.0), shot("b", "Canon R6", 2.9)
    other_camera, later = shot("c", "Nikon Z6", 1.5), shot("d", "Canon R6", 4.0)
    found = burst_pairs([(a, b), (b, a), (a, other_camera), (a, later), (a, a)])
    assert [(one.path, other.path) for one, other in found] == [("a", "b")]
