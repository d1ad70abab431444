"""Real photo files of other formats, written from an RGB Pillow image, for tests.

Every writer takes the photo as a Pillow image (the tests pass scikit-image's sample photos, such as
``Image.fromarray(skimage.data.astronaut())``), writes it to ``path`` through the same libraries a camera
or phone file would be read back with (libheif, libavif, libjxl, LibRaw), and returns ``path``:

* :func:`write_heic`, :func:`write_multi_image_heic` - HEIC through pillow-heif (libheif + x265);
* :func:`write_avif` - AVIF through Pillow's own libavif plugin;
* :func:`write_jxl` - JPEG XL through pillow-jxl-plugin;
* :func:`write_jpeg` - JPEG through Pillow;
* :func:`write_dng` - a camera-style DNG (a linear RGGB Bayer mosaic, optionally with an embedded JPEG
  preview) that LibRaw (rawpy) demosaics back into the photo;
* :func:`damaged` - a truncated copy of any file;
* :func:`adobe_rgb_profile`, :func:`prophoto_profile`, :func:`display_p3_profile` - ICC profiles built
  here from the colour spaces' published primaries (no system package needed), and :func:`to_profile`,
  which converts an sRGB photo into one of them, as a camera or phone stores a wide-gamut photo.

``python tests/photo_files.py`` writes one file of each kind into a temporary folder and prints what
Pillow and LibRaw see in it.
"""

from __future__ import annotations

import functools
import io
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
from pidng import packing
from pidng.core import RAW2DNG
from pidng.defs import CalibrationIlluminant, CFAPattern, DNGVersion, PhotometricInterpretation, PreviewColorSpace
from pidng.dng import DNGTags, Tag, Type, dngTag
from PIL import Image, ImageCms

__all__ = [
    "adobe_rgb_profile",
    "damaged",
    "display_p3_profile",
    "prophoto_profile",
    "to_profile",
    "write_avif",
    "write_dng",
    "write_heic",
    "write_jpeg",
    "write_jxl",
    "write_multi_image_heic",
]

_ORIENTATION = 0x0112  # the EXIF / TIFF Orientation tag

# ---------------------------------------------------------------------------------------------------------------
# Plugins


@functools.cache
def _heif() -> object:
    """pillow_heif, with its Pillow plugin registered (once; the options the project set are left alone)."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    return pillow_heif


@functools.cache
def _jxl() -> None:
    """Registers pillow-jxl-plugin's "JXL" format with Pillow (importing it does that)."""
    import pillow_jxl  # noqa: F401


def _exif_bytes(orientation: int | None) -> bytes | None:
    """An EXIF block holding only an Orientation tag (1..8), or None for no EXIF at all."""
    if orientation is None:
        return None
    if not 1 <= orientation <= 8:
        raise ValueError(f"EXIF orientation must be 1..8, not {orientation}")
    exif = Image.Exif()
    exif[_ORIENTATION] = orientation
    return exif.tobytes()


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def _options(**options: object) -> dict[str, object]:
    """Save keywords with the unset (None) ones left out, so each library keeps its own default."""
    return {key: value for key, value in options.items() if value is not None}


# ---------------------------------------------------------------------------------------------------------------
# HEIC, AVIF, JPEG XL, JPEG


def write_heic(
    image: Image.Image,
    path: Path,
    *,
    quality: int = 90,
    exif_orientation: int | None = None,
    icc_profile: bytes | None = None,
    nclx: dict[str, int] | None = None,
    preset: str = "ultrafast",
) -> Path:
    """Writes ``image`` as a HEIC (HEVC in HEIF) file through pillow-heif.

    ``preset``: x265's speed preset. "ultrafast" writes a 3 MP photo in ~1 s on 2 cores instead of ~8 s
    (x265's default, "medium"), with embeddings of the result within 0.001 of it.

    ``exif_orientation`` (1..8): ``image`` is taken as the stored (sensor) picture, and the file says it is
    shown turned by that EXIF orientation. pillow-heif hands the orientation to libheif, which writes it as
    the ``irot``/``imir`` transform properties (as an iPhone does), so every libheif reader - Pillow with
    pillow-heif included - decodes the turned picture: for orientation 6 or 8 the decoded size is
    ``image``'s size swapped. The stored EXIF keeps the orientation too (as an iPhone's does); Pillow's
    ``getexif()`` reads it back as 1 and ``info["original_orientation"]`` as the original, because
    pillow-heif's plugin resets it so that ``ImageOps.exif_transpose`` does not turn the picture again.

    ``icc_profile``: ICC bytes stored as the file's colour profile (``colr`` box of type ``prof``);
    Pillow reads them back as ``info["icc_profile"]``. The pixels are stored as given: pass
    :func:`to_profile`'s output to store "the same photo in that colour space".

    ``nclx``: an NCLX colour description (``colr`` box of type ``nclx``), for example Display P3
    ``{"color_primaries": 12, "transfer_characteristics": 13, "matrix_coefficients": 6, "full_range_flag": 1}``
    (code points of ITU-T H.273); keys left out take the sRGB values 1, 13, 6, 1. pillow-heif reads the
    keyword ``transfer_characteristics`` (plural; its save docstring spells it ``transfer_characteristic``,
    which it ignores), and ``transfer_characteristic`` is accepted here too. Read back as
    ``info["nclx_profile"]``. With both ``icc_profile`` and ``nclx``, libheif writes only the ICC profile.
    With neither, pillow-heif writes the sRGB NCLX (1, 13, 6, 1).
    """
    _heif()
    options = _options(exif=_exif_bytes(exif_orientation), icc_profile=icc_profile)
    if nclx is not None:
        nclx = dict(nclx)
        if "transfer_characteristic" in nclx:
            nclx["transfer_characteristics"] = nclx.pop("transfer_characteristic")
        unknown = set(nclx) - {"color_primaries", "transfer_characteristics", "matrix_coefficients", "full_range_flag"}
        if unknown:
            raise ValueError(f"unknown NCLX keys: {sorted(unknown)}")
        options |= {
            "color_primaries": 1,
            "transfer_characteristics": 13,
            "matrix_coefficients": 6,
            "full_range_flag": 1,
        }
        options |= {key: int(value) for key, value in nclx.items()}
    _rgb(image).save(path, "HEIF", quality=quality, enc_params={"preset": preset}, **options)
    return path


