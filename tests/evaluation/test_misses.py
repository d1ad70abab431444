"""The worst misses drawn as one picture: a contact sheet row per miss."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from imgwatch.errors import SheetError
from imgwatch.evaluation.misses import write_misses_sheet
from imgwatch.evaluation.report import Miss
from imgwatch.sheet import TILE
from tests.evaluation.made_up import model_report


def test_a_row_per_miss(tmp_path: Path, write_photo: Callable[..., Path]) -> None:
    copy, first, original = (str(write_photo(tmp_path / f"{n}.png", n)) for n in ("coffee", "rocket", "astronaut"))
    misses = [Miss("crop", original, copy, None, 0.8, first, 0.9), Miss("crop", original, copy, 3, 0.85, first, 0.9)]
    sheet = write_misses_sheet([model_report("imagenet", 0.5, None, [], misses)], tmp_path / "misses.png")
    report = model_report("imagenet", 0.5, None, [])
    with Image.open(sheet) as picture:
        assert picture.height > 2 * TILE and picture.width < 4 * TILE
    with pytest.raises(SheetError, match=r"name it \.png"):
        write_misses_sheet([report], tmp_path / "misses.gif")
    with Image.open(write_misses_sheet([report], tmp_path / "none.png")) as picture:  # no misses: still a picture
        assert picture.height < 2 * TILE
