"""Bytes in, an upright sRGB picture out: every accepted format, at the smallest size that will do.

Callers say how small the picture may be (the model needs a short side of 704 before its own
resize, a thumbnail its box); the reader then uses each decoder's cheap path: JPEGs (a RAW's
embedded preview too) decode at 1/2^k scale in the DCT domain, a RAW without a usable preview is
developed at half size, and what decoded at full size (PNG, HEIF, AVIF, JPEG XL, ...) is
box-reduced before the colour conversion. Sizes are checked on the header first (limits.py).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, replace

from PIL import Image, UnidentifiedImageError
from PIL.JpegImagePlugin import JpegImageFile

from imgwatch.errors import DecodeError
from imgwatch.photos import colour, formats, raw
from imgwatch.photos.limits import check_size

EXIF_ORIENTATION_TAG = 0x0112
DECODED = "decoded"  # Photo.source of every format but RAW

# EXIF orientations 5..8 swap width and height when applied.
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
# EXIF orientation -> the transpose that turns the stored image upright (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Modes a colour conversion takes as they are; other modes are made RGB(A) first.
_COLOUR_MODES = frozenset({"RGB", "RGBA", "L", "CMYK"})


@dataclass(frozen=True)
class Photo:
    """A decoded photo, upright and in sRGB (alpha kept: callers flatten or drop it)."""

    image: Image.Image
    width: int  # the decoded picture's width and height at full scale, upright:
    height: int  # ``image`` is that picture reduced ``reduced_by`` times
    reduced_by: int
    format: str  # Pillow's name ("JPEG", "HEIF", "AVIF", "JXL", ...) or "RAW"
    source: str  # DECODED, or for a RAW raw.EMBEDDED_PREVIEW / raw.HALF_SIZE_DEMOSAIC
    size: tuple[int, int]  # the photo's own width and height, upright: a RAW's developed size


def open_photo(data: bytes, path: str, *, min_short_side: int | None = None,
               min_long_side: int | None = None) -> Photo:
    """Decode ``data`` (the file at ``path``, named in errors) no smaller than asked; None: full size.

    Raises DecodeError for anything that is not an accepted, decodable photo within the limits.
    """
    if not data:
        raise DecodeError(
            path,
            "empty file (0 bytes)",
            "the file may still be being written, or was saved empty; replace it with a complete copy",
        )
    try:
        wanted = _Wanted(min_short_side, min_long_side)
        if raw.may_be_raw(data, formats.is_raw_name(path)):
            picture = raw.read_raw(data, path)
            if picture is not None:
                return _from_raw(picture, path, wanted)
        # Image.open reads only the header (and raises DecompressionBombError for absurd sizes);
        # load() happens inside the try so truncation is caught.
        image = Image.open(io.BytesIO(data), formats=formats.pillow_formats())
        return _from_pillow(image, path, wanted, data)
    except DecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - the decoders raise many types for bad data
        raise describe_failure(path, exc) from exc


def read_orientation(image: Image.Image) -> int:
    """The orientation (1..8) to apply to an opened image; 1 where the decoder applied the file's own."""
    if image.format in formats.ORIENTED_BY_DECODER:
        return 1
    value = image.getexif().get(EXIF_ORIENTATION_TAG)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def displayed_size(orientation: int, stored_size: tuple[int, int]) -> tuple[int, int]:
    width, height = stored_size
    if orientation in _TRANSPOSING_ORIENTATIONS:
        return height, width
    return width, height


def upright(image: Image.Image, orientation: int) -> Image.Image:
    method = _UPRIGHT.get(orientation)
    return image.transpose(method) if method is not None else image


@dataclass(frozen=True)
class Header:
    """What a photo's header says, read without decoding its pixels."""

    format: str  # "JPEG", "HEIF", "RAW"...
    source: str  # what the reader decodes: "decoded", or a RAW's "embedded preview" / "half-size demosaic"
    size: tuple[int, int]  # (width, height) as the reader opens it (a RAW's developed size)


def read_header(data: bytes, path: str) -> Header:
    """The header of a file as the reader would open it; DecodeError when it is not an accepted photo."""
    try:
        if raw.may_be_raw(data, formats.is_raw_name(path)):
            picture = raw.read_raw(data, path, develop=False)
            if picture is not None:
                return Header(formats.RAW, picture.source, picture.size)
        with Image.open(io.BytesIO(data), formats=formats.pillow_formats()) as image:
            return Header(image.format or "", DECODED, image.size)
    except DecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - the decoders raise many types for bad data
        raise describe_failure(path, exc) from exc


def kind_of(data: bytes, path: str) -> tuple[str, str]:
    """(format, source) of a file without decoding its pixels: ("RAW", "embedded preview"), ("HEIF", "decoded")...

    Raises DecodeError when it is not an accepted photo.
    """
    header = read_header(data, path)
    return header.format, header.source