def write_multi_image_heic(primary: Image.Image, other: Image.Image, path: Path, *, quality: int = 90) -> Path:
    """Writes a HEIC holding two top-level images, ``other`` first and ``primary`` second, with ``primary``
    marked as the primary image (``pitm``), as a burst or an edited-photo container can be.

    Storing the primary image second means a reader that simply takes the first image gets the wrong one:
    Pillow with pillow-heif opens the primary (``Image.open(path)`` has ``primary``'s size and pixels, and
    ``n_frames == 2``).
    """
    heif = _heif()
    container = heif.from_pillow(_rgb(other))
    container.add_from_pillow(_rgb(primary))
    container.save(path, quality=quality, primary_index=1)
    return path


def write_avif(
    image: Image.Image,
    path: Path,
    *,
    quality: int = 90,
    exif_orientation: int | None = None,
    icc_profile: bytes | None = None,
) -> Path:
    """Writes ``image`` as an AVIF file through Pillow's own AVIF plugin (libavif).

    ``exif_orientation`` (1..8): stored in the EXIF block, and Pillow also writes it as the ``irot``/``imir``
    transform. Unlike pillow-heif for HEIC, Pillow does not apply it when reading: ``Image.open`` gives
    ``image``'s size with ``getexif()[274] == exif_orientation``, and ``ImageOps.exif_transpose`` turns it.
    ``icc_profile``: ICC bytes stored as the file's colour profile (read back as ``info["icc_profile"]``).
    """
    options = _options(exif=_exif_bytes(exif_orientation), icc_profile=icc_profile)
    _rgb(image).save(path, "AVIF", quality=quality, **options)
    return path


def write_jpeg(
    image: Image.Image,
    path: Path,
    *,
    quality: int = 92,
    icc_profile: bytes | None = None,
    exif_orientation: int | None = None,
) -> Path:
    """Writes ``image`` as a baseline JPEG, optionally with an ICC profile (APP2) and an EXIF orientation
    (APP1; the pixels are stored as given and a reader turns them)."""
    options = _options(exif=_exif_bytes(exif_orientation), icc_profile=icc_profile)
    _rgb(image).save(path, "JPEG", quality=quality, **options)
    return path


def write_jxl(image: Image.Image, path: Path, *, quality: int = 90, icc_profile: bytes | None = None) -> Path:
    """Writes ``image`` as a JPEG XL file through pillow-jxl-plugin (libjxl).

    Without ``icc_profile`` the pixels are encoded directly (lossy VarDCT at ``quality``; the file's colour
    encoding is sRGB, and Pillow reads back a synthesized sRGB ``info["icc_profile"]``).

    pillow-jxl-plugin cannot attach an ICC profile to pixels it encodes, so with ``icc_profile`` the photo is
    first written as a JPEG (``quality``, with that profile) and then losslessly recompressed into JPEG XL,
    the way ``cjxl photo.jpg`` does: a real JXL file (codestream plus ``jbrd`` reconstruction box) whose
    colour encoding is that profile. Pillow reads it back through JPEG reconstruction, so ``info`` also
    carries the JPEG's ``jfif`` keys next to ``icc_profile``.
    """
    _jxl()
    if icc_profile is None:
        _rgb(image).save(path, "JXL", quality=quality)
        return path
    with tempfile.TemporaryDirectory(prefix="photo-files-") as folder:
        jpeg = write_jpeg(image, Path(folder) / "source.jpg", quality=quality, icc_profile=icc_profile)
        with Image.open(jpeg) as source:  # the plugin recompresses `source.filename` when lossless_jpeg is set
            source.save(path, "JXL", lossless_jpeg=True)
    return path


