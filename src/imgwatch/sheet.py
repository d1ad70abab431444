"""Contact sheets: a query image and its matches as one picture (`search/similar --sheet`).

The query comes first, framed, then every match in rank order; under each thumbnail its
score and its file name. Thumbnails of indexed images come from the thumbnail cache when
one is given; a file that cannot be read gets a grey tile saying so, rather than no sheet.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from imgwatch.display import ELLIPSIS, file_name, name_ends
from imgwatch.errors import ContentChanged, ImgwatchError, SheetError
from imgwatch.thumbnails import ThumbnailCache, render

TILE = 240  # thumbnail box, pixels
PAD = 12  # around and between cells
TEXT_GAP = 6
FONT_SIZE = 15
LINE_HEIGHT = FONT_SIZE + 4
MAX_COLUMNS = 6
BACKGROUND = (246, 246, 243)
TILE_BACKGROUND = (226, 226, 222)
INK = (28, 28, 28)
MUTED = (96, 96, 96)
QUERY_FRAME = (214, 92, 24)
FRAME_WIDTH = 4
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
# Pillow's built-in font covers ASCII only; names with accents or other scripts need a system
# font. The first of these found (Pillow looks in the usual font folders) is used.
SYSTEM_FONTS = ("DejaVuSans.ttf", "NotoSans-Regular.ttf", "LiberationSans-Regular.ttf", "Arial.ttf")


@dataclass(frozen=True)
class SheetItem:
    path: str
    label: str  # the first line under the thumbnail: "query" or the score
    sha256: str | None = None  # its indexed content: its thumbnail may come from the cache (None: not indexed)


def write_sheet(query: SheetItem, matches: Sequence[SheetItem], out: str | os.PathLike[str],
                cache: ThumbnailCache | None = None, tile: int = TILE) -> Path:
    """Render ``query`` and ``matches`` into one image at ``out`` (PNG, JPEG or WebP by its suffix)."""
    target = Path(out)
    image_format = FORMATS.get(target.suffix.lower())
    if image_format is None:
        raise SheetError(f"cannot write a contact sheet to {target}: name it .png, .jpg or .webp")
    sheet = make_sheet(query, matches, cache, tile)
    try:
        sheet.save(target, image_format)
    except OSError as exc:
        raise SheetError(f"cannot write the contact sheet {target}: {exc.strerror or exc}") from None
    return target


def columns_for(count: int) -> int:
    """Tiles across: a little wider than square, at most MAX_COLUMNS."""
    return min(MAX_COLUMNS, max(1, math.ceil(math.sqrt(count * 1.5))), max(1, count))


def tile_origin(index: int, columns: int, tile: int = TILE) -> tuple[int, int]:
    """Top-left corner of tile ``index``'s thumbnail box; its labels are below it."""
    return PAD + (index % columns) * (tile + PAD), PAD + (index // columns) * (tile + TEXT_GAP + 2 * LINE_HEIGHT + PAD)


def make_sheet(query: SheetItem, matches: Sequence[SheetItem], cache: ThumbnailCache | None = None,
               tile: int = TILE) -> Image.Image:
    items = [query, *matches]
    font = label_font()
    line_height = LINE_HEIGHT
    columns = columns_for(len(items))
    rows = math.ceil(len(items) / columns)
    width = PAD + columns * (tile + PAD)
    height = tile_origin(rows * columns, columns, tile)[1]
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for index, item in enumerate(items):
        x, y = tile_origin(index, columns, tile)
        draw.rectangle((x, y, x + tile - 1, y + tile - 1), fill=TILE_BACKGROUND)
        thumbnail = _thumbnail(item, tile, cache)
        if thumbnail is None:
            _centered(draw, "cannot read", (x, y + tile // 2 - line_height // 2), tile, font, MUTED)
        else:
            sheet.paste(thumbnail, (x + (tile - thumbnail.width) // 2, y + (tile - thumbnail.height) // 2))
        if index == 0:
            draw.rectangle((x - FRAME_WIDTH, y - FRAME_WIDTH, x + tile - 1 + FRAME_WIDTH, y + tile - 1 + FRAME_WIDTH),
                           outline=QUERY_FRAME, width=FRAME_WIDTH)
        text_y = y + tile + TEXT_GAP
        _centered(draw, item.label, (x, text_y), tile, font, QUERY_FRAME if index == 0 else INK)
        name = _fit(draw, file_name(item.path), tile, font)
        _centered(draw, name, (x, text_y + line_height), tile, font, MUTED)
    return sheet


@functools.cache
def label_font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for name in SYSTEM_FONTS:
        try:
            return ImageFont.truetype(name, FONT_SIZE)
        except OSError:
            continue
    return ImageFont.load_default(size=FONT_SIZE)


def _thumbnail(item: SheetItem, tile: int, cache: ThumbnailCache | None) -> Image.Image | None:
    try:
        if cache is not None and item.sha256 is not None:
            with contextlib.suppress(ContentChanged):  # changed since indexed: drawn as it is now, not cached
                with Image.open(cache.get(item.path, tile, item.sha256).file) as cached:
                    cached.load()
                    return cached.copy()
        return render(item.path, tile)
    except (OSError, ImgwatchError):
        return None


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> str:
    """``text`` shortened with … until it fits ``width`` pixels, its end kept whole (name_ends): the
    end tells variants apart. Only when the end alone is too wide does it lose its first characters."""
    start, end = name_ends(text)
    candidates = [text, *(f"{start[:keep]}{ELLIPSIS}{end}" for keep in range(len(start) - 1, -1, -1)),
                  *(f"{ELLIPSIS}{end[drop:]}" for drop in range(1, len(end)))]
    return next((c for c in candidates if draw.textlength(c, font=font) <= width), ELLIPSIS)


def _centered(draw: ImageDraw.ImageDraw, text: str, origin: tuple[int, int], width: int,
              font: ImageFont.ImageFont | ImageFont.FreeTypeFont, fill: tuple[int, int, int]) -> None:
    x, y = origin
    offset = (width - draw.textlength(text, font=font)) / 2
    draw.text((x + max(0.0, offset), y), text, font=font, fill=fill)
