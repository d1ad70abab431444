"""Thumbnails: upright, made once, remade when the photo changes, private on disk."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgwatch.datadir import DataDir
from imgwatch.errors import ContentChanged, DecodeError
from imgwatch.thumbnails import ThumbnailCache, render

EXIF_ORIENTATION = 0x0112


def sha256_of(path: Path) -> str:
    """The content as indexed (the store's sha256)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sideways_jpeg(path: Path, orientation: int = 6) -> Path:
    """A 600×300 JPEG stored on its side: red left half, blue right half, EXIF says rotate.

    Orientation 6 means "rotate 90° clockwise to view": upright it is 300×600, red on top.
    """
    pixels = np.zeros((300, 600, 3), dtype=np.uint8)
    pixels[:, :300] = (220, 20, 20)
    pixels[:, 300:] = (20, 20, 220)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    Image.fromarray(pixels).save(path, "JPEG", quality=95, exif=exif.tobytes())
    return path


def dominant(image: Image.Image, box: tuple[int, int, int, int]) -> str:
    red, _, blue = np.asarray(image.crop(box).convert("RGB"), dtype=float).reshape(-1, 3).mean(axis=0)
    return "red" if red > blue else "blue"


@pytest.fixture
def cache(tmp_path: Path) -> ThumbnailCache:
    data_dir = DataDir(tmp_path / "data")
    data_dir.create()
    return ThumbnailCache.for_data_dir(data_dir)


def test_exif_orientation_is_applied(tmp_path: Path, cache: ThumbnailCache) -> None:
    photo = sideways_jpeg(tmp_path / "sideways.jpg")
    thumbnail = Image.open(cache.get(str(photo), 128, sha256_of(photo)).file)
    assert thumbnail.size == (64, 128)  # upright: portrait, long side 128
    assert dominant(thumbnail, (0, 0, 64, 50)) == "red"  # what was the left is now the top
    assert dominant(thumbnail, (0, 78, 64, 128)) == "blue"


def test_a_big_jpeg_is_drafted_and_fits_the_box(tmp_path: Path, write_photo: Callable[..., Path]) -> None:
    photo = write_photo(tmp_path / "chelsea.jpg", "chelsea")  # 451×300
    big = tmp_path / "big.jpg"
    Image.open(photo).resize((4512, 3000)).save(big, quality=90)
    thumbnail = render(str(big), 256)
    assert thumbnail.size == (256, 170)
    assert thumbnail.mode == "RGB"
    small = render(str(photo), 1600)
    assert small.size == (451, 300)  # never enlarged


def test_the_cached_file_is_reused_until_the_photo_changes(
        tmp_path: Path, cache: ThumbnailCache, write_photo: Callable[..., Path]) -> None:
    photo = write_photo(tmp_path / "photo.jpg", "astronaut")
    first = cache.get(str(photo), 256, sha256_of(photo))
    assert first.made
    made_at = first.file.stat().st_mtime_ns
    again = cache.get(str(photo), 256, sha256_of(photo))
    assert not again.made and again.file == first.file and again.etag == first.etag
    assert again.file.stat().st_mtime_ns == made_at  # not rewritten

    other_size = cache.get(str(photo), 64, sha256_of(photo))
    assert other_size.file != first.file and max(Image.open(other_size.file).size) == 64

    write_photo(photo, "coffee")  # the photo changes: new content, new mtime
    os.utime(photo, ns=(first.source.signature[1] + 10**9, first.source.signature[1] + 10**9))
    changed = cache.get(str(photo), 256, sha256_of(photo))
    assert changed.made and changed.file != first.file and changed.etag != first.etag
    assert not first.file.exists()  # the stale one is gone; the other size stays
    assert other_size.file.exists()
    assert Image.open(changed.file).size == (256, 171)  # coffee is 600×400


def test_only_the_mtime_changing_makes_a_new_thumbnail(
        tmp_path: Path, cache: ThumbnailCache, write_photo: Callable[..., Path]) -> None:
    photo = write_photo(tmp_path / "photo.jpg", "camera")
    first = cache.get(str(photo), 128, sha256_of(photo))
    os.utime(photo, ns=(first.source.signature[1], first.source.signature[1] + 5))
    second = cache.get(str(photo), 128, sha256_of(photo))
    assert second.made and second.etag != first.etag


def test_the_cache_is_private(tmp_path: Path, cache: ThumbnailCache, write_photo: Callable[..., Path]) -> None:
    photo = write_photo(tmp_path / "photo.png", "rocket")
    previous = os.umask(0o022)  # even under a lax umask
    try:
        thumbnail = cache.get(str(photo), 128, sha256_of(photo))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(thumbnail.file.stat().st_mode) == 0o600
    assert stat.S_IMODE(thumbnail.file.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(cache.directory.stat().st_mode) == 0o700
    assert cache.directory == tmp_path / "data" / "thumbnails"
    assert not [p for p in thumbnail.file.parent.iterdir() if p.name.startswith(".tmp-")]


def test_transparency_shows_on_white(tmp_path: Path) -> None:
    pixels = np.zeros((100, 100, 4), dtype=np.uint8)  # transparent black
    pixels[40:60, 40:60] = (0, 128, 0, 255)
    Image.fromarray(pixels, "RGBA").save(tmp_path / "logo.png")
    thumbnail = render(str(tmp_path / "logo.png"), 50)
    assert thumbnail.getpixel((2, 2)) == (255, 255, 255)
    assert thumbnail.getpixel((25, 25))[1] > 100


@pytest.mark.parametrize(("content", "reason"), [
    (b"", "empty file"),
    (b"#!/bin/sh\necho not a photo\n", "not a recognised image format"),
])
def test_what_is_not_an_image_is_a_decode_error(tmp_path: Path, content: bytes, reason: str) -> None:
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(content)
    with pytest.raises(DecodeError, match=reason):
        render(str(fake), 128)


def test_the_workers_limits_apply(tmp_path: Path) -> None:
    Image.new("L", (6000, 20)).save(tmp_path / "strip.png")
    with pytest.raises(DecodeError, match="aspect ratio"):
        render(str(tmp_path / "strip.png"), 128)
    os.mkfifo(tmp_path / "pipe.jpg")  # never waited on
    with pytest.raises(DecodeError, match="not a regular file"):
        render(str(tmp_path / "pipe.jpg"), 128)


def test_only_the_indexed_content_is_rendered_or_reused(
        tmp_path: Path, cache: ThumbnailCache, write_photo: Callable[..., Path]) -> None:
    photo = write_photo(tmp_path / "photos" / "photo.png", "camera")
    indexed = sha256_of(photo)
    first = cache.get(str(photo), 128, indexed)

    old = photo.stat()
    write_photo(photo, "rocket", "PNG")  # rewritten, its mtime set back: the cached one must not be reused
    os.utime(photo, ns=(old.st_atime_ns, old.st_mtime_ns))
    with pytest.raises(ContentChanged, match="changed since it was indexed"):
        cache.get(str(photo), 128, indexed)

    secret = write_photo(tmp_path / "elsewhere" / "secret.jpg", "coffee")
    link = tmp_path / "photos" / "link.jpg"
    link.symlink_to(photo)
    photo.unlink()
    write_photo(photo, "camera", "PNG")
    linked = cache.get(str(link), 128, sha256_of(photo))
    assert linked.made and first.file.exists()
    link.unlink()
    link.symlink_to(secret)  # the link now leads elsewhere
    with pytest.raises(ContentChanged):
        cache.get(str(link), 128, sha256_of(photo))
