"""eval end to end on real photos with the real ResNet50 code: the numbers it gives with calibrated
weights, a model that ignores its input scoring ~0, and the command on an indexed store."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from imgwatch.evaluation.edits import EDITS
from imgwatch.evaluation.report import EvalReport
from imgwatch.evaluation.run import EvalOptions, evaluate, make_copies
from imgwatch.valkey_server import EmbeddedValkey
from tests.helpers import make_config, process_env

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera", "retina"]
# What the calibrated weights survive on these photos (the other edits rank some original lower).
MILD = ["flip_horizontal", "flip_vertical", "resize_square", "jpeg_30"]


def shot_at(second: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "EOS R6"
    exif.get_ifd(0x8769)[0x9003] = f"2024:07:01 12:00:{second:02d}"
    return exif


BURST = {"astronaut": shot_at(1), "chelsea": shot_at(2), "rocket": shot_at(9)}  # the first two: one burst


@pytest.fixture(scope="module")
def blind_weights(calibrated_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ResNet50 whose first convolution sees nothing: every photo gives the same vector."""
    import torch

    state = torch.load(calibrated_weights, weights_only=True)
    state["conv1.weight"] = torch.zeros_like(state["conv1.weight"])
    path = tmp_path_factory.mktemp("blind") / "blind.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def side_by_side(tmp_path_factory: pytest.TempPathFactory, photo_arrays: dict[str, object], calibrated_weights: Path,
                 blind_weights: Path) -> tuple[EvalReport, Path, Path]:
    """Both models on the same copies of six photos of a folder; where the temporary folders went."""
    base = tmp_path_factory.mktemp("eval")
    (base / "photos").mkdir()
    for name in PHOTOS:
        Image.fromarray(photo_arrays[name]).save(base / "photos" / f"{name}.png",  # type: ignore[call-overload]
                                                 exif=BURST.get(name, Image.Exif()))
    temporary = base / "tmp"
    temporary.mkdir()
    config = make_config(base / "data", **{"embedding.engine": "torch"})
    options = EvalOptions(sample=6, folder=str(base / "photos"), models=[str(calibrated_weights), str(blind_weights)],
                          distractors=0, sheet=str(base / "misses.png"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(temporary))
        report = evaluate(config, options)
    return report, temporary, base / "misses.png"


def test_copies_of_the_mild_edits_rank_their_original_first(side_by_side: tuple[EvalReport, Path, Path]) -> None:
    report, temporary, _sheet = side_by_side
    calibrated = report.models[0]
    assert report.sample == 6 and report.library == 6 and len(calibrated.edits) == 11
    by_edit = {summary.edit: summary for summary in calibrated.edits}
    for edit in MILD:
        assert by_edit[edit].recall_at_1 == 1.0 and by_edit[edit].score_min > 0.95, by_edit[edit]
    assert all(summary.recall_at_10 == 1.0 for summary in calibrated.edits)  # six photos: all within 10
    assert calibrated.copy_pairs == 66 and calibrated.different_pairs == (72 * 71 - 6 * 12 * 11) // 2
    assert not calibrated.unreadable
    assert [sorted(Path(p).name for p in (pair.one, pair.other)) for pair in calibrated.bursts] == [
        ["astronaut.png", "chelsea.png"]]
    assert list(temporary.iterdir()) == []  # the copies are gone


def test_a_model_that_ignores_its_input_scores_no_recall(side_by_side: tuple[EvalReport, Path, Path]) -> None:
    report, _temporary, sheet = side_by_side
    blind = report.models[1]
    assert all(summary.recall_at_1 == 0.0 for summary in blind.edits), blind.edits
    assert blind.duplicates is None and blind.links_threshold is None
    assert len(blind.not_survived) == 11 and len(blind.misses) == 66
    text = report.as_text()
    assert "no threshold reaches recall" in text and "not survived" in text and "SSCD" in text
    header = next(line for line in text.splitlines() if line.startswith("edit "))
    assert "calibrated.pth" in header and "blind.pth" in header  # a column per model
    with Image.open(sheet) as picture:
        assert picture.height > 8 * 240  # 8 misses per model, a row each


@pytest.fixture
def env(tmp_path: Path, queue_server: EmbeddedValkey, calibrated_weights: Path) -> dict[str, str]:
    return process_env(tmp_path, IMGWATCH_QUEUE_REDIS_URL=queue_server.url, IMGWATCH_QUEUE_NAME=f"eval-{tmp_path.name}",
                       IMGWATCH_EMBEDDING_WEIGHTS=str(calibrated_weights), IMGWATCH_EMBEDDING_ENGINE="torch")


def imgwatch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imgwatch", *args], env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def test_the_command_on_an_indexed_store(env: dict[str, str], tmp_path: Path, write_photo: Callable[..., Path]) -> None:
    refused = imgwatch(env, "eval")
    assert refused.returncode == 2 and "nothing is indexed" in refused.stderr and "--folder DIR" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    root = tmp_path / "photos"
    for name in PHOTOS[:4]:
        write_photo(root / f"{name}.jpg", name)
    assert imgwatch(env, "scan", str(root)).returncode == 0
    assert imgwatch(env, "worker", "--burst", str(root)).returncode == 0
    before = json.loads(imgwatch(env, "status", "--json").stdout)["store"]
    assert before["images"] == 4

    # the store's own weights, searched by the store; and a model the store holds no vectors of
    text = imgwatch(env, "eval", "--sample", "3", "--seed", "1", "--model", env["IMGWATCH_EMBEDDING_WEIGHTS"],
                    "--model", "random", "--distractors", "1")
    assert text.returncode == 0, text.stderr
    assert "3 photos of 4 from the store (seed 1)" in text.stdout
    assert "on torch; each copy searched among the store's 4 indexed photos (its index)" in text.stdout
    assert ("model random: resnet50/random-seed0 on torch; each copy searched among the 3 sampled photos and 1 other "
            "photos of the library, embedded for eval (the store holds no vectors of this model)") in text.stdout
    assert "flip_horizontal" in text.stdout and "duplicates" in text.stdout

    as_json = imgwatch(env, "eval", "--sample", "3", "--seed", "1", "--json")
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    (model,) = report["models"]
    assert model["model"] == "the store's model" and model["identity"].startswith("resnet50/file-")
    assert [edit["edit"] for edit in model["edits"]][:3] == ["crop", "flip_horizontal", "flip_vertical"]
    assert next(e for e in model["edits"] if e["edit"] == "flip_horizontal")["recall_at_1"] == 1.0
    assert json.loads(imgwatch(env, "status", "--json").stdout)["store"] == before  # only read


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_copies_are_made_with_a_progress_bar_and_unreadable_photos_left_out(
    tmp_path: Path, write_photo: Callable[..., Path]
) -> None:
    photos = [str(write_photo(tmp_path / f"{name}.png", name)) for name in ("coffee", "rocket")]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "copies").mkdir()
    terminal = Terminal()
    originals, copies, unreadable = make_copies([photos[0], str(tmp_path / "broken.png"), photos[1]], EDITS[:2],
                                                tmp_path / "copies", terminal)
    assert originals == photos and unreadable == [str(tmp_path / "broken.png")]
    assert [(c.original, c.edit.name) for c in copies] == [(0, "crop"), (0, "flip_horizontal"), (1, "crop"),
                                                           (1, "flip_horizontal")]
    assert all(Path(c.path).is_file() for c in copies)
    drawn = terminal.getvalue()
    assert drawn.startswith("making 2 edited copies of 3 photos\n") and "] 0/3 paths" in drawn  # from the start