def damaged(path_in: Path, path_out: Path, keep: float = 0.5) -> Path:
    """Writes the first ``keep`` fraction (0..1) of ``path_in``'s bytes to ``path_out``: a truncated copy,
    as an interrupted copy or download leaves it."""
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep must be within 0..1, not {keep}")
    data = Path(path_in).read_bytes()
    Path(path_out).write_bytes(data[: int(len(data) * keep)])
    return path_out


# ---------------------------------------------------------------------------------------------------------------
# DNG
#
# The photo becomes what a sensor behind an RGGB colour filter array would have recorded: linear light (the
# sRGB curve undone), one colour per photosite, scaled to the white level. The camera's colour matrix is that
# of an "sRGB camera" (XYZ -> linear sRGB under D65) and its white balance is neutral, so LibRaw's
# demosaic of it gives back the photo. pidng writes the plain DNG; it can only write a single IFD, so a DNG
# with an embedded JPEG preview is laid out here instead, as cameras do: IFD0 is the preview
# (NewSubFileType 1) and carries the camera tags, and its SubIFDs tag points at the raw CFA IFD
# (NewSubFileType 0). pidng's tag encoder (dngTag) packs the values in both cases.

_XYZ_TO_LINEAR_SRGB = (  # IEC 61966-2-1, D65
    (3.2404542, -1.5371385, -0.4985314),
    (-0.9692660, 1.8760108, 0.0415560),
    (0.0556434, -0.2040259, 1.0572252),
)
_DNG_MAKE = "imgwatch"
_DNG_MODEL = "Synthetic RGGB"
_SUBIFDS = (330, Type.Long)  # SubIFDs: the offset of the raw IFD (pidng's Tag.SubIFD cannot be encoded alone)
_YCBCR_SUBSAMPLING = (530, Type.Short)  # not in pidng's Tag table
_COMPRESSION_JPEG = 7
_PHOTOMETRIC_YCBCR = 6


def _srgb_to_linear(values: np.ndarray) -> np.ndarray:
    """Undoes the sRGB transfer curve: 0..1 encoded values to 0..1 linear light."""
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


def _bayer_rggb(image: Image.Image, bits: int) -> np.ndarray:
    """The RGGB mosaic of ``image`` in linear light, as uint16 values 0..2**bits-1 (even width and height)."""
    rgb = np.asarray(_rgb(image), dtype=np.float32) / 255.0
    rgb = rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2]
    linear = _srgb_to_linear(rgb)
    mosaic = np.empty(linear.shape[:2], dtype=np.float32)
    mosaic[0::2, 0::2] = linear[0::2, 0::2, 0]  # R
    mosaic[0::2, 1::2] = linear[0::2, 1::2, 1]  # G
    mosaic[1::2, 0::2] = linear[1::2, 0::2, 1]  # G
    mosaic[1::2, 1::2] = linear[1::2, 1::2, 2]  # B
    return np.round(mosaic * (2**bits - 1)).astype(np.uint16)


def _pack(mosaic: np.ndarray, bits: int) -> bytes:
    """The mosaic as uncompressed DNG strip bytes: 16-bit little-endian, or MSB-first packed 12 bits."""
    if bits == 16:
        return mosaic.astype("<u2").tobytes()
    return packing.pack12(mosaic).tobytes()


def _srational(value: float, denominator: int = 10000) -> list[int]:
    return [round(value * denominator), denominator]


def _camera_tags(orientation: int) -> list[tuple[tuple, object]]:
    """The IFD0 tags of the camera: who made it, how it sees colour, how the picture is turned."""
    if not 1 <= orientation <= 8:
        raise ValueError(f"orientation must be 1..8, not {orientation}")
    return [
        (Tag.Make, _DNG_MAKE),
        (Tag.Model, _DNG_MODEL),
        (Tag.Orientation, orientation),
        (Tag.Software, "imgwatch tests"),
        (Tag.DNGVersion, DNGVersion.V1_4),
        (Tag.DNGBackwardVersion, DNGVersion.V1_1),
        (Tag.UniqueCameraModel, f"{_DNG_MAKE} {_DNG_MODEL}"),
        (Tag.ColorMatrix1, [_srational(value) for row in _XYZ_TO_LINEAR_SRGB for value in row]),
        (Tag.CalibrationIlluminant1, CalibrationIlluminant.D65),
        (Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]]),
        (Tag.BaselineExposure, [[0, 1]]),
        (Tag.PreviewColorSpace, PreviewColorSpace.sRGB),
    ]


