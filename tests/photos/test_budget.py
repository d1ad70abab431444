"""The decode budget: big decodes take turns, small ones pass beside them, a failed decode gives its share back.

Each reservation here is held by a real thread until the test lets it go; "still waiting" is
checked by giving a waiting thread a moment to (wrongly) get in.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgwatch.errors import DecodeError
from imgwatch.photos import open_photo
from imgwatch.photos.budget import DECODE_BUDGET_PIXELS, DecodeBudget, declared_pixels
from imgwatch.photos.limits import MAX_PIXELS
from imgwatch.thumbnails import ThumbnailCache
from tests.photo_files import png_declaring, write_dng

# The near-limit headers below are what the budget is for: Pillow's warning about them is expected.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")

GETS_IN_S = 10.0  # how long a thread that should get in may take (a loaded machine)
STAYS_OUT_S = 0.3  # how long a thread that should wait is given to get in wrongly


class Holder:
    """A thread that holds ``pixels`` of ``budget`` from when it gets in until ``leave()``."""

    def __init__(self, budget: DecodeBudget, pixels: int) -> None:
        self.entered = threading.Event()
        self._leave = threading.Event()
        self._thread = threading.Thread(target=self._hold, args=(budget, pixels), daemon=True)
        self._thread.start()

    def _hold(self, budget: DecodeBudget, pixels: int) -> None:
        with budget.reserve(pixels):
            self.entered.set()
            self._leave.wait()

    def gets_in(self) -> bool:
        return self.entered.wait(GETS_IN_S)

    def stays_out(self) -> bool:
        return not self.entered.wait(STAYS_OUT_S)

    def leave(self) -> None:
        self._leave.set()
        self._thread.join(GETS_IN_S)
        assert not self._thread.is_alive()


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    """Holders a test starts; all are let go at the end (in order: the ones waiting then get in and leave)."""
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.leave()


def test_two_big_decodes_do_not_hold_the_budget_at_once(holders: list[Holder]) -> None:
    budget = DecodeBudget(pixels=100, decodes=4)
    first = Holder(budget, 80)
    holders.append(first)
    assert first.gets_in()
    second = Holder(budget, 80)
    holders.append(second)
    assert second.stays_out()
    assert budget.in_use == (80, 1)
    first.leave()
    assert second.gets_in()
    assert budget.in_use == (80, 1)


def test_a_small_decode_is_not_blocked_by_a_big_one(holders: list[Holder]) -> None:
    budget = DecodeBudget(pixels=100, decodes=4)
    big = Holder(budget, 80)
    holders.append(big)
    assert big.gets_in()
    waiting_big = Holder(budget, 80)
    holders.append(waiting_big)
    assert waiting_big.stays_out()
    small = Holder(budget, 15)  # fits beside the big one, ahead of the big one waiting
    holders.append(small)
    assert small.gets_in()
    assert budget.in_use == (95, 2)


def test_the_budget_is_given_back_when_the_decode_fails() -> None:
    budget = DecodeBudget(pixels=DECODE_BUDGET_PIXELS, decodes=2)
    near_limit = png_declaring(13_000, 13_000)
    with pytest.raises(DecodeError, match="truncated"), budget.admit(near_limit, "scan.png"):
        assert budget.in_use == (13_000 * 13_000, 1)
        open_photo(near_limit, "scan.png")
    assert budget.in_use == (0, 0)
    after = Holder(budget, 13_000 * 13_000)  # would wait for good if the failed decode kept its share
    assert after.gets_in()
    after.leave()


def test_no_more_decodes_at_once_than_slots(holders: list[Holder]) -> None:
    budget = DecodeBudget(pixels=100, decodes=2)
    holders.extend(Holder(budget, 1) for _ in range(2))
    assert all(holder.gets_in() for holder in holders)
    third = Holder(budget, 1)
    holders.append(third)
    assert third.stays_out()
    holders[0].leave()
    assert third.gets_in()


def test_a_decode_bigger_than_the_whole_budget_runs_alone(holders: list[Holder]) -> None:
    budget = DecodeBudget(pixels=100, decodes=4)
    small = Holder(budget, 10)
    holders.append(small)
    assert small.gets_in()
    huge = Holder(budget, 150)
    holders.append(huge)
    assert huge.stays_out()
    small.leave()
    assert huge.gets_in()
    another = Holder(budget, 10)
    holders.append(another)
    assert another.stays_out()


def test_at_least_two_slots_so_a_small_photo_never_waits_for_a_big_one_to_finish() -> None:
    assert DecodeBudget(decodes=None).decodes >= 2
    assert MAX_PIXELS < DECODE_BUDGET_PIXELS  # a photo at the limit leaves room beside it


def test_declared_pixels_come_from_the_header(tmp_path: Path) -> None:
    assert declared_pixels(png_declaring(13_000, 13_000), "scan.png") == 169_000_000
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    jpeg = io.BytesIO()
    photo.save(jpeg, "JPEG")
    assert declared_pixels(jpeg.getvalue(), "photo.jpg") == 400 * 300
    dng = write_dng(photo, tmp_path / "photo.dng")  # a RAW is counted at its developed size
    assert declared_pixels(dng.read_bytes(), str(dng)) == 400 * 300
    assert declared_pixels(b"not an image at all", "x.jpg") == 0  # the decode refuses it before any pixel
    assert declared_pixels(b"", "empty.png") == 0


def test_thumbnail_renders_wait_their_turn_in_the_budget(tmp_path: Path, holders: list[Holder]) -> None:
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (640, 480), (200, 30, 30)).save(photo)
    sha256 = hashlib.sha256(photo.read_bytes()).hexdigest()
    budget = DecodeBudget(pixels=100, decodes=1)
    cache = ThumbnailCache(tmp_path / "thumbnails", budget)
    holder = Holder(budget, 1)
    holders.append(holder)
    assert holder.gets_in()
    rendered = threading.Event()
    renderer = threading.Thread(target=lambda: (cache.get(str(photo), 64, sha256), rendered.set()), daemon=True)
    renderer.start()
    assert not rendered.wait(STAYS_OUT_S)
    holder.leave()
    assert rendered.wait(GETS_IN_S)
    assert budget.in_use == (0, 0)
