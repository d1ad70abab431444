"""Reading image files and turning their bytes into model input tensors.

Both pipelines take the model's :class:`~imgwatch.embedding.preprocessing.Preprocessing`
(ResNet50's: ImageNet's, the default here):

* :func:`reference_preprocess` is the plain torchvision recipe (full decode,
  Resize(256), CenterCrop(224), normalise; or a model file's declared sizes and
  statistics). It is the definition of "correct".
* :func:`decode_for_model` is what production uses. It produces (nearly) the
  same tensor while avoiding a full-resolution decode: imgwatch.photos opens every
  format upright and in sRGB at the smallest size that keeps a short side of
  MIN_DECODED_SHORT_SIDE (scaled to the resize's short side; a 12-megapixel JPEG at 1/4 scale
  in the DCT domain, a RAW from its preview or a half-size demosaic, others box-reduced), then
  the bilinear resize. The tests hold it, against the reference, to tensor cosine >= 0.9999 and
  embedding cosine >= 0.99 (calibrated weights).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import math
import os
import stat
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

from imgwatch.embedding.preprocessing import IMAGENET, Preprocessing
from imgwatch.errors import DecodeError
from imgwatch.files import signature_of
from imgwatch.photos.limits import MAX_ASPECT_RATIO, MAX_FILE_BYTES, MAX_PIXELS, check_size
from imgwatch.photos.reader import (
    EXIF_ORIENTATION_TAG,
    describe_failure,
    displayed_size,
    open_photo,
    read_orientation,
    upright,
)

# Re-exported: the limits and header helpers the embedding side (nvjpeg.py, the tests) uses.
__all__ = [
    "EXIF_ORIENTATION_TAG", "MAX_ASPECT_RATIO", "MAX_FILE_BYTES", "MAX_PIXELS", "DecodeError",
    "FileFacts", "check_size", "decode_for_model", "displayed_size", "read_file", "reference_input",
    "reference_preprocess", "to_rgb", "unreadable_reason",
]

# ResNet50's recipe, named for the decode rules and tests below that were measured with it.
RESIZE_SHORT_SIDE = IMAGENET.resize
CROP_SIZE = IMAGENET.size

# The fast path never shrinks the short side below this before the final antialiased
# Resize(256). libjpeg's DCT scaling (and Image.reduce for other formats) is a box filter,
# not the reference's wide bilinear one; the more of the reduction the final resize does,
# the less that shows. Worst case, a JPEG whose short side is exactly twice the floor (it
# decodes at exactly the floor), embedding cosine with the reference under calibrated
# weights: floor 256: 0.967, 512: 0.988, 640: 0.990, 704: 0.992 (tensor >= 0.9999 from 512 on).
# 704 = 2.75 × 256 still lets 12 MP phone photos (short side 3000-3024) decode at 1/4
# (750-756 px): 33 ms per 4032×3024 JPEG instead of 26 ms at 1/8 (bench/RESULTS.md).
# Another resize keeps the same ratio (2.75 × its short side; see _min_decoded_short_side).
MIN_DECODED_SHORT_SIDE = 704

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})



@functools.cache
def _reference_resize(preprocessing: Preprocessing) -> transforms.Compose:
    """torchvision's resize (and crop) for ``preprocessing``, made once per preprocessing."""
    if preprocessing.policy == "stretch":
        return transforms.Compose([transforms.Resize([preprocessing.size, preprocessing.size])])
    return transforms.Compose([transforms.Resize(preprocessing.resize), transforms.CenterCrop(preprocessing.size)])


@functools.cache
def _normalised_tensor(preprocessing: Preprocessing) -> transforms.Compose:
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(preprocessing.mean, preprocessing.std)])


@dataclass(frozen=True)
class FileFacts:
    path: str
    sha256: str
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @property
    def signature(self) -> tuple[int, int, int, int]:
        """As files.signature_of gives it for the open file the bytes came from."""
        return (self.size, self.mtime_ns, self.ctime_ns, self.inode)


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
    size, mtime_ns, ctime_ns, inode = signature_of(info)
    facts = FileFacts(path=path, sha256=hashlib.sha256(data).hexdigest(), size=size, mtime_ns=mtime_ns,
                      ctime_ns=ctime_ns, inode=inode)
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


def reference_preprocess(image: Image.Image, preprocessing: Preprocessing = IMAGENET) -> torch.Tensor:
    """The canonical torchvision preprocessing, on a fully decoded image."""
    turned = upright(image, read_orientation(image))  # the reader's rule: HEIF and JXL come upright
    tensor: torch.Tensor = _normalised_tensor(preprocessing)(_reference_resize(preprocessing)(to_rgb(turned)))
    return tensor


def reference_input(data: bytes, path: str, preprocessing: Preprocessing = IMAGENET) -> torch.Tensor:
    """The reference recipe on a file's full-size decode (upright, in sRGB): what decode_for_model approximates."""
    photo = open_photo(data, path)
    tensor: torch.Tensor = _normalised_tensor(preprocessing)(_reference_resize(preprocessing)(to_rgb(photo.image)))
    return tensor


def decode_for_model(data: bytes, path: str, preprocessing: Preprocessing = IMAGENET) -> tuple[torch.Tensor, int, int]:
    """Decode ``data`` cheaply into a (3, size, size) float32 model input (224 for ResNet50).

    Returns the tensor and the photo's width and height as displayed (after orientation;
    a RAW's developed size). ``path`` is only used for error messages.
    Raises :class:`DecodeError` for anything that is not a decodable image.
    """
    photo = open_photo(data, path, min_short_side=_min_decoded_short_side(preprocessing))
    try:
        resized = _resize_like_reference(to_rgb(photo.image), photo.width, photo.height, photo.reduced_by,
                                         preprocessing)
        crop = transforms.CenterCrop(preprocessing.size)  # a no-op after a stretch
        tensor: torch.Tensor = _normalised_tensor(preprocessing)(crop(resized))
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad data
        raise describe_failure(path, exc) from exc
    return tensor, *photo.size


def _min_decoded_short_side(preprocessing: Preprocessing) -> int:
    """MIN_DECODED_SHORT_SIDE, measured for ResNet50's Resize(256), at the same ratio to this resize."""
    return math.ceil(MIN_DECODED_SHORT_SIDE * preprocessing.resized_short_side / RESIZE_SHORT_SIDE)


def _resize_like_reference(image: Image.Image, width: int, height: int, reduced_by: int,
                           preprocessing: Preprocessing) -> Image.Image:
    """The reference's resize of the full ``width``×``height`` image, done from a copy reduced ``reduced_by`` times.

    The output size is computed from the full size, as torchvision does. A reduced copy's
    sizes round up (its last row and column cover a partial block), so it is not the full
    image scaled by exactly 1/reduced_by: sampling the box the original covers puts every
    output pixel where the reference puts it (1365×1024 drafted to 683×512 would otherwise
    shift the crop by up to a quarter pixel: tensor cosine 0.9996 instead of 0.99998).
    """
    size = preprocessing.resized_size(width, height)
    if reduced_by == 1 and image.size == size:
        return image  # torchvision skips a resize to the same size
    covered = (0.0, 0.0, width / reduced_by, height / reduced_by)
    return image.resize(size, Image.Resampling.BILINEAR, box=covered)
