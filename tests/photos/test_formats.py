"""What content is accepted and what each format's name says."""

from __future__ import annotations

import tomllib
from pathlib import Path

from imgwatch.config import WatchConfig
from imgwatch.photos.formats import DEFAULT_EXTENSIONS, pillow_formats

REPO = Path(__file__).resolve().parents[2]


def test_the_default_extensions_cover_what_phones_and_cameras_write() -> None:
    for extension in ("heic", "heif", "hif", "avif", "jxl", "dng", "cr2", "cr3", "nef", "nrw", "arw", "sr2", "raf",
                      "orf", "rw2", "pef", "srw", "3fr", "iiq", "jpg", "png"):
        assert extension in DEFAULT_EXTENSIONS
    assert WatchConfig().extensions == list(DEFAULT_EXTENSIONS)
    shipped = tomllib.loads((REPO / "config.toml").read_text())["watch"]["extensions"]
    assert shipped == list(DEFAULT_EXTENSIONS)


def test_this_pillow_opens_every_accepted_format() -> None:
    # AVIF needs Pillow >= 11.3 (libavif in its wheels); HEIF and JXL come from their plugins.
    assert set(pillow_formats()) >= {"JPEG", "PNG", "WEBP", "TIFF", "AVIF", "HEIF", "JXL"}
    assert "EPS" not in pillow_formats()
