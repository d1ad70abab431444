"""Real watchdog observers on temp folders feeding a real settler."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imgwatch.daemon.settler import Settler
from imgwatch.daemon.watcher import EventRouter, WatchError, make_observer, start_observer
from imgwatch.files import PathFilter

FILTER = PathFilter.create(["jpg", "jpeg", "png"], [".*", "@eaDir", "#recycle"])


class Watch:
    def __init__(self, root: Path, observer_kind: str) -> None:
        self.root = root
        self.settler = Settler(0.3, close_events=observer_kind == "inotify", unclosed_grace=30)
        self.router = EventRouter(self.settler, FILTER, [str(root)])
        self.observer = make_observer(observer_kind, polling_interval=0.2)
        start_observer(self.observer, self.router, [str(root)])
        self.released: list[str] = []
        self.removed_dirs: list[str] = []
        self.moves: list[tuple[str, str]] = []

    def collect(self, until: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.released += self.settler.due()
            self.removed_dirs += self.router.take_removed_dirs()
            self.moves += self.router.take_moves()
            if until():
                return
            time.sleep(0.05)

    def quiet_for(self, seconds: float) -> None:
        self.collect(lambda: False, timeout=seconds)


@pytest.fixture(params=["inotify", "polling"])
def watch(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Watch]:
    root = tmp_path / "photos"
    root.mkdir()
    w = Watch(root, request.param)
    time.sleep(0.3)  # polling takes its first snapshot
    yield w
    w.observer.stop()
    w.observer.join()


def test_a_copied_image_is_released_once(watch: Watch, tmp_path: Path) -> None:
    source = tmp_path / "src.jpg"
    source.write_bytes(os.urandom(50_000))
    shutil.copy(source, watch.root / "a.JPG")
    target = str(watch.root / "a.JPG")
    watch.collect(lambda: target in watch.released)
    watch.quiet_for(1.0)
    assert watch.released == [target]


def test_a_slowly_written_file_is_released_only_after_its_writer_closes(watch: Watch) -> None:
    target = watch.root / "slow.jpg"
    with open(target, "wb") as handle:
        for _ in range(6):
            handle.write(os.urandom(10_000))
            handle.flush()
            watch.quiet_for(0.25)
        assert watch.released == []  # still being written
    watch.collect(lambda: str(target) in watch.released)
    assert watch.released == [str(target)]


def test_non_images_hidden_and_excluded_paths_are_ignored(watch: Watch) -> None:
    (watch.root / "notes.txt").write_text("hello")
    (watch.root / ".hidden.jpg").write_bytes(b"x")
    (watch.root / "@eaDir").mkdir()
    (watch.root / "@eaDir" / "thumb.jpg").write_bytes(b"x")
    (watch.root / "ok.png").write_bytes(b"x")
    watch.collect(lambda: str(watch.root / "ok.png") in watch.released)
    watch.quiet_for(1.0)
    assert watch.released == [str(watch.root / "ok.png")]


def test_a_rename_is_reported_as_a_move_and_a_delete_is_released(watch: Watch) -> None:
    first = watch.root / "first.jpg"
    first.write_bytes(b"x")
    watch.collect(lambda: str(first) in watch.released)
    watch.released.clear()
    renamed = watch.root / "renamed.jpg"
    first.rename(renamed)
    watch.collect(lambda: bool(watch.moves))
    watch.quiet_for(0.5)
    assert watch.moves == [(str(first), str(renamed))]  # the store renames it: no delete and re-embed
    assert watch.released == []
    renamed.unlink()
    watch.collect(lambda: str(renamed) in watch.released)
    assert str(renamed) in watch.released


def test_a_folder_moved_in_releases_its_images_and_one_moved_out_is_reported(watch: Watch, tmp_path: Path) -> None:
    outside = tmp_path / "album"
    (outside / "sub").mkdir(parents=True)
    (outside / "one.jpg").write_bytes(b"1")
    (outside / "sub" / "two.jpg").write_bytes(b"2")
    inside = watch.root / "album"
    outside.rename(inside)
    expected = {str(inside / "one.jpg"), str(inside / "sub" / "two.jpg")}
    watch.collect(lambda: expected <= set(watch.released))
    assert expected <= set(watch.released)
    inside.rename(tmp_path / "album-out")
    watch.collect(lambda: str(inside) in watch.removed_dirs or expected <= set(watch.released[2:]))
    # inotify reports the folder; polling reports each file that disappeared
    assert str(inside) in watch.removed_dirs or expected <= set(watch.released[2:])


def test_a_folder_moved_within_the_root_is_one_move_not_a_delete_and_a_walk(watch: Watch, tmp_path: Path) -> None:
    from imgwatch.daemon.moves import moves_not_covered

    outside = tmp_path / "album"  # written outside, moved in whole: no file is left half-settled
    (outside / "sub").mkdir(parents=True)
    (outside / "one.jpg").write_bytes(b"1")
    (outside / "sub" / "two.jpg").write_bytes(b"2")
    (watch.root / "2024").mkdir()
    album, moved = watch.root / "album", watch.root / "2024" / "album"
    outside.rename(album)
    watch.collect(lambda: len(set(watch.released)) == 2)
    watch.quiet_for(0.5)
    watch.released.clear()
    album.rename(moved)
    watch.collect(lambda: (str(album), str(moved)) in watch.moves)
    watch.quiet_for(1.0)
    # inotify: the folder alone (its synthetic per-file moves are covered); polling: each file,
    # then the folder, and the daemon sends only the folder's move.
    assert moves_not_covered(watch.moves) == [(str(album), str(moved))]
    assert watch.removed_dirs == [] and watch.released == []


def test_watching_a_root_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    # (A missing root is no error: the daemon watches it once it appears.)
    a_file = tmp_path / "photos.jpg"
    a_file.write_bytes(b"x")
    observer = make_observer("inotify", 1.0)
    router = EventRouter(Settler(1, close_events=True), FILTER, [str(a_file)])
    with pytest.raises(WatchError, match=r"photos\.jpg: it is not a folder"):
        start_observer(observer, router, [str(a_file)])


def test_a_symbolic_link_made_in_a_root_is_released_after_settling_not_the_grace(
    watch: Watch, tmp_path: Path,
) -> None:
    (watch.root / ".originals").mkdir()  # hidden: the target itself is not released
    target = watch.root / ".originals" / "real.jpg"
    target.write_bytes(os.urandom(1000))
    link = watch.root / "linked.jpg"
    link.symlink_to(target)
    watch.collect(lambda: str(link) in watch.released, timeout=10)  # the grace for unclosed files is 30 s
    assert watch.released == [str(link)]


def test_a_symbolic_link_to_a_file_outside_the_roots_is_never_released(watch: Watch, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.jpg"
    outside.write_bytes(os.urandom(1000))
    (watch.root / "to-outside.jpg").symlink_to(outside)
    (watch.root / "after.jpg").write_bytes(os.urandom(1000))  # released after the link would have been
    watch.collect(lambda: str(watch.root / "after.jpg") in watch.released, timeout=10)
    assert watch.released == [str(watch.root / "after.jpg")]


def test_a_file_moved_in_from_outside_is_released_after_settling_not_the_grace(watch: Watch, tmp_path: Path) -> None:
    outside = tmp_path / "download.jpg"
    outside.write_bytes(os.urandom(1000))
    outside.rename(watch.root / "arrived.jpg")
    target = str(watch.root / "arrived.jpg")
    watch.collect(lambda: target in watch.released, timeout=10)  # the grace period is 30 s
    assert watch.released == [target]
