"""What a worker refuses from a photo's header, before anything large is allocated.

Every format is held to these: JPEG, PNG and the rest through Pillow's header, HEIF through
libheif's, RAW through LibRaw's sensor size.
"""

from __future__ import annotations

from imgwatch.errors import DecodeError

# Aspect ratio: the model sees the centre 224×224 of the image scaled to a short side of
# 256, so a 1:50 strip shows it 1/57 of its length; a 1×60000 one would be scaled to
# 256×15,360,000 pixels (~12 GB) only to show it less than one original pixel. Panoramas
# (1:4 to 1:20) are well inside.
MAX_ASPECT_RATIO = 50
# Pixels: Pillow's own decompression-bomb limit (2 × Image.MAX_IMAGE_PIXELS), fixed here so
# a library changing Pillow's global cannot lift it. 179 MP holds every camera's JPEGs
# (a 102 MP medium-format JPEG decodes at 1/8 scale), 150 MP medium-format RAWs and 13k×13k
# PNG/TIFF scans, which decode at full size: about 3 bytes per pixel (RGB), 0.5 GB at the limit.
MAX_PIXELS = 178_956_970
# Files are read whole: a bigger "image" is refused before it is read.
MAX_FILE_BYTES = 1 << 30


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
