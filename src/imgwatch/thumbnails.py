"""Thumbnails of indexed photos: made on demand, cached on disk under the data dir.

A thumbnail is the photo upright and in sRGB (imgwatch.photos opens every format the
workers index: HEIC, RAW and the rest, which browsers cannot show, become JPEGs here),
flattened onto white if it has transparency, shrunk to fit a ``size``×``size`` box and
saved as JPEG. JPEGs (a RAW's preview too) are decoded at a reduced scale in the DCT
domain, so a 12-megapixel photo costs a few tens of milliseconds, not a full decode.

The cache lives in ``<data_dir>/thumbnails`` (folders 0700, files 0600). A file is named
by its photo's path, the size and the photo's signature on disk (size, mtime, ctime, inode:
files.signature_of), so a changed photo gets a new thumbnail and the one it replaces is
deleted. The same key is the ETag the web page sends, so a browser revalidating an
unchanged thumbnail costs one ``stat``.

Only the indexed content is rendered: a thumbnail is made from bytes whose SHA-256 is the
one the store holds (ContentChanged otherwise), and is reused only while the file keeps the
signature it had when those bytes were read. A file swapped for another, or a link pointed
elsewhere, has another signature, so it is read and checked again.

Decoding applies the limits the workers apply: only regular files up to ``MAX_FILE_BYTES``
(read by :mod:`imgwatch.embedding.decode`, which loads torch, so it is imported when the
first thumbnail is made), only the accepted formats, and the aspect-ratio and pixel limits
checked on the header before any pixel is decoded (:mod:`imgwatch.photos.limits`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from imgwatch.datadir import DataDir
from imgwatch.errors import ContentChanged, DecodeError
from imgwatch.files import Signature, signature_of
from imgwatch.photos import open_photo
from imgwatch.photos.budget import DecodeBudget

THUMBNAILS_DIR_NAME = "thumbnails"
# Bump when the rendering changes, so cached thumbnails made the old way are not reused.
RENDER_VERSION = 3  # 2: every format, colours converted to sRGB; 3: only checked content, keyed by signature
JPEG_QUALITY = 85
BACKGROUND = (255, 255, 255)  # what shows through transparent pixels


@dataclass(frozen=True)
class SourceState:
    """A photo's file as it is on disk now: what its thumbnail is keyed on."""

    path: str
    signature: Signature

    @classmethod
    def of(cls, path: str) -> SourceState:
        """Stat ``path`` (following links, as decoding does); OSError if it cannot be."""
        return cls(path, signature_of(os.stat(path)))

    def key(self, size: int) -> str:
        """Names the thumbnail of this content at ``size``: it changes when the file does."""
        state = f"{RENDER_VERSION}:{size}:" + ":".join(map(str, self.signature))
        return f"{size}-{hashlib.sha256(state.encode()).hexdigest()[:20]}"

    def etag(self, size: int) -> str:
        return f'"{self.key(size)}"'

    @property
    def mtime(self) -> float:
        return self.signature[1] / 1e9


@dataclass(frozen=True)
class Thumbnail:
    file: Path  # the cached JPEG
    source: SourceState
    etag: str
    made: bool  # True when this call rendered it, False when it came from the cache


def render(path: str, size: int) -> Image.Image:
    """The photo at ``path`` upright, in sRGB, fitting a ``size``×``size`` box.

    Raises DecodeError (not an image, too large, damaged) or OSError (unreadable).
    Never enlarges a photo smaller than the box.
    """
    from imgwatch.embedding.decode import read_file  # loads torch: only when a thumbnail is made

    _facts, data = read_file(path)  # regular files only, up to MAX_FILE_BYTES
    return render_data(data, path, size)


def render_data(data: bytes, path: str, size: int) -> Image.Image:
    """:func:`render` of bytes already read from ``path``."""
    photo = open_photo(data, path, min_long_side=size)  # the workers' limits, checked on the header
    try:
        flat = _flattened(photo.image)
        flat.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad data
        raise DecodeError(path, f"cannot make a thumbnail ({type(exc).__name__}: {exc})",
                          "the file is damaged or changed since it was indexed") from exc
    return flat


class ThumbnailCache:
    """Thumbnails on disk: ``get(path, size)`` renders once, then reuses the file."""

    def __init__(self, directory: Path, budget: DecodeBudget | None = None) -> None:
        self.directory = directory
        self.budget = budget  # renders wait their turn in it (the web server's); None: render at once

    @classmethod
    def for_data_dir(cls, data_dir: DataDir, budget: DecodeBudget | None = None) -> ThumbnailCache:
        return cls(data_dir.path / THUMBNAILS_DIR_NAME, budget)

    def file_for(self, source: SourceState, size: int) -> Path:
        path_key = _path_key(source.path)
        return self.directory / path_key[:2] / f"{path_key}-{source.key(size)}.jpg"

    def get(self, path: str, size: int, sha256: str) -> Thumbnail:
        """The cached thumbnail of ``path`` at ``size``, rendered now if missing or stale.

        ``sha256``: the indexed content; the file is rendered only while it still has it.
        Raises OSError when the photo cannot be read, DecodeError when it cannot be decoded,
        ContentChanged when it no longer holds the indexed content.
        """
        from imgwatch.embedding.decode import read_file  # loads torch: only when a thumbnail is made

        current = SourceState.of(path)
        file = self.file_for(current, size)
        if file.is_file():
            return Thumbnail(file, current, current.etag(size), made=False)
        facts, data = read_file(path)  # regular files only, up to MAX_FILE_BYTES
        if facts.sha256 != sha256:
            raise ContentChanged(f"{path} changed since it was indexed; it is shown again once re-indexed")
        source = SourceState(path, facts.signature)  # of the open file the bytes came from
        file = self.file_for(source, size)
        with self.budget.admit(data, path) if self.budget else contextlib.nullcontext():
            image = render_data(data, path, size)
        self._write(file, image)
        self._drop_stale(file, source, size)
        return Thumbnail(file, source, source.etag(size), made=True)

    def _write(self, file: Path, image: Image.Image) -> None:
        shard = file.parent
        self._make_private_dir(self.directory)
        self._make_private_dir(shard)
        fd, temporary = tempfile.mkstemp(dir=shard, prefix=".tmp-", suffix=".jpg")  # 0600
        try:
            with os.fdopen(fd, "wb") as handle:
                image.save(handle, "JPEG", quality=JPEG_QUALITY)
            os.replace(temporary, file)  # readers see a whole file or none
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def _drop_stale(self, current: Path, source: SourceState, size: int) -> None:
        """Delete this photo's thumbnails of the same size made from an older version of it."""
        prefix = f"{_path_key(source.path)}-{size}-"
        for other in current.parent.glob(prefix + "*.jpg"):
            if other != current:
                with contextlib.suppress(OSError):
                    other.unlink()

    @staticmethod
    def _make_private_dir(directory: Path) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.stat()
        if info.st_mode & 0o077 and info.st_uid == os.geteuid():
            directory.chmod(0o700)


def _path_key(path: str) -> str:
    return hashlib.sha256(os.fsencode(path)).hexdigest()[:32]


def _flattened(image: Image.Image) -> Image.Image:
    """RGB, with transparent areas shown on white (not as whatever colour they hide)."""
    from imgwatch.embedding.decode import to_rgb

    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if not has_alpha:
        return to_rgb(image)
    rgba = image.convert("RGBA")
    background = Image.new("RGB", rgba.size, BACKGROUND)
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background
