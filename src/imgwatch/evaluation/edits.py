"""The edits `imgwatch eval` makes copies with: one small pure function each, listed in EDITS.

imagededup's "transformed" benchmark edits (a crop keeping the aspect ratio, both flips, a 25°
rotation, a resize to 1:1) and what happens to photos in real life (downscaled, re-encoded, made
brighter or darker, shown inside a screenshot, exported from a phone's Display P3 to sRGB).
Every copy is saved as a JPEG at COPY_QUALITY unless its edit is the re-encoding itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

from imgwatch.photos.colour import to_srgb

COPY_QUALITY = 95  # every copy's JPEG quality, but jpeg_30's: near enough lossless at 224 pixels
TRANSFORMED = "transformed"  # imagededup's benchmark
REAL_LIFE = "real life"
CROP_KEEPS = 0.7  # of each side
ROTATION_DEGREES = 25
QUARTER = 4
LOW_JPEG_QUALITY = 30
BRIGHTNESS_CHANGE = 0.2
PHONE_SCREEN_ASPECT = 19.5 / 9  # height / width of a phone held upright
STATUS_BAR = 0.04  # of the screen's height
# A Display P3 photo's numbers (nclx primaries 12, the sRGB curve), as photos.colour reads them.
DISPLAY_P3 = {"color_primaries": 12, "transfer_characteristics": 13, "matrix_coefficients": 0, "full_range_flag": 1}


def crop_keeping_aspect(photo: Image.Image) -> Image.Image:
    """70 % of each side, off centre (the model's own centre crop would hide a centred one)."""
    width, height = photo.size
    left, top = int(width * 0.1), int(height * 0.1)
    return photo.crop((left, top, left + int(width * CROP_KEEPS), top + int(height * CROP_KEEPS)))


def flip_horizontal(photo: Image.Image) -> Image.Image:
    return ImageOps.mirror(photo)


def flip_vertical(photo: Image.Image) -> Image.Image:
    return ImageOps.flip(photo)


def rotate_25(photo: Image.Image) -> Image.Image:
    """Turned 25° counter-clockwise, the whole photo kept (black corners)."""
    return photo.rotate(ROTATION_DEGREES, resample=Image.Resampling.BILINEAR, expand=True)


def resize_square(photo: Image.Image) -> Image.Image:
    """Squashed to 1:1 at its short side."""
    side = min(photo.size)
    return photo.resize((side, side), Image.Resampling.BILINEAR)


def quarter_size(photo: Image.Image) -> Image.Image:
    """A quarter of its width and height, as a messenger or a web page sends it."""
    width, height = photo.size
    return photo.resize((max(1, width // QUARTER), max(1, height // QUARTER)), Image.Resampling.LANCZOS)


def unchanged(photo: Image.Image) -> Image.Image:
    """The pixels as they are: for an edit that is only its encoding (jpeg_30)."""
    return photo


def brighter(photo: Image.Image) -> Image.Image:
    return ImageEnhance.Brightness(photo).enhance(1 + BRIGHTNESS_CHANGE)


def darker(photo: Image.Image) -> Image.Image:
    return ImageEnhance.Brightness(photo).enhance(1 - BRIGHTNESS_CHANGE)


def screenshot(photo: Image.Image) -> Image.Image:
    """The photo as a phone shows it, screenshotted: fitted to the width of a black upright screen,
    a light status bar on top."""
    width, height = photo.size
    screen_height = max(int(width * PHONE_SCREEN_ASPECT), height + 2 * int(width * PHONE_SCREEN_ASPECT * STATUS_BAR))
    screen = Image.new("RGB", (width, screen_height), (0, 0, 0))
    bar = int(screen_height * STATUS_BAR)
    screen.paste((235, 235, 235), (0, 0, width, bar))
    screen.paste(photo, (0, (screen_height - height) // 2))
    return screen


def p3_to_srgb(photo: Image.Image) -> Image.Image:
    """A phone's export to sRGB of a Display P3 photo, where the library kept the P3 numbers
    without saying so (a stripped profile): the photo's numbers read as P3 and converted to sRGB."""
    return to_srgb(photo, nclx=DISPLAY_P3)


@dataclass(frozen=True)
class Edit:
    name: str
    family: str  # TRANSFORMED or REAL_LIFE
    change: Callable[[Image.Image], Image.Image]
    quality: int = COPY_QUALITY  # the copy's JPEG quality

    def write(self, photo: Image.Image, path: Path) -> Path:
        """The edited copy of ``photo`` (RGB) as a JPEG at ``path``."""
        self.change(photo).convert("RGB").save(path, "JPEG", quality=self.quality)
        return path


EDITS = (
    Edit("crop", TRANSFORMED, crop_keeping_aspect),
    Edit("flip_horizontal", TRANSFORMED, flip_horizontal),
    Edit("flip_vertical", TRANSFORMED, flip_vertical),
    Edit("rotate_25", TRANSFORMED, rotate_25),
    Edit("resize_square", TRANSFORMED, resize_square),
    Edit("quarter_size", REAL_LIFE, quarter_size),
    Edit("jpeg_30", REAL_LIFE, unchanged, quality=LOW_JPEG_QUALITY),
    Edit("brighter_20", REAL_LIFE, brighter),
    Edit("darker_20", REAL_LIFE, darker),
    Edit("screenshot", REAL_LIFE, screenshot),
    Edit("p3_to_srgb", REAL_LIFE, p3_to_srgb),
)
