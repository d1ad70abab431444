"""Converting a photo's colours to sRGB, what the model was trained on and what screens assume.

Phones shoot in Display P3, cameras often in Adobe RGB: the same red is stored as other
numbers. A photo says which space its numbers are in with an embedded ICC profile (JPEG,
PNG, TIFF, WebP, HEIF, AVIF, JPEG XL) or, in HEIF and AVIF, an nclx colour box (primaries
and transfer curve by code, ITU-T H.273). ICC profiles go through LittleCMS (Pillow's
ImageCms); nclx primaries through a 3×3 matrix in linear light. A photo with neither is
taken as sRGB. Converting an sRGB profile to sRGB is detected once per profile and skipped.
"""

from __future__ import annotations

import functools
import io
import struct

import numpy as np
from PIL import Image, ImageCms

# Modes LittleCMS converts, by the colour space an ICC profile declares, and the mode it gives.
_ICC_MODES = {("RGB", "RGB"): "RGB", ("RGB", "RGBA"): "RGBA", ("GRAY", "L"): "RGB", ("CMYK", "CMYK"): "RGB"}
_SRGB = ImageCms.createProfile("sRGB")

# nclx colour primaries (H.273 table 2) as CIE xy of red, green, blue and white.
_PRIMARIES = {
    1: ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060), (0.3127, 0.3290)),  # BT.709 = sRGB
    9: ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046), (0.3127, 0.3290)),  # BT.2020
    11: ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060), (0.314, 0.351)),  # DCI-P3 (theatre white)
    12: ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060), (0.3127, 0.3290)),  # Display P3
}
_SRGB_PRIMARIES = _PRIMARIES[1]
_BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])


def to_srgb(image: Image.Image, icc_profile: bytes | None = None, nclx: dict | None = None) -> Image.Image:
    """``image`` with its colours converted to sRGB; unchanged when it already is (or cannot be told).

    An ICC profile wins over nclx (HEIF allows both; the ICC is the more precise). A damaged
    profile is ignored, as browsers do: the photo is still shown and indexed, as sRGB.
    """
    if icc_profile:
        transform = _icc_transform(icc_profile, image.mode)
        return transform.apply(image) if transform is not None else image
    if nclx:
        matrix = _nclx_matrix(nclx)
        if matrix is not None and image.mode in ("RGB", "RGBA"):
            return _apply_matrix(image, matrix)
    return image


def icc_is_srgb(icc_profile: bytes) -> bool:
    """Whether an RGB image with this profile needs no conversion (or the profile cannot be used)."""
    return _icc_transform(icc_profile, "RGB") is None


@functools.lru_cache(maxsize=64)
def _icc_transform(icc_profile: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """The transform from this profile to sRGB for ``mode`` images; None when it would change nothing."""
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        space = profile.profile.xcolor_space.strip()
        out_mode = _ICC_MODES.get((space, mode))
        if out_mode is None:
            return None
        transform = ImageCms.buildTransform(profile, _SRGB, mode, out_mode,
                                            renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
        if mode in ("RGB", "RGBA") and _changes_nothing(transform, mode):
            return None
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None
    return transform


def _changes_nothing(transform: ImageCms.ImageCmsTransform, mode: str) -> bool:
    """True when the transform moves no colour of a coarse RGB cube by more than one level."""
    levels = np.array([0, 32, 64, 128, 192, 255], dtype=np.uint8)
    cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(1, -1, 3)
    probe = Image.fromarray(cube, "RGB").convert(mode)
    moved = np.abs(np.asarray(transform.apply(probe), dtype=np.int16) - np.asarray(probe, dtype=np.int16))
    return int(moved[..., :3].max()) <= 1


def _nclx_matrix(nclx: dict) -> np.ndarray | None:
    """Linear source RGB -> linear sRGB for these nclx primaries; None for sRGB's own (or unknown) ones."""
    code = nclx.get("color_primaries")
    if not isinstance(code, int) or code in (1, 2):  # 2: unspecified, taken as sRGB
        return None
    primaries = _PRIMARIES.get(code)
    if primaries is None:
        return None
    source = _rgb_to_xyz(primaries)
    target = _rgb_to_xyz(_SRGB_PRIMARIES)
    adapt = _bradford(primaries[3], _SRGB_PRIMARIES[3])
    return np.linalg.inv(target) @ adapt @ source


def _xyz(xy: tuple[float, float]) -> np.ndarray:
    x, y = xy
    return np.array([x / y, 1.0, (1.0 - x - y) / y])


def _rgb_to_xyz(primaries: tuple[tuple[float, float], ...]) -> np.ndarray:
    columns = np.stack([_xyz(xy) for xy in primaries[:3]], axis=1)
    scale = np.linalg.solve(columns, _xyz(primaries[3]))  # so that RGB (1, 1, 1) is the white point
    return columns * scale


def _bradford(source_white: tuple[float, float], target_white: tuple[float, float]) -> np.ndarray:
    if source_white == target_white:
        return np.eye(3)
    cone_source, cone_target = _BRADFORD @ _xyz(source_white), _BRADFORD @ _xyz(target_white)
    return np.linalg.inv(_BRADFORD) @ np.diag(cone_target / cone_source) @ _BRADFORD


# The sRGB transfer curve as lookup tables: 8-bit code -> linear, and linear (4096 steps) -> 8-bit code.
def _decode_curve(code: np.ndarray) -> np.ndarray:
    value = code / 255.0
    return np.where(value <= 0.04045, value / 12.92, ((value + 0.055) / 1.055) ** 2.4)


def _encode_curve(linear: np.ndarray) -> np.ndarray:
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


_TO_LINEAR = _decode_curve(np.arange(256)).astype(np.float32)
_ENCODE_STEPS = 4095
_FROM_LINEAR = np.round(_encode_curve(np.linspace(0.0, 1.0, _ENCODE_STEPS + 1)) * 255).astype(np.uint8)


def _apply_matrix(image: Image.Image, matrix: np.ndarray) -> Image.Image:
    """Convert with the sRGB curve on both sides: HEIF/AVIF photos use it with wide primaries too.

    HDR curves (PQ, HLG) would need tone mapping; they are decoded with this curve as well.
    """
    pixels = np.asarray(image)
    linear = _TO_LINEAR[pixels[..., :3]] @ matrix.T.astype(np.float32)
    codes = _FROM_LINEAR[np.rint(np.clip(linear, 0.0, 1.0) * _ENCODE_STEPS).astype(np.intp)]
    if image.mode == "RGBA":
        codes = np.concatenate([codes, pixels[..., 3:]], axis=-1)
    return Image.fromarray(codes, image.mode)


def nclx_in_isobmff(data: bytes) -> dict | None:
    """The nclx colour box of a HEIF/AVIF file, read from its bytes (Pillow's AVIF plugin does not report it).

    A ``colr`` box of type ``nclx`` lies in the ``meta`` box near the start: its payload is
    primaries, transfer, matrix (16 bits each) and a full-range bit. Looked for in the first 64 kB.
    """
    at = data.find(b"colrnclx", 0, 65536)
    if at < 4 or len(data) < at + 8 + 7:
        return None
    primaries, transfer, matrix = struct.unpack_from(">HHH", data, at + 8)
    return {"color_primaries": primaries, "transfer_characteristics": transfer, "matrix_coefficients": matrix}