@dataclass(frozen=True)
class _Wanted:
    min_short_side: int | None
    min_long_side: int | None

    def short_side(self, size: tuple[int, int]) -> int | None:
        """The smallest short side, for a picture of ``size``, that still gives what was asked."""
        short, long = sorted(size)
        if self.min_short_side is not None:
            return self.min_short_side
        if self.min_long_side is not None:
            return max(1, math.ceil(self.min_long_side * short / long))
        return None


def _from_pillow(image: Image.Image, path: str, wanted: _Wanted, data: bytes, orientation: int | None = None) -> Photo:
    stored_size = image.size  # draft() below shrinks image.size
    check_size(path, *stored_size)  # before any pixel is decoded
    needed = wanted.short_side(stored_size)
    # JpegImageFile includes MPO, which many cameras write.
    reduced_by = _draft_jpeg(image, needed) if needed and isinstance(image, JpegImageFile) else 1
    image.load()
    if orientation is None:
        orientation = read_orientation(image)  # after load(): PNG may keep its EXIF after the pixel data
    width, height = displayed_size(orientation, stored_size)
    picture = upright(image, orientation)
    if reduced_by == 1 and needed:
        picture, reduced_by = _box_reduce(picture, needed)
    nclx = image.info.get("nclx_profile") or (colour.nclx_in_isobmff(data) if image.format == "AVIF" else None)
    picture = colour.to_srgb(_colour_ready(picture), image.info.get("icc_profile"), nclx)
    return Photo(picture, width, height, reduced_by, image.format or "", DECODED, (width, height))


def _from_raw(picture: raw.RawPicture, path: str, wanted: _Wanted) -> Photo:
    if picture.preview is not None:
        preview = Image.open(io.BytesIO(picture.preview), formats=("JPEG",))
        # The camera's orientation is the RAW's; a preview's own EXIF (if any) is not trusted to agree.
        decoded = _from_pillow(preview, path, wanted, picture.preview, orientation=picture.orientation)
        return replace(decoded, format=formats.RAW, source=picture.source, size=picture.size)
    assert picture.pixels is not None  # noqa: S101 - read_raw develops when there is no preview
    developed = picture.pixels
    width, height = picture.size
    reduced_by = max(1, round(min(width, height) / min(developed.size)))
    needed = wanted.short_side(picture.size)
    if needed:
        developed, further = _box_reduce(developed, needed)
        reduced_by *= further
    return Photo(developed, width, height, reduced_by, formats.RAW, picture.source, picture.size)


def _draft_jpeg(image: JpegImageFile, needed: int) -> int:
    """Ask libjpeg to decode at the smallest 1/2^k scale that keeps a short side >= ``needed``; returns 2^k.

    Pillow picks the largest supported scale whose result is still at least the
    requested size in both dimensions, so requesting a square of ``needed`` keeps the
    short side >= that, whatever the aspect.
    """
    if min(image.size) < 2 * needed:
        return 1
    stored_width = image.size[0]
    drafted = image.draft(None, (needed, needed))
    if drafted is None:  # Pillow declined (e.g. an unusual tile layout): decoded at full size
        return 1
    _, covered_box = drafted  # (0, 0, stored_width / scale, stored_height / scale)
    return round(stored_width / covered_box[2])


def _box_reduce(image: Image.Image, needed: int) -> tuple[Image.Image, int]:
    """Integer box-downscale a picture decoded at full size; returns the factor."""
    factor = min(image.size) // needed
    if factor < 2:
        return image, 1
    return image.reduce(factor), factor


def _colour_ready(image: Image.Image) -> Image.Image:
    """A mode the colour conversion takes: palette and grey-with-alpha images become RGB(A)."""
    if image.mode in _COLOUR_MODES or image.mode.startswith("I") or image.mode == "F":
        return image  # 16-bit and float modes are handled by their users (embedding.decode.to_rgb)
    has_alpha = image.mode in ("LA", "PA", "RGBa", "La") or "transparency" in image.info
    return image.convert("RGBA" if has_alpha else "RGB")


def describe_failure(path: str, exc: Exception) -> DecodeError:
    if isinstance(exc, Image.DecompressionBombError):
        return DecodeError(
            path,
            f"image is too large to decode safely ({exc})",
            "it exceeds Pillow's decompression-bomb limit; shrink the image or remove it from the folder",
        )
    if isinstance(exc, UnidentifiedImageError):
        return DecodeError(
            path,
            "not a recognised image format",
            "the file is not a photo imgwatch reads (JPEG, PNG, WebP, HEIC, AVIF, JPEG XL, TIFF, camera RAW, "
            "...); convert it to JPEG",
        )
    message = " ".join(str(exc).split()) or type(exc).__name__  # one line: libheif's and libjxl's span several
    if any(sign in message.lower() for sign in ("truncated", "outside of file bounds", "end of file")):
        return DecodeError(
            path,
            "truncated image file",
            "the file is damaged or still being written; replace it with a complete copy",
        )
    return DecodeError(
        path,
        f"corrupt or unsupported image data ({type(exc).__name__}: {message})",
        "the file is damaged or uses an unsupported variant; replace it with a good copy",
    )