def _cfa_tags(width: int, height: int, bits: int) -> list[tuple[tuple, object]]:
    """The tags that describe the raw CFA image itself (besides where its data lies)."""
    return [
        (Tag.ImageWidth, width),
        (Tag.ImageLength, height),
        (Tag.BitsPerSample, bits),
        (Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array),
        (Tag.SamplesPerPixel, 1),
        (Tag.PlanarConfiguration, 1),
        (Tag.CFARepeatPatternDim, [2, 2]),
        (Tag.CFAPattern, CFAPattern.RGGB),
        (Tag.CFAPlaneColor, [0, 1, 2]),
        (Tag.CFALayout, 1),
        (Tag.BlackLevel, 0),
        (Tag.WhiteLevel, 2**bits - 1),
    ]


def write_dng(
    image: Image.Image,
    path: Path,
    *,
    preview: Image.Image | None = None,
    orientation: int = 1,
    bits: int = 16,
) -> Path:
    """Writes ``image`` as a camera-style DNG 1.4 that LibRaw (rawpy) reads and demosaics.

    The raw image is an uncompressed RGGB Bayer mosaic of ``image`` in linear light, ``bits`` (12 or 16)
    per photosite, black level 0; odd widths and heights lose their last column or row. The camera is an
    "sRGB camera" (ColorMatrix1 = XYZ to linear sRGB under D65, AsShotNeutral 1, 1, 1), so
    ``raw.postprocess(use_camera_wb=True)`` looks like ``image``, though not level for level: LibRaw's default
    auto-brightening stretches the brightest 1 % of the picture to white, so a photo without highlights comes
    out brighter (chelsea: mean red 181 against 148), and its default BT.709 output curve makes one with
    highlights a few percent darker (astronaut: 136 against 142). ``no_auto_bright=True, gamma=(2.4, 12.92)``
    gives back ``image``'s channel means to within a level or two.

    ``orientation`` (1..8) is the TIFF Orientation tag in IFD0: LibRaw reports it as ``raw.sizes.flip``
    (6 for orientation 6) and ``postprocess`` turns the picture.

    ``preview``: a picture embedded as the DNG's JPEG preview, as cameras embed one, stored unturned like the
    raw image. ``raw.extract_thumb()`` returns it as ``ThumbFormat.JPEG`` bytes of ``preview``'s size; without
    a preview it raises ``rawpy.LibRawNoThumbnailError``. Pillow opens a DNG with a preview as a TIFF (that
    preview, IFD0) and cannot identify one without.
    """
    if bits not in (12, 16):  # pidng's 14-bit packer is broken (pack14 fails on any width)
        raise ValueError(f"bits must be 12 or 16, not {bits}")
    mosaic = _bayer_rggb(image, bits)
    height, width = mosaic.shape
    camera, cfa = _camera_tags(orientation), _cfa_tags(width, height, bits)
    if preview is None:
        _write_dng_pidng(path, mosaic, camera + cfa)
    else:
        _write_dng_with_preview(path, _pack(mosaic, bits), camera, cfa, preview)
    return path


def _write_dng_pidng(path: Path, mosaic: np.ndarray, tags: list[tuple[tuple, object]]) -> None:
    """A single-IFD DNG (the raw image as one tile) through pidng."""
    height, width = mosaic.shape
    written_by_pidng = {Tag.NewSubfileType, Tag.Compression, Tag.Software, Tag.DNGVersion, Tag.DNGBackwardVersion}
    dng_tags = DNGTags()
    for tag, value in tags:
        if tag not in written_by_pidng:
            dng_tags.set(tag, value)
    dng_tags.set(Tag.TileWidth, width)
    dng_tags.set(Tag.TileLength, height)
    writer = RAW2DNG()
    writer.options(dng_tags, path="", compress=False)
    Path(path).write_bytes(writer.convert(mosaic))


