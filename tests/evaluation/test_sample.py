"""Which photos eval draws: repeatable by seed, each content once, refusals in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from imgwatch.errors import ImgwatchError
from imgwatch.evaluation.sample import sample_folder, sample_store
from imgwatch.files import PathFilter
from imgwatch.store import open_store
from tests.helpers import DIM, MODEL, axis, make_config, make_record

PHOTOS = PathFilter.create(["jpg", "png"], [])


@pytest.fixture
def folder(tmp_path: Path, write_photo) -> Path:  # noqa: ANN001 - a fixture
    root = tmp_path / "photos"
    for name in ["astronaut", "coffee", "chelsea", "rocket", "camera"]:
        write_photo(root / "sub" / f"{name}.png", name)
    shutil.copyfile(root / "sub" / "coffee.png", root / "coffee-copy.png")  # the same content twice
    (root / "notes.txt").write_text("not a photo")
    return root


def test_a_folder_sample_is_repeatable_and_holds_each_content_once(folder: Path) -> None:
    first = sample_folder(str(folder), PHOTOS, 3, seed=7, distractors=10)
    assert first == sample_folder(str(folder), PHOTOS, 3, seed=7, distractors=10)
    assert first.library == 6 and len(first.originals) == 3
    drawn = [Path(p).name for p in first.originals + first.distractors]
    assert len(drawn) == 5 and len({name.removesuffix("-copy.png").removesuffix(".png") for name in drawn}) == 5
    assert {tuple(sample_folder(str(folder), PHOTOS, 3, seed, 0).originals) for seed in range(6)} != {
        tuple(first.originals)}


def test_refusals_say_what_to_do(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ImgwatchError, match="at least 2"):
        sample_folder(str(folder), PHOTOS, 1, 0, 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImgwatchError, match="no photos below .*empty"):
        sample_folder(str(tmp_path / "empty"), PHOTOS, 5, 0, 0)
    with pytest.raises(ImgwatchError, match="not a folder"):
        sample_folder(str(tmp_path / "missing"), PHOTOS, 5, 0, 0)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copyfile(folder / "coffee-copy.png", lonely / "a.png")
    shutil.copyfile(folder / "coffee-copy.png", lonely / "b.png")
    with pytest.raises(ImgwatchError, match="1 distinct photo"):
        sample_folder(str(lonely), PHOTOS, 5, 0, 0)


def test_a_store_sample_draws_indexed_images_each_content_once(tmp_path: Path) -> None:
    with open_store(make_config(tmp_path / "data")) as store:
        store.ensure_model(MODEL, DIM)
        store.upsert([make_record(f"/photos/{i}.jpg", axis(i % 8), sha256=f"{i % 8:064x}") for i in range(12)])
        sample = sample_store(store, 5, seed=1, distractors=100)
    assert sample.library == 12 and sample.source == "the store"
    assert len(sample.originals) == 5 and len(sample.originals + sample.distractors) == 8  # 8 contents
