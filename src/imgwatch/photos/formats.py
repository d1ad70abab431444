"""Which photo content imgwatch accepts, and what is known about each format.

Content decides, not the name: a ``.jpg`` that is HEIC inside (common after phone
transfers) is decoded as HEIC. The extensions below only choose which files the daemon
looks at (``watch.extensions``) and, for duplicates, which copy is the original.
"""

from __future__ import annotations

import functools
import os

from PIL import Image

# What Image.open may parse, whatever the file is named. Others (EPS, which runs
# Ghostscript; PSD, FITS, ...) are "not a recognised image format". AVIF is Pillow's own
# plugin (Pillow >= 11.3 wheels bundle libavif); HEIF comes from pillow-heif (libheif bundled),
# JXL from pillow-jxl-plugin (libjxl, the reference decoder). RAW is not a Pillow format: see raw.py.
PILLOW_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "JPEG2000", "AVIF", "PPM", "QOI", "HEIF", "JXL")
RAW = "RAW"

# Camera RAW files, read through LibRaw.
RAW_EXTENSIONS = ("dng", "cr2", "cr3", "nef", "nrw", "arw", "sr2", "raf", "orf", "rw2", "pef", "srw", "3fr", "iiq")
# Formats that keep an original's quality in a small file: what phones and new cameras write.
MODERN_EXTENSIONS = ("heic", "heif", "hif", "avif", "jxl")
DEFAULT_EXTENSIONS = (
    "jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", *MODERN_EXTENSIONS, *RAW_EXTENSIONS,
)

# These decoders apply the file's own orientation (HEIF's irot/imir boxes, JPEG XL's codestream
# orientation); an EXIF orientation inside them only describes what was already applied, and
# applying it as well would turn the photo twice. Pillow's AVIF plugin instead reports irot/imir
# as the EXIF orientation, so AVIF, like JPEG, PNG, WebP and TIFF, is turned by its EXIF value.
ORIENTED_BY_DECODER = frozenset({"HEIF", "JXL"})


@functools.cache
def pillow_formats() -> tuple[str, ...]:
    """The accepted formats this Pillow can open, with the HEIF and JPEG XL plugins registered."""
    register_plugins()
    return tuple(name for name in PILLOW_FORMATS if name in Image.OPEN)


@functools.cache
def register_plugins() -> None:
    import pillow_heif
    import pillow_jxl  # noqa: F401 - registers "JXL" with Pillow on import

    # Only the primary image is ever shown or embedded: skip a burst's or portrait's thumbnails,
    # depth maps and auxiliary images, which pillow-heif otherwise reads along with it.
    pillow_heif.options.THUMBNAILS = False
    pillow_heif.options.DEPTH_IMAGES = False
    pillow_heif.options.AUX_IMAGES = False
    pillow_heif.register_heif_opener()
    Image.init()


def is_raw_name(path: str) -> bool:
    return _extension(path) in RAW_EXTENSIONS


def _extension(path: str) -> str:
    return os.path.splitext(path)[1][1:].lower()
