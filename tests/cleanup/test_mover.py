"""Clearing duplicates from the command line: dry run, move, undo, the trash, the refusals, and a
kill part-way; the store follows the files. Real files, a real store, the real CLI; vectors chosen
by hand so the groups are known without the model."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from imgwatch.cleanup import manifest as manifests
from imgwatch.cleanup.manifest import Manifest, Move
from imgwatch.cleanup.mover import move_back, move_forward
from imgwatch.cleanup.trash import choose_slot
from imgwatch.config import Config
from imgwatch.store import ImageRecord, open_store
from imgwatch.use_cases import duplicates_to_show
from tests.helpers import DIM, MODEL, angled, axis, imgwatch, make_config, make_record, process_env

THRESHOLD = 0.95


def photo(path: Path, vector: np.ndarray, content: bytes, *, pixels: int = 1000, mtime: int = 1_600_000_000) -> \
        ImageRecord:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.utime(path, ns=(mtime * 10**9 + 123_456_789, mtime * 10**9 + 123_456_789))
    return make_record(str(path), vector, sha256=hashlib.sha256(content).hexdigest(), width=pixels, height=pixels,
                       size=len(content), mtime_ns=os.stat(path).st_mtime_ns)


def near(base: int, cosine: float, other: int) -> np.ndarray:
    """A unit vector at ``cosine`` to axis ``base``, in the plane of it and axis ``other``."""
    return (cosine * axis(base) + np.sqrt(1 - cosine * cosine) * axis(other)).astype(np.float32)


def library(root: Path) -> dict[str, ImageRecord]:
    """Two groups: an original with an exact copy and a resized copy; a second original with a copy
    named '… copy'. And a photo alone."""
    original = os.urandom(3000)
    records = {
        "original": photo(root / "2020" / "beach.jpg", axis(0), original, pixels=4000),
        "exact": photo(root / "dropped" / "beach copy.jpg", axis(0), original, pixels=4000),
        "resized": photo(root / "small" / "beach.jpg", angled(0.99, 1), os.urandom(900), pixels=1000),
        "second": photo(root / "2021" / "hill.jpg", axis(3), os.urandom(2000), pixels=3000),
        "second_copy": photo(root / "2021" / "hill (1).jpg", near(3, 0.98, 4), os.urandom(1500), pixels=3000),
        "alone": photo(root / "2022" / "tree.jpg", axis(7), os.urandom(1000)),
    }
    return records


@pytest.fixture
def photos(tmp_path: Path) -> tuple[dict[str, str], Path, dict[str, ImageRecord]]:
    root = tmp_path / "photos"
    env = process_env(tmp_path, IMGWATCH_GENERAL_ROOTS=str(root), XDG_DATA_HOME=str(tmp_path / "xdg-data"))
    records = library(root)
    with open_store(_config(env)) as store:
        store.ensure_model(MODEL, DIM)
        store.upsert(list(records.values()))
        store.link(list(records.values()), threshold=0.8, top_k=10)
    return env, root, records


def _config(env: dict[str, str]) -> Config:
    return make_config(Path(env["IMGWATCH_GENERAL_DATA_DIR"]), **{"general.roots": [env["IMGWATCH_GENERAL_ROOTS"]]})


def contents(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file below ``folder``: its bytes and mtime (ns), by path relative to it."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def stored_paths(env: dict[str, str]) -> set[str]:
    with open_store(_config(env), create=False) as store:
        return {state.path for state in store.file_states()}


def test_a_dry_run_says_what_would_move_and_the_space_and_moves_nothing(photos, tmp_path: Path) -> None:
    env, root, records = photos
    before = contents(root)
    said = imgwatch(env, "duplicates", "--move-to", str(tmp_path / "dups"), "--dry-run").stdout
    assert f"{records['exact'].path} -> {tmp_path}/dups/photos/dropped/beach copy.jpg (3.0 kB)" in said
    assert "would move 3 copies (5.4 kB) out of the library" in said and "nothing moved (dry run)" in said
    assert contents(root) == before and not (tmp_path / "dups").exists()
    assert not (tmp_path / "data" / "moves").exists() or not list((tmp_path / "data" / "moves").glob("*.json"))


def test_move_then_undo_puts_every_byte_and_mtime_back_and_the_store_follows(photos, tmp_path: Path) -> None:
    env, root, records = photos
    before = contents(root)
    said = imgwatch(env, "duplicates", "--move-to", str(tmp_path / "dups")).stdout
    assert said.startswith(f"moved 3 copies (5.4 kB) into {tmp_path / 'dups'}\nmanifest: ")
    manifest = said.split("manifest: ")[1].split("\n")[0]
    moved = contents(tmp_path / "dups")
    assert moved == {f"photos/{name}": before[name] for name in ("dropped/beach copy.jpg", "small/beach.jpg",
                                                                  "2021/hill (1).jpg")}
    assert set(contents(root)) == {"2020/beach.jpg", "2021/hill.jpg", "2022/tree.jpg"}
    assert stored_paths(env) == {records[k].path for k in ("original", "second", "alone")}  # moved out: gone
    assert imgwatch(env, "duplicates").stdout.startswith("no duplicates")

    said = imgwatch(env, "duplicates", "--undo", manifest).stdout
    assert said.startswith("put back 3 copies (5.4 kB) where they were")
    assert contents(root) == before and contents(tmp_path / "dups") == {}
    assert "was undone already" in imgwatch(env, "duplicates", "--undo", manifest).stdout


def test_a_folder_inside_a_watched_one_is_refused_unless_into_watched_then_moves_are_renames(
        photos, tmp_path: Path) -> None:
    env, root, records = photos
    before = contents(root)
    refused = imgwatch(env, "duplicates", "--move-to", str(root / "dups"), check=False)
    assert refused.returncode == 2 and f"{root / 'dups'} is inside the watched folder {root}" in refused.stderr
    assert contents(root) == before

    imgwatch(env, "duplicates", "--move-to", str(root / "dups"), "--into-watched")
    renamed = {str(root / "dups" / "photos" / name) for name in ("dropped/beach copy.jpg", "small/beach.jpg",
                                                                 "2021/hill (1).jpg")}
    assert stored_paths(env) == {records[k].path for k in ("original", "second", "alone")} | renamed
    with open_store(_config(env), create=False) as store:  # the vector and the links came along: still a group
        groups, _ = duplicates_to_show(store, exact=True, threshold=THRESHOLD, links_threshold=0.8)
        assert [[image.path for image in group.images] for group in groups] == [
            [records["original"].path, str(root / "dups" / "photos" / "dropped" / "beach copy.jpg")]]


def test_a_changed_copy_and_a_missing_keeper_are_left_in_place_with_why_and_the_rest_moves(
        photos, tmp_path: Path) -> None:
    env, root, records = photos
    Path(records["resized"].path).write_bytes(b"edited since it was indexed")
    os.unlink(records["second"].path)
    result = imgwatch(env, "duplicates", "--move-to", str(tmp_path / "dups"), check=False)
    assert result.returncode == 1
    assert result.stdout.startswith("moved 1 copy (3.0 kB)")
    assert f"{records['resized'].path}: changed since it was indexed: left in place" in result.stderr
    assert (f"{records['second_copy'].path}: its keeper {records['second'].path} is missing" in result.stderr)
    assert set(contents(tmp_path / "dups")) == {"photos/dropped/beach copy.jpg"}
    assert Path(records["resized"].path).read_bytes() == b"edited since it was indexed"
    assert Path(records["second_copy"].path).exists()


def test_a_move_to_another_file_system_is_a_checked_copy_and_undo_copies_back(photos, tmpfs: Path) -> None:
    env, root, records = photos
    before = contents(root)
    said = imgwatch(env, "duplicates", "--move-to", str(tmpfs / "dups")).stdout
    assert said.startswith(f"moved 3 copies (5.4 kB) into {tmpfs / 'dups'}")
    assert contents(tmpfs / "dups") == {f"photos/{name}": before[name] for name in (
        "dropped/beach copy.jpg", "small/beach.jpg", "2021/hill (1).jpg")}  # bytes and mtime to the nanosecond
    assert not Path(records["exact"].path).exists()
    imgwatch(env, "duplicates", "--undo", said.split("manifest: ")[1].split("\n")[0])
    assert contents(root) == before and contents(tmpfs / "dups") == {}


def test_the_trash_gets_trashinfo_a_desktop_can_restore_from_and_undo_clears_it(photos, tmp_path: Path) -> None:
    env, root, records = photos
    before = contents(root)
    said = imgwatch(env, "duplicates", "--exact", "--trash").stdout
    assert said.startswith("moved 1 copy (3.0 kB) into the trash")
    trash = tmp_path / "xdg-data" / "Trash"
    assert (trash / "files" / "beach copy.jpg").read_bytes() == before["dropped/beach copy.jpg"][0]
    info = (trash / "info" / "beach copy.jpg.trashinfo").read_text()
    assert info.startswith(f"[Trash Info]\nPath={root}/dropped/beach%20copy.jpg\nDeletionDate=20")

    imgwatch(env, "duplicates", "--undo", said.split("manifest: ")[1].split("\n")[0])
    assert contents(root) == before
    assert list((trash / "files").iterdir()) == [] and list((trash / "info").iterdir()) == []


def test_a_kill_part_way_leaves_every_photo_whole_and_a_rerun_finishes_then_undo_restores(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    env = process_env(tmp_path, IMGWATCH_GENERAL_ROOTS=str(root))
    records = []
    for number in range(600):  # enough moves that the kill lands among them
        content = os.urandom(64) + number.to_bytes(4, "big")
        records += [photo(root / "a" / f"{number}.jpg", axis(0), content),
                    photo(root / "b" / f"{number} copy.jpg", axis(0), content)]
    with open_store(_config(env)) as store:
        store.ensure_model(MODEL, DIM)
        store.upsert(records)
    before = contents(root)
    dups = tmp_path / "dups"
    cleanup = subprocess.Popen([sys.executable, "-m", "imgwatch", "duplicates", "--exact", "--move-to", str(dups)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    moved_dir = dups / "photos" / "b"
    deadline = time.monotonic() + 60
    while cleanup.poll() is None and time.monotonic() < deadline:
        if moved_dir.is_dir() and len(os.listdir(moved_dir)) >= 20:
            break
        time.sleep(0.002)
    cleanup.send_signal(signal.SIGKILL)
    cleanup.wait()
    [manifest] = (tmp_path / "data" / "moves").glob("*.json")
    assert '"state": "moving"' in manifest.read_text(), "the kill should land part-way"
    _each_content_once(root, dups, before)

    said = imgwatch(env, "duplicates", "--exact", "--move-to", str(dups)).stdout
    assert said.startswith("finished an earlier clean-up that was stopped part-way: moved 600 copies")
    _each_content_once(root, dups, before)
    assert len(contents(dups)) == 600 and set(contents(root)) == {f"a/{n}.jpg" for n in range(600)}

    imgwatch(env, "duplicates", "--undo", str(manifest))
    assert contents(root) == before


def _each_content_once(root: Path, dups: Path, before: dict[str, tuple[bytes, int]]) -> None:
    """Every photo of ``before`` is whole exactly once: in place, or moved below ``dups``; nothing else is there."""
    now = {**contents(root), **{str(Path(*Path(p).parts[1:])): v for p, v in contents(dups).items()}}
    in_both = set(contents(root)) & {str(Path(*Path(p).parts[1:])) for p in contents(dups)}
    assert not in_both and now == before


# -- carrying out a manifest: what it keeps when a move is refused ---------------------------------


def _one_move_manifest(tmp_path: Path, source: Path, target: Path, sha256: str, **trash: str) -> Manifest:
    return Manifest(tmp_path / "moves" / "moves-1.json", "trash" if trash else str(target.parent), 1.0e9, "moving",
                    (Move(str(source), str(target), source.stat().st_size, sha256, "/keeper.jpg", **trash),))


def test_a_trash_move_refused_after_its_slot_was_claimed_leaves_no_entry_in_the_trash(
        store, tmp_path: Path) -> None:
    source = tmp_path / "photos" / "a.jpg"
    source.parent.mkdir()
    source.write_bytes(b"edited after the plan")
    slot = choose_slot(str(source), set())  # XDG_DATA_HOME is the test's (autouse env below)
    manifest = _one_move_manifest(tmp_path, source, Path(slot.files), hashlib.sha256(b"as indexed").hexdigest(),
                                  trash_info=slot.info, trash_path=slot.original)
    done = move_forward(manifest, store, [str(tmp_path / "photos")])
    assert done.moves == () and "changed since it was indexed" in done.refused[0].reason
    assert not os.path.exists(slot.info) and source.read_bytes() == b"edited after the plan"
    assert manifests.read(manifest.path).moves == ()


def test_a_refused_move_that_left_a_whole_copy_at_its_target_stays_in_the_manifest_for_undo(
        store, tmp_path: Path) -> None:
    source, target = tmp_path / "photos" / "a.jpg", tmp_path / "dups" / "a.jpg"
    for path in (source, target):
        path.parent.mkdir()
        path.write_bytes(b"as indexed")
    manifest = _one_move_manifest(tmp_path, source, target, hashlib.sha256(b"as indexed").hexdigest())
    source.write_bytes(b"edited after a kill left both copies")
    done = move_forward(manifest, store, [str(tmp_path / "photos")])
    assert done.moves == () and "both are left in place" in done.refused[0].reason
    assert manifests.read(manifest.path).moves == manifest.moves  # the copy in dups/ is not forgotten
    assert source.read_bytes() == b"edited after a kill left both copies" and target.read_bytes() == b"as indexed"


@pytest.fixture(autouse=True)
def own_trash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The home trash of these tests is in their temp folder (never the developer's)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))


def test_an_undo_leaves_another_files_trash_entry_that_took_a_name_this_clean_up_never_claimed(
        store, tmp_path: Path) -> None:
    source = tmp_path / "photos" / "a.jpg"
    source.parent.mkdir()
    source.write_bytes(b"as indexed")
    slot = choose_slot(str(source), set())
    manifest = _one_move_manifest(tmp_path, source, Path(slot.files), hashlib.sha256(b"as indexed").hexdigest(),
                                  trash_info=slot.info, trash_path=slot.original)
    manifests.write(manifest)  # killed here: the manifest written, the slot never claimed
    Path(slot.info).parent.mkdir(parents=True)
    Path(slot.info).write_text("[Trash Info]\nPath=/somewhere/else/a.jpg\nDeletionDate=2026-12-07T10:00:00\n")
    done = move_back(manifest, store, [str(tmp_path / "photos")])
    assert done.refused == () and source.read_bytes() == b"as indexed"
    assert "Path=/somewhere/else/a.jpg" in Path(slot.info).read_text()  # the desktop's other entry is untouched
