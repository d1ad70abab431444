"""Camera RAW files through LibRaw (rawpy): the embedded preview when it is big enough, else a demosaic.

A RAW holds the sensor's mosaic plus, in nearly every camera's files, the JPEG the camera
showed on its screen. That preview is what the photographer saw, and it costs a JPEG decode;
when it is large enough for the model (short side >= PREVIEW_MIN_SHORT_SIDE) it is used.
Otherwise the mosaic is developed at half size (each 2×2 Bayer block one pixel, no
interpolation: ~4x less work than a full demosaic), with the camera's white balance, in sRGB.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from imgwatch.errors import DecodeError
from imgwatch.photos.limits import check_size

# The model's input is a 224 crop of a 256 short side; a preview at least twice that keeps the
# resize averaging as it does for a photo (small previews, 160×120 in CR2/NEF IFD0, are skipped).
PREVIEW_MIN_SHORT_SIDE = 512

EMBEDDED_PREVIEW = "embedded preview"
HALF_SIZE_DEMOSAIC = "half-size demosaic"

# How a RAW whose content only LibRaw recognises begins (Pillow does not know these at all).
_OWN_SIGNATURES = (
    b"FUJIFILMCCD-RAW",  # RAF
    b"IIRO", b"IIRS", b"MMOR",  # Olympus ORF
    b"IIU\x00",  # Panasonic RW2
    b"IIII",  # Phase One IIQ
)
# TIFF-based RAWs (DNG, CR2, NEF, NRW, ARW, SR2, PEF, SRW, 3FR) begin like any TIFF: LibRaw decides.
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*")
# LibRaw's flip (sizes.flip) -> the EXIF orientation that turns the image upright.
_FLIP_TO_ORIENTATION = {0: 1, 3: 3, 5: 8, 6: 6}


@dataclass(frozen=True)
class RawPicture:
    """What a RAW gave: its preview's JPEG bytes to decode like any JPEG, or developed pixels."""

    size: tuple[int, int]  # the developed photo's width and height, upright
    source: str  # EMBEDDED_PREVIEW or HALF_SIZE_DEMOSAIC
    preview: bytes | None = None  # the preview JPEG (EMBEDDED_PREVIEW)
    orientation: int = 1  # EXIF-style orientation to apply to the preview
    pixels: Image.Image | None = None  # upright 8-bit sRGB (HALF_SIZE_DEMOSAIC)


def may_be_raw(data: bytes, named_raw: bool) -> bool:
    """Whether to ask LibRaw: a RAW's own signature, any TIFF, or a RAW name Pillow could not open."""
    return named_raw or data.startswith(_OWN_SIGNATURES + _TIFF_SIGNATURES) or _is_canon_cr3(data)


def _is_canon_cr3(data: bytes) -> bool:
    return data[4:12] == b"ftypcrx "


def read_raw(data: bytes, path: str, develop: bool = True) -> RawPicture | None:
    """The picture in a RAW file, or None when LibRaw does not take it for a RAW (e.g. a plain TIFF).

    ``develop``: demosaic when there is no usable preview; False only answers which source it
    would be (for the photo page). Raises DecodeError when it is a RAW LibRaw cannot decode.
    """
    import rawpy

    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            return _picture(raw, path, develop)
    except rawpy.LibRawFileUnsupportedError:
        return None
    except rawpy.LibRawError as exc:
        raise DecodeError(
            path,
            f"a camera RAW file LibRaw cannot decode ({type(exc).__name__}: {exc})",
            "the file is damaged or from a camera this LibRaw does not know; replace it with a good copy, "
            "or export a JPEG beside it",
        ) from exc


def _picture(raw, path: str, develop: bool) -> RawPicture:  # noqa: ANN001 - rawpy.RawPy
    sizes = raw.sizes
    check_size(path, sizes.raw_width, sizes.raw_height)  # before the mosaic is unpacked
    orientation = _FLIP_TO_ORIENTATION.get(sizes.flip, 1)
    size = (sizes.height, sizes.width) if orientation in (6, 8) else (sizes.width, sizes.height)
    preview = _usable_preview(raw)
    if preview is not None:
        return RawPicture(size, EMBEDDED_PREVIEW, preview=preview, orientation=orientation)
    if not develop:
        return RawPicture(size, HALF_SIZE_DEMOSAIC)
    # Upright (LibRaw applies the flip), sRGB primaries and sRGB's own curve (LibRaw's default is BT.709's).
    rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8, gamma=(2.4, 12.92))
    return RawPicture(size, HALF_SIZE_DEMOSAIC, pixels=Image.fromarray(np.ascontiguousarray(rgb), "RGB"))


def _usable_preview(raw) -> bytes | None:  # noqa: ANN001 - rawpy.RawPy
    """The embedded JPEG preview when its short side is at least PREVIEW_MIN_SHORT_SIDE."""
    import rawpy

    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    except rawpy.LibRawError:
        return None  # a damaged preview: the mosaic may still be fine
    if thumb.format != rawpy.ThumbFormat.JPEG:
        return None
    try:
        with Image.open(io.BytesIO(thumb.data), formats=("JPEG",)) as header:
            short = min(header.size)
    except Exception:  # noqa: BLE001 - not a JPEG after all: develop the mosaic instead
        return None
    return bytes(thumb.data) if short >= PREVIEW_MIN_SHORT_SIDE else None
