"""Reading image files and turning their bytes into ResNet50 input tensors.

Two pipelines live here:

* :func:`reference_preprocess` is the plain torchvision recipe (full decode,
  Resize(256), CenterCrop(224), normalise). It is the definition of "correct".
* :func:`decode_for_model` is what production uses. It produces (nearly) the
  same tensor while avoiding a full-resolution decode: a 12-megapixel JPEG is
  decoded at 1/4 scale in the DCT domain, other formats are box-reduced
  before the bilinear resize. The tests hold it, against the reference, to
  tensor cosine >= 0.9999 and embedding cosine >= 0.99 (calibrated weights).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import os
import stat
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.JpegImagePlugin import JpegImageFile
from torchvision import transforms

from imgwatch.errors import DecodeError

RESIZE_SHORT_SIDE = 256
CROP_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The fast path never shrinks the short side below this before the final antialiased
# Resize(256). libjpeg's DCT scaling (and Image.reduce for other formats) is a box filter,
# not the reference's wide bilinear one; the more of the reduction the final resize does,
# the less that shows. Worst case, a JPEG whose short side is exactly twice the floor (it
# decodes at exactly the floor), embedding cosine with the reference under calibrated
# weights: floor 256: 0.967, 512: 0.988, 640: 0.990, 704: 0.992 (tensor >= 0.9999 from 512 on).
# 704 = 2.75 × 256 still lets 12 MP phone photos (short side 3000-3024) decode at 1/4
# (750-756 px): 33 ms per 4032×3024 JPEG instead of 26 ms at 1/8 (bench/RESULTS.md).
MIN_DECODED_SHORT_SIDE = 704

# Limits checked on the header (Image.open reads no pixels) before anything large is allocated.
#
# Aspect ratio: the model sees the centre 224×224 of the image scaled to a short side of
# 256, so a 1:50 strip shows it 1/57 of its length; a 1×60000 one would be scaled to
# 256×15,360,000 pixels (~12 GB) only to show it less than one original pixel. Panoramas
# (1:4 to 1:20) are well inside.
MAX_ASPECT_RATIO = 50
# Pixels: Pillow's own decompression-bomb limit (2 × Image.MAX_IMAGE_PIXELS), fixed here so
# a library changing Pillow's global cannot lift it. 179 MP holds every camera's JPEGs
# (a 102 MP medium-format JPEG decodes at 1/8 scale) and 13k×13k PNG/TIFF scans, which
# decode at full size: about 3 bytes per pixel (RGB), 0.5 GB at the limit.
MAX_PIXELS = 178_956_970
# Files are read whole: a bigger "image" is refused before it is read.
MAX_FILE_BYTES = 1 << 30
# What Image.open may parse, whatever the file is named: the formats of the default
# extensions plus a few common ones with a clear signature. Others (EPS, which runs
# Ghostscript; PSD, FITS, ...) are "not a recognised image format".
DECODABLE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "JPEG2000", "AVIF", "PPM", "QOI")

EXIF_ORIENTATION_TAG = 0x0112
# EXIF orientations 5..8 swap width and height when applied.
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})

_resize_crop = transforms.Compose(
    [transforms.Resize(RESIZE_SHORT_SIDE), transforms.CenterCrop(CROP_SIZE)]
)
_center_crop = transforms.CenterCrop(CROP_SIZE)
_to_normalised_tensor = transforms.Compose(
    [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
)


@dataclass(frozen=True)
class FileFacts:
    path: str
    sha256: str
    size: int
    mtime_ns: int


def read_file(path: str) -> tuple[FileFacts, bytes]:
    """Read a whole file once; hash and stat come from that same open file.

    Raises OSError when it cannot be read, DecodeError when it is not a regular file
    (a FIFO swapped in is never waited on) or is larger than MAX_FILE_BYTES.
    """
    # O_NONBLOCK: opening a FIFO must not wait for a writer (it changes nothing for files).
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as handle:
        # fstat *before* reading: if a writer changes the file mid-read, the
        # recorded mtime is then older than the content and the next scan
        # notices a change, instead of wrongly believing the file is current.
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise DecodeError(path, "not a regular file", "only files are indexed; rename or move it")
        if info.st_size > MAX_FILE_BYTES:
            raise DecodeError(
                path,
                f"the file is {info.st_size:,} bytes, beyond imgwatch's limit of "
                f"{MAX_FILE_BYTES:,} bytes ({MAX_FILE_BYTES / 2**30:g} GiB) for one image",
                "shrink or convert it, or keep it out of the watched folders",
            )
        data = handle.read()
    facts = FileFacts(
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        size=info.st_size,
        mtime_ns=info.st_mtime_ns,
    )
    return facts, data


def unreadable_reason(path: str, exc: OSError) -> str:
    """The failure line for a file that cannot be opened or read."""
    if exc.errno == errno.ELOOP:
        return (f"cannot read {path}: it is a symbolic link loop (the link leads back to itself); "
                "fix or delete the link")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"cannot read {path}: {exc.strerror} (check its permissions)"
    return f"cannot read {path}: {exc.strerror or exc}"


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    ``convert("RGB")`` handles palette, L/LA, RGBA, CMYK and YCbCr correctly,
    but it clips 16-bit greyscale to 0..255 (a mostly white image), so those
    are rescaled to 8 bits first.
    """
    if image.mode in _SIXTEEN_BIT_MODES or (image.mode == "I" and _max_value(image) > 255):
        wide = np.asarray(image, dtype=np.uint32)
        image = Image.fromarray((wide >> 8).astype(np.uint8), mode="L")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def _max_value(image: Image.Image) -> int:
    extrema = image.getextrema()
    return int(extrema[1])  # type: ignore[index]  # single band: (min, max)


