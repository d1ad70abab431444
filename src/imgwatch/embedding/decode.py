"""Reading image files and turning their bytes into ResNet50 input tensors.

Two pipelines live here:

* :func:`reference_preprocess` is the plain torchvision recipe (full decode,
  Resize(256), CenterCrop(224), normalise). It is the definition of "correct".
* :func:`decode_for_model` is what production uses. It produces (nearly) the
  same tensor while avoiding a full-resolution decode: a 12-megapixel JPEG is
  decoded at 1/2..1/8 scale in the DCT domain, other formats are box-reduced
  before the bilinear resize. The tests hold it to cosine >= 0.999 against
  the reference.
"""

from __future__ import annotations

import hashlib
import io
import os
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

# The fast path never shrinks the short side below this before the final
# antialiased Resize(256). libjpeg's DCT scaling averages 8x8 blocks, a low-pass
# close to the reference's wide bilinear filter, so decoding a 12 MP JPEG at 1/8
# (short side 378) stays within tensor cosine 0.9998 of the reference on grainy
# 12 MP photos, and costs 26.5 ms instead of 32.6 ms at 1/4 (bench/RESULTS.md).
MIN_DECODED_SHORT_SIDE = RESIZE_SHORT_SIDE

_EXIF_ORIENTATION_TAG = 0x0112
# EXIF orientations 5..8 swap width and height when applied.
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})

_resize_crop = transforms.Compose(
    [transforms.Resize(RESIZE_SHORT_SIDE), transforms.CenterCrop(CROP_SIZE)]
)
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
    """Read a whole file once; hash and stat come from that same open file."""
    with open(path, "rb") as handle:
        # fstat *before* reading: if a writer changes the file mid-read, the
        # recorded mtime is then older than the content and the next scan
        # notices a change, instead of wrongly believing the file is current.
        stat = os.fstat(handle.fileno())
        data = handle.read()
    facts = FileFacts(
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        size=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
    )
    return facts, data


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
        # Image.open raises DecompressionBombError for absurd sizes before any
        # pixel is decoded; load() is inside the try so truncation is caught.
        image = Image.open(io.BytesIO(data))
        stored_size = image.size  # draft() below shrinks image.size
        if isinstance(image, JpegImageFile):  # includes MPO, which many cameras write
            _draft_jpeg(image)
        image.load()
        # Orientation is read after load(): PNG may keep its EXIF after the pixel data.
        width, height = _displayed_size(image, stored_size)
        upright = to_rgb(ImageOps.exif_transpose(image))
        upright = _box_reduce(upright)
        tensor: torch.Tensor = _to_normalised_tensor(_resize_crop(upright))
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad data
        raise _describe_failure(path, exc) from exc
    return tensor, width, height


def _displayed_size(image: Image.Image, stored_size: tuple[int, int]) -> tuple[int, int]:
    width, height = stored_size
    orientation = image.getexif().get(_EXIF_ORIENTATION_TAG)
    if orientation in _TRANSPOSING_ORIENTATIONS:
        return height, width
    return width, height


def _draft_jpeg(image: JpegImageFile) -> None:
    """Ask libjpeg to decode at the smallest 1/2^k scale that keeps enough pixels.

    Pillow picks the largest supported scale whose result is still at least the
    requested size in both dimensions, so requesting a square of
    MIN_DECODED_SHORT_SIDE keeps the short side >= that, whatever the aspect.
    """
    if min(image.size) >= 2 * MIN_DECODED_SHORT_SIDE:
        image.draft(None, (MIN_DECODED_SHORT_SIDE, MIN_DECODED_SHORT_SIDE))


def _box_reduce(image: Image.Image) -> Image.Image:
    """Integer box-downscale large non-JPEG images (JPEGs were already drafted)."""
    factor = min(image.size) // MIN_DECODED_SHORT_SIDE
    if factor >= 2:
        image = image.reduce(factor)
    return image


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
