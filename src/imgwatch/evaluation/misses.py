"""The worst misses as one picture (`imgwatch eval --sheet`): for each, a contact sheet row of the
copy, the photo that came first instead, and the original with its score and rank."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from imgwatch.errors import SheetError
from imgwatch.evaluation.report import Miss, ModelReport
from imgwatch.sheet import BACKGROUND, FORMATS, SheetItem, make_sheet

PER_MODEL = 8


def miss_items(miss: Miss, model: str | None) -> tuple[SheetItem, list[SheetItem]]:
    """The copy (framed, as a sheet's query), what came first, and the original."""
    rank = "beyond 10" if miss.rank is None else f"rank {miss.rank}"
    copy = f"{miss.edit} copy" + (f" ({os.path.basename(model)})" if model else "")
    return SheetItem(miss.copy, copy), [SheetItem(miss.first, f"first: {miss.first_score:.3f}"),
                                        SheetItem(miss.original, f"original: {miss.score:.3f}, {rank}")]


def write_misses_sheet(reports: Sequence[ModelReport], out: str | os.PathLike[str]) -> Path:
    """Rows of the worst misses of each model (PER_MODEL at most) in one image at ``out``; a
    model that missed nothing adds no row."""
    target = Path(out)
    image_format = FORMATS.get(target.suffix.lower())
    if image_format is None:
        raise SheetError(f"cannot write the misses sheet to {target}: name it .png, .jpg or .webp")
    several = len(reports) > 1
    rows = [make_sheet(*miss_items(miss, report.model if several else None))
            for report in reports for miss in report.misses[:PER_MODEL]]
    if not rows:
        rows = [make_sheet(SheetItem("", "no misses: every copy's original came first"), [])]
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), BACKGROUND)
    top = 0
    for row in rows:
        sheet.paste(row, (0, top))
        top += row.height
    try:
        sheet.save(target, image_format)
    except OSError as exc:
        raise SheetError(f"cannot write the misses sheet {target}: {exc.strerror or exc}") from None
    return target
