from __future__ import annotations

from pathlib import Path

import pytest

from imgwatch.config import load_config
from imgwatch.files import (
    PathFilter,
    canonical_path,
    file_signature,
    outermost,
    resolves_inside,
    signature_of,
    walk_images,
)

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
    found = sorted(path for path, _ in walk_images(str(tmp_path), FILTER, [str(tmp_path)]))
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


def test_a_link_is_followed_only_when_its_target_is_inside_a_root(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "photos", tmp_path / "elsewhere"
    (root / "album").mkdir(parents=True)
    elsewhere.mkdir()
    (root / "album" / "inside.jpg").write_bytes(b"x")
    (elsewhere / "secret.jpg").write_bytes(b"x")
    (root / "to-inside.jpg").symlink_to(root / "album" / "inside.jpg")
    (root / "to-secret.jpg").symlink_to(elsewhere / "secret.jpg")
    (root / "linked-folder").symlink_to(elsewhere)
    roots = [str(root)]

    assert resolves_inside(str(root / "to-inside.jpg"), roots)
    assert not resolves_inside(str(root / "to-secret.jpg"), roots)
    assert not resolves_inside(str(root / "linked-folder" / "secret.jpg"), roots)
    assert resolves_inside(str(root / "not-yet-there.jpg"), roots)  # a new name is where it is
    found = sorted(path for path, _ in walk_images(str(root), FILTER, roots))
    assert found == [str(root / "album" / "inside.jpg"), str(root / "to-inside.jpg")]
    # Another root makes the same link acceptable.
    assert resolves_inside(str(root / "to-secret.jpg"), [*roots, str(elsewhere)])


def test_a_file_rewritten_with_the_same_size_and_mtime_has_another_signature(tmp_path: Path) -> None:
    import os

    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"first")
    before = os.stat(photo)
    photo.write_bytes(b"other")  # same size
    os.utime(photo, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime set back, as `touch -r` does
    after = os.stat(photo)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert file_signature(str(photo)) != signature_of(before)

    replacement = tmp_path / "b.jpg"
    replacement.write_bytes(b"third")
    os.utime(replacement, ns=(after.st_atime_ns, after.st_mtime_ns))
    settled = os.stat(photo)
    os.replace(replacement, photo)  # another file under the same name: another inode
    assert file_signature(str(photo))[3] != signature_of(settled)[3]  # type: ignore[index]
