"""The manifest of a clean-up: written whole before anything moves, read back exactly (any file
name), its state the only thing that changes, and one line for a file that is not a manifest."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imgwatch.cleanup import manifest as manifests
from imgwatch.cleanup.manifest import Manifest, Move
from imgwatch.errors import CleanupRefused

ODD = os.fsdecode(b"/photos/caf\xe9 \xff.jpg")  # a name that is not UTF-8


def made(folder: Path, state: str, created: float) -> Manifest:
    manifest = Manifest(manifests.new_manifest_path(folder, created), "trash", created, state, (
        Move(ODD, "/home/me/.local/share/Trash/files/caf.jpg", 12, "ab" * 32, "/photos/keep.jpg",
             trash_info="/home/me/.local/share/Trash/info/caf.jpg.trashinfo", trash_path=ODD),
        Move("/photos/b.jpg", "/dups/photos/b.jpg", 7, "cd" * 32, "/photos/keep.jpg"),
    ))
    manifests.write(manifest)
    return manifest


def test_a_manifest_reads_back_exactly_and_leaves_no_partial_file(tmp_path: Path) -> None:
    written = made(tmp_path / "moves", "moving", 1_765_000_000.25)
    assert manifests.read(written.path) == written
    assert written.bytes == 19 and written.id == written.path.name == "moves-20251206T054640-250000.json"
    assert [p.name for p in (tmp_path / "moves").iterdir()] == [written.path.name]
    manifests.write(written.with_state("moved"))
    assert manifests.read(written.path).state == "moved"


def test_unfinished_lists_the_clean_ups_and_undos_a_kill_stopped_oldest_first(tmp_path: Path) -> None:
    folder = tmp_path / "moves"
    done, moving, undoing = (made(folder, state, created) for state, created in
                             (("moved", 1.0e9), ("moving", 2.0e9), ("undoing", 1.5e9)))
    assert manifests.unfinished(folder) == [undoing, moving]
    assert manifests.unfinished(tmp_path / "none yet") == []
    assert done not in manifests.unfinished(folder)


def test_a_file_that_is_not_a_manifest_gets_one_line(tmp_path: Path) -> None:
    other = tmp_path / "notes.json"
    other.write_text('{"hello": 1}')
    with pytest.raises(CleanupRefused, match=r"notes\.json is not an imgwatch clean-up manifest \(format None"):
        manifests.read(other)
    with pytest.raises(CleanupRefused, match="cannot read the manifest .*gone.json: No such file"):
        manifests.read(tmp_path / "gone.json")