def reference_preprocess(image: Image.Image) -> torch.Tensor:
    """The canonical torchvision ImageNet preprocessing, on a fully decoded image."""
    upright = ImageOps.exif_transpose(image)
    tensor: torch.Tensor = _to_normalised_tensor(_resize_crop(to_rgb(upright)))
    return tensor


def decode_for_model(data: bytes, path: str) -> tuple[torch.Tensor, int, int]:
    """Decode ``data`` cheaply into a (3, 224, 224) float32 model input.

    Returns the tensor and the original width and height as displayed (after
    EXIF orientation). ``path`` is only used for error messages.
    Raises :class:`DecodeError` for anything that is not a decodable image.
    """
    if not data:
        raise DecodeError(
            path,
            "empty file (0 bytes)",
            "the file may still be being written, or was saved empty; replace it with a complete copy",
        )
    try:
        # Image.open reads only the header (and raises DecompressionBombError for
        # absurd sizes); load() is inside the try so truncation is caught.
        image = Image.open(io.BytesIO(data), formats=_decodable_formats())
        stored_size = image.size  # draft() below shrinks image.size
        check_size(path, *stored_size)  # before any pixel is decoded
        # JpegImageFile includes MPO, which many cameras write.
        reduced_by = _draft_jpeg(image) if isinstance(image, JpegImageFile) else 1
        image.load()
        # Orientation is read after load(): PNG may keep its EXIF after the pixel data.
        width, height = displayed_size(exif_orientation(image), stored_size)
        upright = to_rgb(ImageOps.exif_transpose(image))
        if reduced_by == 1:
            upright, reduced_by = _box_reduce(upright)
        resized = _resize_like_reference(upright, width, height, reduced_by)
        tensor: torch.Tensor = _to_normalised_tensor(_center_crop(resized))
    except DecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad data
        raise _describe_failure(path, exc) from exc
    return tensor, width, height