def _write_dng_with_preview(
    path: Path,
    raw_strip: bytes,
    camera: list[tuple[tuple, object]],
    cfa: list[tuple[tuple, object]],
    preview: Image.Image,
) -> None:
    """A DNG laid out as a camera writes one: header, IFD0 (JPEG preview + camera tags), the raw CFA SubIFD,
    the preview's JPEG stream, the raw strip."""
    jpeg_buffer = io.BytesIO()
    _rgb(preview).save(jpeg_buffer, "JPEG", quality=90)
    jpeg = jpeg_buffer.getvalue()

    def preview_ifd(raw_ifd_at: int, jpeg_at: int) -> list[tuple[tuple, object]]:
        return camera + [
            (Tag.NewSubfileType, 1),
            (Tag.ImageWidth, preview.width),
            (Tag.ImageLength, preview.height),
            (Tag.BitsPerSample, [8, 8, 8]),
            (Tag.Compression, _COMPRESSION_JPEG),
            (Tag.PhotometricInterpretation, _PHOTOMETRIC_YCBCR),
            (Tag.SamplesPerPixel, 3),
            (Tag.PlanarConfiguration, 1),
            (Tag.StripOffsets, jpeg_at),
            (Tag.RowsPerStrip, preview.height),
            (Tag.StripByteCounts, len(jpeg)),
            (_YCBCR_SUBSAMPLING, [2, 2]),
            (_SUBIFDS, raw_ifd_at),
        ]

    def raw_ifd(raw_at: int) -> list[tuple[tuple, object]]:
        return cfa + [
            (Tag.NewSubfileType, 0),
            (Tag.Compression, 1),
            (Tag.StripOffsets, raw_at),
            (Tag.RowsPerStrip, cfa_height),
            (Tag.StripByteCounts, len(raw_strip)),
        ]

    cfa_height = dict(cfa)[Tag.ImageLength]
    # Offsets are single LONGs, stored inside their IFD entries: an IFD's size does not depend on them.
    raw_ifd_at = 8 + len(_ifd(preview_ifd(0, 0), 0))
    jpeg_at = raw_ifd_at + len(_ifd(raw_ifd(0), 0))
    raw_at = jpeg_at + _padded(len(jpeg))
    with open(path, "wb") as out:
        out.write(b"II*\x00" + struct.pack("<I", 8))
        out.write(_ifd(preview_ifd(raw_ifd_at, jpeg_at), 8))
        out.write(_ifd(raw_ifd(raw_at), raw_ifd_at))
        out.write(jpeg.ljust(_padded(len(jpeg)), b"\x00"))
        out.write(raw_strip)


def _padded(size: int) -> int:
    return (size + 3) & ~3


def _ifd(tags: list[tuple[tuple, object]], at: int) -> bytes:
    """One little-endian TIFF IFD that starts at file offset ``at``: the entries sorted by tag, no next IFD, then
    the values longer than 4 bytes (each padded to 4 bytes, so every offset stays word-aligned)."""
    entries, values = [], b""
    values_at = at + 2 + 12 * len(tags) + 4
    for (tag_id, tag_type), value in sorted(tags, key=lambda item: item[0][0]):
        encoded = dngTag((tag_id, tag_type), value if isinstance(value, list | str) else [value])
        if len(encoded.Value) <= 4:
            entries.append(struct.pack("<HHI4s", tag_id, tag_type[0], encoded.DataCount, encoded.Value))
        else:
            entries.append(struct.pack("<HHII", tag_id, tag_type[0], encoded.DataCount, values_at + len(values)))
            values += encoded.Value
    return struct.pack("<H", len(tags)) + b"".join(entries) + struct.pack("<I", 0) + values


# ---------------------------------------------------------------------------------------------------------------
# ICC profiles
#
# Matrix/TRC display profiles (ICC.1:2001-04, version 2.1), built from a colour space's primaries and white:
# the colorants are the RGB -> XYZ matrix's columns, chromatically adapted to the D50 profile connection space
# with the Bradford transform; the media white point is the space's own white, as version 2 display profiles
# record it; the tone curve is a 'curv' (a single gamma, or a sampled sRGB curve).

_D50_XYZ = (0.9642, 1.0, 0.8249)  # the ICC profile connection space illuminant
_D65_XY = (0.3127, 0.3290)
_D50_XY = (0.3457, 0.3585)
_BRADFORD = np.array(
    [
        [0.8951, 0.2664, -0.1614],
        [-0.7502, 1.7135, 0.0367],
        [0.0389, -0.0685, 1.0296],
    ]
)


def _xyz(x: float, y: float) -> np.ndarray:
    """The XYZ (Y = 1) of a chromaticity."""
    return np.array([x / y, 1.0, (1.0 - x - y) / y])


def _rgb_to_xyz(primaries: tuple[tuple[float, float], ...], white: tuple[float, float]) -> np.ndarray:
    """The linear RGB -> XYZ matrix of a colour space (RGB 1, 1, 1 is ``white`` at Y = 1)."""
    columns = np.column_stack([_xyz(*xy) for xy in primaries])
    return columns * np.linalg.solve(columns, _xyz(*white))


def _bradford(source_white: np.ndarray, target_white: np.ndarray) -> np.ndarray:
    """The Bradford chromatic adaptation matrix from one white (XYZ) to another."""
    cone_ratio = (_BRADFORD @ target_white) / (_BRADFORD @ source_white)
    return np.linalg.inv(_BRADFORD) @ np.diag(cone_ratio) @ _BRADFORD


def _s15fixed16(*values: float) -> bytes:
    return b"".join(struct.pack(">i", round(value * 65536)) for value in values)


def _xyz_tag(xyz: np.ndarray | tuple[float, float, float]) -> bytes:
    return b"XYZ \x00\x00\x00\x00" + _s15fixed16(*xyz)


