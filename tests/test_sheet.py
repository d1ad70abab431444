"""Contact sheets (`imgwatch search/similar --sheet`): the query first, then the results, labelled."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from imgwatch.cli import main
from imgwatch.embedding import Embedded, Embedder, EmbeddingModel
from imgwatch.sheet import FRAME_WIDTH, PAD, QUERY_FRAME, TILE, TILE_BACKGROUND, SheetItem, make_sheet, tile_origin
from imgwatch.store import ImageRecord, open_store
from imgwatch.thumbnails import render
from tests.helpers import make_config, process_env


@dataclass
class Indexed:
    photos: dict[str, Path]
    data_dir: Path


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, photo_arrays: dict[str, object],
            random_model: EmbeddingModel) -> Indexed:
    """Real photos indexed through the real Embedder and store, as workers do (once per module)."""
    base = tmp_path_factory.mktemp("sheet")
    (base / "photos").mkdir()
    photos = {}
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera"):
        photos[name] = base / "photos" / f"{name}.jpg"
        Image.fromarray(np.asarray(photo_arrays[name])).save(photos[name])
    config = make_config(base / "data")
    with Embedder(random_model, batch_size=5) as embedder, open_store(config) as store:
        store.ensure_model(random_model.identity, random_model.dim)
        records = []
        for result in embedder.embed_files([str(p) for p in photos.values()]):
            assert isinstance(result, Embedded)
            facts = result.facts
            records.append(ImageRecord(facts.path, facts.sha256, facts.size, facts.mtime_ns, result.width,
                                       result.height, random_model.identity, result.vector))
        store.upsert(records)
        store.link(records, 0.5, 10)
    return Indexed(photos, base / "data")


@pytest.fixture
def cli(indexed: Indexed) -> Iterator[Callable[..., tuple[int, str, str]]]:
    """Run the imgwatch CLI in-process on the indexed data dir; keeps the test process's umask."""
    umask = os.umask(0o022)
    os.umask(umask)

    def run(*args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(main, [*args, "--data-dir", str(indexed.data_dir), "--weights", "random",
                                           "--log-format", "json"], env={"IMGWATCH_EMBEDDING_DEVICE": "cpu"})
        return result.exit_code, result.stdout, result.stderr

    yield run
    os.umask(umask)


def tile(sheet: Image.Image, index: int, columns: int) -> Image.Image:
    x, y = tile_origin(index, columns)
    return sheet.crop((x, y, x + TILE, y + TILE)).convert("RGB")


def columns_of(sheet: Image.Image) -> int:
    return (sheet.width - PAD) // (TILE + PAD)


def expected_tile(path: Path) -> Image.Image:
    """The thumbnail centred on the tile's background, as the sheet draws it."""
    thumbnail = render(str(path), TILE)
    canvas = Image.new("RGB", (TILE, TILE), TILE_BACKGROUND)
    canvas.paste(thumbnail, ((TILE - thumbnail.width) // 2, (TILE - thumbnail.height) // 2))
    return canvas


def difference(one: Image.Image, other: Image.Image) -> float:
    return float(np.abs(np.asarray(one, dtype=float) - np.asarray(other, dtype=float)).mean())


def test_similar_sheet_shows_the_photo_first_then_its_neighbours(
        indexed: Indexed, cli: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    out = tmp_path / "out" / "sheet.png"
    out.parent.mkdir()
    code, stdout, stderr = cli("similar", str(indexed.photos["chelsea"]), "--sheet", str(out))
    assert code == 0, stderr
    neighbours = [line.split(maxsplit=1)[1] for line in stdout.splitlines()]
    assert len(neighbours) == 4 and str(indexed.photos["chelsea"]) not in neighbours
    assert f"contact sheet: {out}" in stderr

    sheet = Image.open(out)
    assert sheet.format == "PNG"
    columns = columns_of(sheet)
    assert columns == 3  # five tiles: three across, two rows
    assert sheet.size == (PAD + columns * (TILE + PAD), tile_origin(2 * columns, columns)[1])
    first = tile(sheet, 0, columns)
    assert difference(first, expected_tile(indexed.photos["chelsea"])) < 3  # the query comes first
    assert difference(first, tile(sheet, 1, columns)) > 10
    assert difference(tile(sheet, 1, columns), expected_tile(Path(neighbours[0]))) < 3  # then the best match
    frame = sheet.convert("RGB").getpixel((PAD - FRAME_WIDTH // 2 - 1, PAD + TILE // 2))
    assert frame == QUERY_FRAME  # the query is framed


def test_search_sheet_with_a_photo_that_is_not_indexed(
        indexed: Indexed, cli: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    query = tmp_path / "elsewhere" / "rocket-small.png"
    query.parent.mkdir()
    Image.open(indexed.photos["rocket"]).resize((320, 213)).save(query)
    out = tmp_path / "sheet.jpg"
    code, stdout, stderr = cli("search", str(query), "--top", "3", "--sheet", str(out))
    assert code == 0, stderr
    assert len(stdout.splitlines()) == 3
    sheet = Image.open(out)
    assert sheet.format == "JPEG"
    columns = columns_of(sheet)
    assert columns == 3  # the query and three results: three across, two rows
    assert sheet.height == tile_origin(2 * columns, columns)[1]
    assert difference(tile(sheet, 0, columns), expected_tile(query)) < 6  # JPEG: a little noise


def test_an_unreadable_result_gets_a_tile_saying_so(indexed: Indexed, tmp_path: Path) -> None:
    matches = [SheetItem(str(tmp_path / "gone.jpg"), "0.9000"), SheetItem(str(indexed.photos["coffee"]), "0.8000")]
    sheet = make_sheet(SheetItem(str(indexed.photos["camera"]), "query"), matches)
    assert sheet.size == (PAD + 3 * (TILE + PAD), sheet.height)
    gone = tile(sheet, 1, 3)
    assert np.asarray(gone).std() < 40  # plain grey with a little text, no photo


def test_a_name_with_line_breaks_and_escapes_is_drawn_escaped(indexed: Indexed, tmp_path: Path) -> None:
    odd = tmp_path / "a\nfake\r\x1b[2J.jpg"  # Pillow cannot lay out a line break in one label
    odd.write_bytes(indexed.photos["coffee"].read_bytes())
    sheet = make_sheet(SheetItem(str(indexed.photos["camera"]), "query"), [SheetItem(str(odd), "0.9000")])
    assert difference(tile(sheet, 1, columns_of(sheet)), expected_tile(odd)) < 3


def test_a_sheet_name_without_an_image_suffix_is_one_error_line(
        indexed: Indexed, cli: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    code, _, stderr = cli("similar", str(indexed.photos["coffee"]), "--sheet", str(tmp_path / "sheet.txt"))
    assert code == 2
    wrong = tmp_path / "sheet.txt"
    assert stderr.strip().splitlines() == [f"imgwatch: error: cannot write a contact sheet to {wrong}: "
                                           "name it .png, .jpg or .webp"]


def test_a_sheet_gets_the_mode_the_users_umask_gives_not_the_data_dirs_private_one(
        indexed: Indexed, tmp_path: Path) -> None:
    out = tmp_path / "to-share.png"
    env = process_env(tmp_path, IMGWATCH_GENERAL_DATA_DIR=str(indexed.data_dir))
    result = subprocess.run([sys.executable, "-m", "imgwatch", "similar", str(indexed.photos["coffee"]), "--sheet",
                             str(out)], env=env, capture_output=True, text=True, timeout=120, umask=0o027)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    out.chmod(0o600)  # made private by hand: written over, it stays so
    again = subprocess.run([sys.executable, "-m", "imgwatch", "similar", str(indexed.photos["camera"]), "--sheet",
                            str(out)], env=env, capture_output=True, text=True, timeout=120, umask=0o022)
    assert again.returncode == 0, again.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert stat.S_IMODE(indexed.data_dir.stat().st_mode) == 0o700  # imgwatch's own files stay private


def test_search_sheet_with_an_indexed_photo_shows_it_once_as_the_query(
        indexed: Indexed, cli: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    chelsea = indexed.photos["chelsea"]
    out = tmp_path / "sheet.png"
    code, stdout, stderr = cli("search", str(chelsea), "--top", "3", "--sheet", str(out))
    assert code == 0, stderr
    assert str(chelsea) not in stdout and f"(the photo itself is left out: {chelsea})" in stderr
    sheet = Image.open(out)
    columns = columns_of(sheet)
    assert difference(tile(sheet, 0, columns), expected_tile(chelsea)) < 3  # framed, first
    for index in range(1, 4):  # then three others, not the query again
        assert difference(tile(sheet, index, columns), expected_tile(chelsea)) > 10


def test_names_that_begin_alike_keep_the_end_that_tells_them_apart() -> None:
    from PIL import ImageDraw

    from imgwatch.sheet import _fit, label_font

    draw, font = ImageDraw.Draw(Image.new("RGB", (1, 1))), label_font()
    names = ["IMG_20240101_123456789_portrait_crop.jpg", "IMG_20240101_123456789_portrait_edit.jpg"]
    fitted = [_fit(draw, name, TILE, font) for name in names]
    assert fitted[0] != fitted[1]
    for name, shown in zip(names, fitted, strict=True):
        assert draw.textlength(shown, font=font) <= TILE
        assert shown.startswith("IMG_2024") and shown.endswith(name[-14:]) and "…" in shown, shown
    assert _fit(draw, "short.jpg", TILE, font) == "short.jpg"
    narrow = _fit(draw, names[0], 60, font)  # not even the end fits: its last characters do
    assert narrow.startswith("…") and names[0].endswith(narrow[1:]) and draw.textlength(narrow, font=font) <= 60
