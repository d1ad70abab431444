"""Each edit is a small pure function: what it does to a photo, and the copy it writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgwatch.evaluation import edits
from imgwatch.evaluation.edits import EDITS


@pytest.fixture
def photo(photo_arrays: dict[str, object]) -> Image.Image:
    return Image.fromarray(photo_arrays["coffee"])  # type: ignore[call-overload]  # 600×400


def test_the_table_names_each_edit_once_in_both_families() -> None:
    names = [edit.name for edit in EDITS]
    assert len(names) == len(set(names)) == 11
    assert {edit.family for edit in EDITS} == {edits.TRANSFORMED, edits.REAL_LIFE}


def test_the_geometric_edits(photo: Image.Image) -> None:
    pixels = np.asarray(photo)
    crop = edits.crop_keeping_aspect(photo)
    assert crop.size == (420, 280) and abs(crop.width / crop.height - photo.width / photo.height) < 0.01
    assert np.array_equal(np.asarray(crop), pixels[40:320, 60:480])
    assert np.array_equal(np.asarray(edits.flip_horizontal(photo)), pixels[:, ::-1])
    assert np.array_equal(np.asarray(edits.flip_vertical(photo)), pixels[::-1])
    assert edits.rotate_25(photo).size == (714, 618)  # the whole photo kept, turned (600·cos25 + 400·sin25, …)
    assert edits.resize_square(photo).size == (400, 400)
    assert edits.quarter_size(photo).size == (150, 100)


def test_brightness_moves_by_a_fifth(photo: Image.Image) -> None:
    mean = np.asarray(photo, dtype=np.float64).mean()
    assert np.asarray(edits.darker(photo), dtype=np.float64).mean() == pytest.approx(0.8 * mean, rel=0.02)
    assert np.asarray(edits.brighter(photo), dtype=np.float64).mean() > 1.1 * mean  # clipped at 255


def test_a_screenshot_shows_the_whole_photo_on_an_upright_screen(photo: Image.Image) -> None:
    shot = edits.screenshot(photo)
    assert shot.width == photo.width and shot.height > 2 * photo.height
    top = (shot.height - photo.height) // 2
    assert np.array_equal(np.asarray(shot)[top : top + photo.height], np.asarray(photo))
    assert np.asarray(shot)[0].min() > 200  # the status bar


def test_the_p3_export_makes_colours_more_saturated_and_keeps_greys(photo: Image.Image) -> None:
    grey = Image.new("RGB", (4, 4), (128, 128, 128))
    assert np.abs(np.asarray(edits.p3_to_srgb(grey), dtype=int) - 128).max() <= 1
    red = Image.new("RGB", (4, 4), (200, 60, 60))
    r, g, b = np.asarray(edits.p3_to_srgb(red))[0, 0]
    assert r > 200 and g < 60 and b < 60  # P3's red is redder than sRGB's


def test_a_copy_is_a_jpeg_at_its_edits_quality(photo: Image.Image, tmp_path: Path) -> None:
    by_name = {edit.name: edit for edit in EDITS}
    faithful = by_name["flip_horizontal"].write(photo, tmp_path / "flip.jpg")
    rough = by_name["jpeg_30"].write(photo, tmp_path / "rough.jpg")
    with Image.open(rough) as written:
        assert written.format == "JPEG" and written.size == photo.size
    assert rough.stat().st_size < faithful.stat().st_size / 2