def _text_description_tag(text: str) -> bytes:
    """A version 2 'desc' (textDescriptionType): ASCII, then empty Unicode and ScriptCode descriptions."""
    ascii_text = text.encode("ascii") + b"\x00"
    return b"desc\x00\x00\x00\x00" + struct.pack(">I", len(ascii_text)) + ascii_text + bytes(4 + 4 + 2 + 1 + 67)


def _text_tag(text: str) -> bytes:
    return b"text\x00\x00\x00\x00" + text.encode("ascii") + b"\x00"


def _gamma_curve(gamma: float) -> bytes:
    """A 'curv' of one entry: a pure power law, the exponent as u8Fixed8Number."""
    return b"curv\x00\x00\x00\x00" + struct.pack(">IH", 1, round(gamma * 256))


def _srgb_curve(entries: int = 1024) -> bytes:
    """A 'curv' sampling the sRGB transfer curve (IEC 61966-2-1) at ``entries`` evenly spaced points."""
    linear = _srgb_to_linear(np.linspace(0.0, 1.0, entries))
    samples = np.round(linear * 65535).astype(">u2")
    return b"curv\x00\x00\x00\x00" + struct.pack(">I", entries) + samples.tobytes()


def _matrix_trc_profile(
    description: str,
    primaries: tuple[tuple[float, float], ...],
    white: tuple[float, float],
    curve: bytes,
) -> bytes:
    """A version 2.1 RGB display ('mntr') profile of the given primaries, white point and tone curve."""
    white_xyz = _xyz(*white)
    colorants = _bradford(white_xyz, np.array(_D50_XYZ)) @ _rgb_to_xyz(primaries, white)
    tags = [  # (signature, data); the three tone curves share one copy of the data
        (b"desc", _text_description_tag(description)),
        (b"cprt", _text_tag("No copyright, use freely")),
        (b"wtpt", _xyz_tag(white_xyz)),
        (b"rXYZ", _xyz_tag(colorants[:, 0])),
        (b"gXYZ", _xyz_tag(colorants[:, 1])),
        (b"bXYZ", _xyz_tag(colorants[:, 2])),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    table, data, placed = [], b"", {}
    data_at = 128 + 4 + 12 * len(tags)
    for signature, tag_data in tags:
        if tag_data not in placed:
            placed[tag_data] = data_at + len(data)
            data += tag_data.ljust(_padded(len(tag_data)), b"\x00")
        table.append(struct.pack(">4sII", signature, placed[tag_data], len(tag_data)))
    size = data_at + len(data)
    header = b"".join(
        [
            struct.pack(">I", size),
            b"\x00\x00\x00\x00",  # preferred CMM: none
            bytes([2, 0x10, 0, 0]),  # version 2.1.0
            b"mntr",  # device class: display
            b"RGB ",  # data colour space
            b"XYZ ",  # profile connection space
            struct.pack(">6H", 2024, 1, 1, 0, 0, 0),  # creation date, fixed so the bytes are reproducible
            b"acsp",
            bytes(4 + 4 + 4 + 4 + 8),  # platform, flags, device manufacturer, model, attributes
            struct.pack(">I", 0),  # rendering intent: perceptual
            _s15fixed16(*_D50_XYZ),  # the PCS illuminant
            bytes(4),  # creator
        ]
    ).ljust(128, b"\x00")
    return header + struct.pack(">I", len(tags)) + b"".join(table) + data


@functools.cache
def display_p3_profile() -> bytes:
    """ICC profile of Display P3 (DCI-P3 primaries, D65 white, the sRGB tone curve), as iPhones tag photos."""
    primaries = ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060))
    return _matrix_trc_profile("Display P3 (imgwatch tests)", primaries, _D65_XY, _srgb_curve())


@functools.cache
def adobe_rgb_profile() -> bytes:
    """ICC profile of Adobe RGB (1998): its primaries, D65 white, gamma 563/256."""
    primaries = ((0.64, 0.33), (0.21, 0.71), (0.15, 0.06))
    return _matrix_trc_profile("Adobe RGB (1998) (imgwatch tests)", primaries, _D65_XY, _gamma_curve(563 / 256))


@functools.cache
def prophoto_profile() -> bytes:
    """ICC profile of ProPhoto RGB (ROMM RGB): its primaries, D50 white, gamma 1.8."""
    primaries = ((0.7347, 0.2653), (0.1596, 0.8404), (0.0366, 0.0001))
    return _matrix_trc_profile("ProPhoto RGB (imgwatch tests)", primaries, _D50_XY, _gamma_curve(1.8))


def to_profile(image: Image.Image, icc_bytes: bytes) -> Image.Image:
    """``image``'s sRGB pixels converted (LittleCMS, relative colorimetric) into the colour space of the ICC
    profile ``icc_bytes``: what a camera or phone shooting in that space stores. The profile is also put in
    the result's ``info["icc_profile"]``; the writers here still take it explicitly (``icc_profile=``)."""
    converted = ImageCms.profileToProfile(
        _rgb(image),
        ImageCms.createProfile("sRGB"),
        ImageCms.ImageCmsProfile(io.BytesIO(icc_bytes)),
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
        outputMode="RGB",
    )
    converted.info["icc_profile"] = icc_bytes
    return converted


