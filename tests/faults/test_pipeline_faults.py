"""What must keep holding under `imgwatch run`, each ending with the store compared to the folder:
a burst indexed exactly once, changes made while it was down, a watched root that vanishes and
comes back. Real processes, real watchdog, real files."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import PHOTO_NAMES, RunningImgwatch, indexed_count, store_mismatch, wait_for

pytestmark = pytest.mark.e2e

BURST = 120


def indexed_per_path(run: RunningImgwatch) -> int:
    """How many paths the workers' job_done lines say they embedded."""
    return sum(json.loads(line).get("indexed", 0) for line in run.log().splitlines() if '"job_done"' in line)


def test_a_burst_is_indexed_exactly_once(
    tmp_path: Path, write_photo: Callable[..., Path], start_run: Callable[[Path], RunningImgwatch],
) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    staging = tmp_path / "staging"
    sources = [write_photo(staging / f"{name}.jpg", name) for name in PHOTO_NAMES]
    run = start_run(root)
    wait_for(lambda: '"ready"' in run.log(), f"imgwatch run to be ready; log:\n{run.log()}")
    for index in range(BURST):  # a folder copied in at once
        shutil.copy(sources[index % len(sources)], root / f"burst-{index:03d}.jpg")

    wait_for(lambda: store_mismatch(tmp_path / "data", root) is None,
             f"the burst indexed: {store_mismatch(tmp_path / 'data', root)}; log:\n{run.log()}", timeout=240)
    assert indexed_per_path(run) == BURST, run.log()
    assert run.stop() == 0 and "Traceback" not in run.log()


def test_adds_overwrites_deletes_and_renames_made_while_down_are_reconciled_exactly(
    tmp_path: Path, write_photo: Callable[..., Path], start_run: Callable[[Path], RunningImgwatch],
) -> None:
    root = tmp_path / "photos"
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        write_photo(root / f"{name}.jpg", name)
    run = start_run(root)
    data = tmp_path / "data"
    wait_for(lambda: store_mismatch(data, root) is None, f"first indexing; log:\n{run.log()}")
    assert run.stop() == 0

    write_photo(root / "new" / "camera.png", "camera")  # added
    write_photo(root / "coffee.jpg", "retina")  # overwritten with another photo
    os.utime(root / "coffee.jpg", ns=(1, 1))  # even with an old mtime: its size differs
    (root / "chelsea.jpg").unlink()  # deleted
    (root / "rocket.jpg").rename(root / "new" / "rocket-renamed.jpg")  # moved

    run = start_run(root)
    wait_for(lambda: store_mismatch(data, root) is None,
             f"reconciliation: {store_mismatch(data, root)}; log:\n{run.log()}")
    assert run.stop() == 0 and "Traceback" not in run.log()


def test_a_root_missing_at_start_is_watched_and_indexed_once_it_appears(
    tmp_path: Path, write_photo: Callable[..., Path], start_run: Callable[[Path], RunningImgwatch],
) -> None:
    root = tmp_path / "share"  # not mounted yet when the service starts
    data = tmp_path / "data"
    run = start_run(root)
    wait_for(lambda: run.process.poll() is not None or ('"root_missing"' in run.log() and '"watching"' in run.log()),
             f"the run to start and report the missing root; log:\n{run.log()}")
    assert run.process.poll() is None, run.log()
    staged = tmp_path / "staged"
    for name in ("astronaut", "coffee"):
        write_photo(staged / f"{name}.jpg", name)
    staged.rename(root)  # the share is mounted, photos and all
    wait_for(lambda: store_mismatch(data, root) is None,
             f"the root watched and indexed: {store_mismatch(data, root)}; log:\n{run.log()}")
    write_photo(root / "rocket.jpg", "rocket")  # and watched: a new photo arrives by event
    wait_for(lambda: store_mismatch(data, root) is None, f"the new photo; log:\n{run.log()}")
    assert '"root_back"' in run.log()
    assert run.stop() == 0 and "Traceback" not in run.log()


def test_a_root_that_vanishes_keeps_its_images_and_is_watched_again_when_back(
    env: dict[str, str], tmp_path: Path, write_photo: Callable[..., Path], start_run: Callable[[Path], RunningImgwatch],
) -> None:
    root = tmp_path / "share"
    for name in ("astronaut", "coffee"):
        write_photo(root / f"{name}.jpg", name)
    data = tmp_path / "data"
    run = start_run(root)
    wait_for(lambda: store_mismatch(data, root) is None, f"first indexing; log:\n{run.log()}")

    parked = tmp_path / "unmounted"
    root.rename(parked)  # the share goes away
    wait_for(lambda: '"root_missing"' in run.log(), f"the daemon to notice; log:\n{run.log()}")
    time.sleep(3)  # a few root checks and ticks: removals below a missing root are held, not sent
    assert indexed_count(env) == 2, run.log()

    parked.rename(root)  # back, with a photo added while it was away
    write_photo(root / "chelsea.jpg", "chelsea")
    wait_for(lambda: store_mismatch(data, root) is None,
             f"the root re-watched and reconciled: {store_mismatch(data, root)}; log:\n{run.log()}")
    write_photo(root / "rocket.jpg", "rocket")  # watched again: a new photo arrives by event
    wait_for(lambda: store_mismatch(data, root) is None, f"the new photo; log:\n{run.log()}")
    assert run.stop() == 0 and "Traceback" not in run.log()
