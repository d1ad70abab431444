from __future__ import annotations

from pathlib import Path

import pytest

from imgwatch.config import load_config
from imgwatch.files import PathFilter, canonical_path, outermost, walk_images

FILTER = PathFilter.create(["jpg", "JPEG", ".png"], [".*", "@eaDir", "#recycle"])


def test_extensions_are_case_insensitive_and_excludes_match_any_component() -> None:
    assert FILTER.accepts("/r/a.JPG", "/r") and FILTER.accepts("/r/b.jpeg", "/r") and FILTER.accepts("/r/c.Png", "/r")
    assert not FILTER.accepts("/r/notes.txt", "/r")
    assert not FILTER.accepts("/r/.hidden.jpg", "/r")
    assert not FILTER.accepts("/r/.thumbs/a.jpg", "/r")
    assert not FILTER.accepts("/r/x/@eaDir/a.jpg", "/r")
    assert not FILTER.accepts("/r/#recycle/a.jpg", "/r")
    # Only components below the root count: a root inside a hidden folder still works.
    assert FILTER.accepts("/home/u/.photos/a.jpg", "/home/u/.photos")


def test_walk_finds_images_below_a_root_and_skips_excluded_folders(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "@eaDir").mkdir()
    for name in ["a/1.jpg", "a/b/2.png", "@eaDir/3.jpg", "a/4.txt", "a/.5.jpg"]:
        (tmp_path / name).write_bytes(b"x")
    found = sorted(path for path, _ in walk_images(str(tmp_path), FILTER))
    assert found == [str(tmp_path / "a" / "1.jpg"), str(tmp_path / "a" / "b" / "2.png")]


def test_paths_through_symlinked_folders_name_what_the_daemon_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    assert canonical_path(str(link / "a.jpg")) == str(real / "a.jpg")
    config = load_config(overrides={"general.roots": [str(link)]}, environ={})
    assert config.root_paths == [real]
    monkeypatch.chdir(tmp_path)
    assert canonical_path("link/a.jpg") == str(real / "a.jpg")


def test_nested_and_repeated_roots_collapse_to_the_outermost() -> None:
    assert outermost(["/p/2024", "/p", "/q", "/p", "/pq"]) == ["/p", "/pq", "/q"]