# ---------------------------------------------------------------------------------------------------------------
# Self-check: python tests/photo_files.py


def _describe(path: Path) -> str:
    with Image.open(path) as opened:
        opened.load()
        keys = sorted(key for key in opened.info if isinstance(key, str))
        orientation = opened.getexif().get(_ORIENTATION)
        return (
            f"{path.name:28} {opened.format:5} {opened.size} {opened.mode} frames={getattr(opened, 'n_frames', 1)}"
            f" exif_orientation={orientation} info={keys}"
        )


def _srgb_to(icc_bytes: bytes, rgb: tuple[int, int, int]) -> tuple[int, ...]:
    return to_profile(Image.new("RGB", (1, 1), rgb), icc_bytes).getpixel((0, 0))


def _to_srgb(icc_bytes: bytes, rgb: tuple[int, int, int]) -> tuple[int, ...]:
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc_bytes))
    pixel = Image.new("RGB", (1, 1), rgb)
    return ImageCms.profileToProfile(pixel, profile, ImageCms.createProfile("sRGB"), outputMode="RGB").getpixel((0, 0))


def _largest_difference(first: tuple[int, ...], second: tuple[int, ...]) -> int:
    return max(abs(a - b) for a, b in zip(first, second, strict=True))


def _self_check() -> None:
    import time

    import rawpy
    from PIL import ImageOps
    from skimage import data

    astronaut = Image.fromarray(data.astronaut())
    chelsea = Image.fromarray(data.chelsea())
    coffee = Image.fromarray(data.coffee())
    folder = Path(tempfile.mkdtemp(prefix="photo-files-"))
    print("writing into", folder)

    # ICC profiles
    for name, profile in (
        ("display_p3", display_p3_profile()),
        ("adobe_rgb", adobe_rgb_profile()),
        ("prophoto", prophoto_profile()),
    ):
        loaded = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        print(
            f"{name:10} {len(profile)} bytes, desc={ImageCms.getProfileDescription(loaded).strip()!r},"
            f" sRGB red -> {_srgb_to(profile, (255, 0, 0))}, white -> {_srgb_to(profile, (255, 255, 255))}"
        )
    red = _srgb_to(display_p3_profile(), (255, 0, 0))
    assert all(abs(a - b) <= 4 for a, b in zip(red, (234, 51, 35), strict=True)), red
    assert _srgb_to(display_p3_profile(), (255, 255, 255)) == (255, 255, 255)
    # Cross-check against the profiles of Debian's colord-data, where it is installed. Read direction (a file
    # tagged with the profile shown as sRGB): within 2 levels. Write direction (sRGB into the profile): colord's
    # Adobe RGB gives 3-4 where the exact answer is 0 (sRGB red is Adobe RGB red: they share the red and blue
    # primaries), a rounding in its colorants blown up by a pure power curve's infinite slope at 0; so 4 there.
    colord = Path("/usr/share/color/icc/colord")
    samples = [(r, g, b) for r in (0, 1, 40, 128, 200, 255) for g in (0, 3, 90, 255) for b in (0, 128, 255)]
    for name, profile in (("AdobeRGB1998.icc", adobe_rgb_profile()), ("ProPhotoRGB.icc", prophoto_profile())):
        if (colord / name).exists():
            reference = (colord / name).read_bytes()
            read = max(_largest_difference(_to_srgb(profile, rgb), _to_srgb(reference, rgb)) for rgb in samples)
            write = max(_largest_difference(_srgb_to(profile, rgb), _srgb_to(reference, rgb)) for rgb in samples)
            print(f"  vs colord {name}: largest difference over {len(samples)} colours: read {read}, write {write}")
            assert read <= 2 and write <= 4, (name, read, write)

    # HEIC
    heic = write_heic(astronaut.resize((300, 200)), folder / "orientation6.heic", exif_orientation=6)
    assert b"irot" in heic.read_bytes()
    print(_describe(heic))
    with Image.open(heic) as opened:
        assert opened.size == (200, 300)
    heic = write_heic(coffee, folder / "p3-nclx.heic", nclx={"color_primaries": 12, "transfer_characteristic": 1})
    print(_describe(heic))
    with Image.open(heic) as opened:
        nclx = opened.info["nclx_profile"]
        print("  nclx:", {key: nclx[key] for key in list(nclx)[:4]})
        assert (nclx["color_primaries"], nclx["transfer_characteristics"]) == (12, 1)
    p3 = display_p3_profile()
    heic = write_heic(to_profile(chelsea, p3), folder / "p3-icc.heic", icc_profile=p3)
    print(_describe(heic))
    with Image.open(heic) as opened:
        assert opened.info["icc_profile"] == p3
    small = astronaut.resize((256, 256))
    heic = write_multi_image_heic(chelsea, small, folder / "two-images.heic")
    print(_describe(heic))
    with Image.open(heic) as opened:
        pixels = np.asarray(opened.convert("RGB"), dtype=float)
        difference = np.abs(pixels - np.asarray(chelsea, dtype=float)).mean()
        print(f"  primary: size {opened.size}, mean difference from chelsea {difference:.2f}")
        assert opened.size == chelsea.size and difference < 4

    # AVIF, JPEG XL, JPEG
    avif = write_avif(astronaut.resize((300, 200)), folder / "orientation6.avif", exif_orientation=6, icc_profile=p3)
    assert b"irot" in avif.read_bytes()
    print(_describe(avif))
    with Image.open(avif) as opened:
        assert ImageOps.exif_transpose(opened).size == (200, 300) and opened.info["icc_profile"] == p3
    print(_describe(write_jxl(coffee, folder / "plain.jxl")))
    jxl = write_jxl(chelsea, folder / "adobe.jxl", icc_profile=adobe_rgb_profile())
    print(_describe(jxl))
    with Image.open(jxl) as opened:
        assert opened.info["icc_profile"] == adobe_rgb_profile()
    jpeg = write_jpeg(astronaut, folder / "prophoto.jpg", icc_profile=prophoto_profile())
    print(_describe(jpeg))
    truncated = damaged(jpeg, folder / "truncated.jpg", keep=0.5)
    print(f"{truncated.name:28} {truncated.stat().st_size} of {jpeg.stat().st_size} bytes")

    # DNG
    def develop(path: Path, source: Image.Image, preview_size: tuple[int, int] | None = None) -> None:
        with rawpy.imread(str(path)) as raw:
            sizes = raw.sizes
            started = time.perf_counter()
            developed = raw.postprocess(half_size=True, use_camera_wb=True)  # as imgwatch develops a RAW
            seconds = time.perf_counter() - started
            faithful = raw.postprocess(half_size=True, use_camera_wb=True, no_auto_bright=True, gamma=(2.4, 12.92))
            try:
                thumb = raw.extract_thumb()
                with Image.open(io.BytesIO(thumb.data)) as opened:
                    preview = (thumb.format, opened.format, opened.size)
            except rawpy.LibRawNoThumbnailError as error:
                preview = type(error).__name__
            cam_rgb = np.round(raw.color_matrix[:, :3], 3).tolist()
        size = (developed.shape[1], developed.shape[0])
        expected = np.asarray(_oriented(source, sizes.flip).resize(size), dtype=float)
        means, faithful_means = developed.reshape(-1, 3).mean(0), faithful.reshape(-1, 3).mean(0)
        expected_means = expected.reshape(-1, 3).mean(0)
        correlation = np.corrcoef(developed.astype(float).ravel(), expected.ravel())[0, 1]
        print(
            f"{path.name:16} raw {sizes.raw_width}x{sizes.raw_height} flip={sizes.flip} -> {size}"
            f" in {seconds:.3f}s; means {np.round(means, 1)}, without auto-bright + sRGB curve"
            f" {np.round(faithful_means, 1)}, source {np.round(expected_means, 1)}; correlation {correlation:.4f};"
            f" thumb {preview}; rgb_cam {cam_rgb}"
        )
        assert np.all(np.abs(faithful_means - expected_means) <= 0.02 * expected_means + 1)
        assert correlation > 0.97
        if preview_size is None:
            assert preview == "LibRawNoThumbnailError", preview
        else:
            assert preview == (rawpy.ThumbFormat.JPEG, "JPEG", preview_size), preview

    develop(write_dng(astronaut, folder / "plain.dng"), astronaut)
    develop(write_dng(chelsea, folder / "12bit.dng", bits=12), chelsea)
    develop(
        write_dng(coffee, folder / "preview.dng", preview=coffee.resize((300, 200)), orientation=6), coffee, (300, 200)
    )
    big = astronaut.resize((4000, 3000))
    develop(write_dng(big, folder / "big.dng", preview=big.resize((1600, 1200))), big, (1600, 1200))
    develop(write_dng(big, folder / "big-pidng.dng"), big)


def _oriented(image: Image.Image, flip: int) -> Image.Image:
    """``image`` turned as LibRaw turns a picture whose ``sizes.flip`` is 0, 3, 5 or 6."""
    method = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}.get(flip)
    return image if method is None else image.transpose(method)


if __name__ == "__main__":
    _self_check()


def png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose header says ``width``×``height``: opens as that size, fails to decode (truncated)."""
    encoded = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 120, 60)).save(encoded, "PNG")
    data = bytearray(encoded.getvalue())
    struct.pack_into(">II", data, 16, width, height)  # IHDR's width and height
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))  # and its CRC
    return bytes(data)