def check_size(path: str, width: int, height: int) -> None:
    """Refuse, from the header alone, sizes that would cost far more than they are worth."""
    short, long = sorted((width, height))
    if short < 1:
        raise DecodeError(path, f"{width}×{height} pixels: the image is empty",
                          "the file is damaged; replace it with a good copy")
    if long > MAX_ASPECT_RATIO * short:
        ratio = long / short
        shown = f"1:{ratio:.0f}" if ratio >= 100 else "1:" + f"{ratio:.2f}".rstrip("0").rstrip(".")
        raise DecodeError(
            path,
            f"{width}×{height} pixels: aspect ratio {shown} is beyond 1:{MAX_ASPECT_RATIO}; "
            "imgwatch cannot make a useful thumbnail-sized view of it",
            f"crop it to at most 1:{MAX_ASPECT_RATIO}, or keep it out of the watched folders",
        )
    if width * height > MAX_PIXELS:
        raise DecodeError(
            path,
            f"{width}×{height} pixels ({width * height / 1e6:,.0f} megapixels) is too large to decode safely: "
            f"beyond imgwatch's limit of {MAX_PIXELS / 1e6:,.0f} megapixels",
            "save a smaller copy for imgwatch, or keep it out of the watched folders",
        )


@functools.cache
def _decodable_formats() -> tuple[str, ...]:
    Image.init()  # registers every plugin, so the check below sees what this Pillow can open
    return tuple(name for name in DECODABLE_FORMATS if name in Image.OPEN)


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation (1..8) of an opened image; 1 (as stored) when it has none."""
    value = image.getexif().get(EXIF_ORIENTATION_TAG)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def displayed_size(orientation: int, stored_size: tuple[int, int]) -> tuple[int, int]:
    width, height = stored_size
    if orientation in _TRANSPOSING_ORIENTATIONS:
        return height, width
    return width, height


def resized_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) after the reference's Resize(256): short side 256, long side rounded down."""
    short, long = sorted((width, height))
    new_long = int(RESIZE_SHORT_SIDE * long / short)  # torchvision's rounding (down)
    return (RESIZE_SHORT_SIDE, new_long) if width <= height else (new_long, RESIZE_SHORT_SIDE)


def _draft_jpeg(image: JpegImageFile) -> int:
    """Ask libjpeg to decode at the smallest 1/2^k scale that keeps enough pixels; returns 2^k.

    Pillow picks the largest supported scale whose result is still at least the
    requested size in both dimensions, so requesting a square of
    MIN_DECODED_SHORT_SIDE keeps the short side >= that, whatever the aspect.
    """
    if min(image.size) < 2 * MIN_DECODED_SHORT_SIDE:
        return 1
    stored_width = image.size[0]
    drafted = image.draft(None, (MIN_DECODED_SHORT_SIDE, MIN_DECODED_SHORT_SIDE))
    if drafted is None:  # Pillow declined (e.g. an unusual tile layout): decoded at full size
        return 1
    _, covered_box = drafted  # (0, 0, stored_width / scale, stored_height / scale)
    return round(stored_width / covered_box[2])


def _box_reduce(image: Image.Image) -> tuple[Image.Image, int]:
    """Integer box-downscale large non-JPEG images (JPEGs were already drafted); returns the factor."""
    factor = min(image.size) // MIN_DECODED_SHORT_SIDE
    if factor < 2:
        return image, 1
    return image.reduce(factor), factor


def _resize_like_reference(image: Image.Image, width: int, height: int, reduced_by: int) -> Image.Image:
    """Resize(256) of the full ``width``×``height`` image, done from a copy reduced ``reduced_by`` times.

    The output size is computed from the full size, as torchvision does. A reduced copy's
    sizes round up (its last row and column cover a partial block), so it is not the full
    image scaled by exactly 1/reduced_by: sampling the box the original covers puts every
    output pixel where the reference puts it (1365×1024 drafted to 683×512 would otherwise
    shift the crop by up to a quarter pixel: tensor cosine 0.9996 instead of 0.99998).
    """
    size = resized_size(width, height)
    if reduced_by == 1 and image.size == size:
        return image  # torchvision skips a resize to the same size
    covered = (0.0, 0.0, width / reduced_by, height / reduced_by)
    return image.resize(size, Image.Resampling.BILINEAR, box=covered)


def _describe_failure(path: str, exc: Exception) -> DecodeError:
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
            "the file is not an image or uses a format Pillow cannot read; convert it to JPEG or PNG",
        )
    message = str(exc) or type(exc).__name__
    if "truncated" in message.lower():
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
