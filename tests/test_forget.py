"""Images below no watched folder: `imgwatch doctor` reports them, `imgwatch forget` removes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imgwatch.datadir import DataDir
from imgwatch.store import EmbeddedGraphStore, open_store
from imgwatch.valkey_server import EmbeddedValkey
from imgwatch.workqueue import FailureLedger, WorkQueue
from imgwatch.workqueue.connection import connect
from imgwatch.workqueue.worker_roots import WorkerRoots
from tests.helpers import angled, axis, imgwatch, make_config, make_record, process_env


@pytest.fixture
def once_watched_library(tmp_path: Path, queue_server: EmbeddedValkey) -> tuple[dict[str, str], Path, FailureLedger]:
    """A store with images in the watched folder and in two folders that were watched once, and a
    failed file in each; ``IMGWATCH_GENERAL_ROOTS`` names only the watched one."""
    photos, old, sibling = tmp_path / "photos", tmp_path / "old", tmp_path / "old-2"
    queue_name = f"forget-{tmp_path.name}"
    env = process_env(tmp_path, IMGWATCH_GENERAL_ROOTS=str(photos), IMGWATCH_QUEUE_REDIS_URL=queue_server.url,
                      IMGWATCH_QUEUE_NAME=queue_name)
    config = make_config(tmp_path / "data")
    config.queue.redis_url, config.queue.name = queue_server.url, queue_name
    with open_store(config) as store:
        records = [
            make_record(str(photos / "beach.jpg"), axis(0)),
            make_record(str(photos / "city.jpg"), axis(1)),
            make_record(str(old / "beach-copy.jpg"), angled(0.99, 2)),  # linked to photos/beach.jpg
            make_record(str(old / "2019" / "city-copy.jpg"), angled(0.98, 3)),
            make_record(str(old / "2019" / "x.jpg"), axis(4)),
            make_record(str(sibling / "y.jpg"), axis(5)),  # /old-2 is not below /old
        ]
        store.ensure_model(records[0].model, len(records[0].embedding))
        store.upsert(records)
        store.link(records, 0.5, 5)
        assert {m.path for m in store.neighbours(str(photos / "beach.jpg"))} >= {str(old / "beach-copy.jpg")}
    ledger = FailureLedger.for_queue(WorkQueue(connect(config), queue_name))
    ledger.record(str(old / "broken.jpg"), "cannot decode", 10, 1)
    ledger.record(str(photos / "broken.jpg"), "cannot decode", 10, 1)
    return env, tmp_path, ledger


def stored_paths(tmp_path: Path) -> list[str]:
    with EmbeddedGraphStore(DataDir(tmp_path / "data").store_file) as store:
        return [state.path for state in store.file_states()]


def test_doctor_counts_the_images_below_no_watched_folder(
    once_watched_library: tuple[dict[str, str], Path, FailureLedger],
) -> None:
    env, tmp_path, _ = once_watched_library
    report = json.loads(imgwatch(env, "doctor", "--json").stdout)["unwatched"]
    assert report["images"] == 4
    assert report["folders"] == {str(tmp_path / "old" / "2019"): 2, str(tmp_path / "old"): 1,
                                 str(tmp_path / "old-2"): 1}
    text = imgwatch(env, "doctor").stdout
    assert "unwatched:" in text and "imgwatch forget FOLDER" in text


def test_forget_removes_a_folders_images_links_and_failures_and_nothing_else(
    once_watched_library: tuple[dict[str, str], Path, FailureLedger],
) -> None:
    env, tmp_path, ledger = once_watched_library
    photos, old = tmp_path / "photos", tmp_path / "old"
    forgot = imgwatch(env, "forget", str(old))
    assert forgot.stdout.strip() == f"forgot 3 image(s) and 1 failed-file record(s) below {old}"
    assert sorted(stored_paths(tmp_path)) == sorted([str(photos / "beach.jpg"), str(photos / "city.jpg"),
                                                     str(tmp_path / "old-2" / "y.jpg")])
    with EmbeddedGraphStore(DataDir(tmp_path / "data").store_file) as store:
        assert all(not m.path.startswith(str(old) + "/") for m in store.neighbours(str(photos / "beach.jpg")))
    assert [f.path for f in ledger.failed_files()] == [str(photos / "broken.jpg")]
    assert json.loads(imgwatch(env, "doctor", "--json").stdout)["unwatched"]["images"] == 1
    again = imgwatch(env, "forget", str(old))
    assert again.stdout.strip() == f"forgot 0 image(s) and 0 failed-file record(s) below {old}"


@pytest.mark.parametrize(("folder", "reason", "advice"), [
    ("photos", "it is a watched folder", "take it out of the watched folders"),
    ("photos/2020", "it is inside the watched folder", "take it out of the watched folders"),
    (".", "it holds the watched folder", "forget the unwatched folders inside it one by one"),
])
def test_forget_refuses_a_watched_folder_and_removes_nothing(
    once_watched_library: tuple[dict[str, str], Path, FailureLedger], folder: str, reason: str, advice: str,
) -> None:
    env, tmp_path, ledger = once_watched_library
    before = stored_paths(tmp_path)
    refused = imgwatch(env, "forget", str(tmp_path / "old"), str(tmp_path / folder), check=False)
    assert refused.returncode == 2 and refused.stdout == ""
    assert reason in refused.stderr and advice in refused.stderr, refused.stderr
    assert stored_paths(tmp_path) == before and len(ledger.failed_files()) == 2


def test_the_folders_of_running_workers_count_as_watched_without_general_roots(
    once_watched_library: tuple[dict[str, str], Path, FailureLedger],
) -> None:
    env, tmp_path, ledger = once_watched_library
    del env["IMGWATCH_GENERAL_ROOTS"]  # the folders were given to `imgwatch run` instead
    assert json.loads(imgwatch(env, "doctor", "--json").stdout)["unwatched"].startswith("not checked")
    roots = WorkerRoots(ledger.connection, env["IMGWATCH_QUEUE_NAME"])
    roots.announce("imgwatch-run-worker", [str(tmp_path / "photos")], ttl=60)  # as a starting worker does
    assert json.loads(imgwatch(env, "doctor", "--json").stdout)["unwatched"]["images"] == 4
    refused = imgwatch(env, "forget", str(tmp_path / "photos" / "2024"), check=False)
    assert refused.returncode == 2 and "it is inside the watched folder" in refused.stderr, refused.stderr
    roots.withdraw("imgwatch-run-worker")  # stopped
    assert imgwatch(env, "forget", str(tmp_path / "photos" / "2024")).returncode == 0


def test_with_an_external_queue_out_of_reach_forget_removes_nothing(
    once_watched_library: tuple[dict[str, str], Path, FailureLedger],
) -> None:
    env, tmp_path, _ = once_watched_library
    env["IMGWATCH_QUEUE_REDIS_URL"] = "redis://127.0.0.1:1/0"  # workers elsewhere may index any folder
    before = stored_paths(tmp_path)
    refused = imgwatch(env, "forget", str(tmp_path / "old"), check=False)
    assert refused.returncode == 2 and "forget needs the queue to learn which folders" in refused.stderr
    assert stored_paths(tmp_path) == before
    doctor = json.loads(imgwatch(env, "doctor", "--json").stdout)
    assert doctor["unwatched"].startswith("not checked: the queue is out of reach")


def test_with_no_imgwatch_running_forget_goes_by_general_roots_and_keeps_the_failure_records(
    once_watched_library: tuple[dict[str, str], Path, FailureLedger],
) -> None:
    env, tmp_path, _ = once_watched_library
    del env["IMGWATCH_QUEUE_REDIS_URL"]  # the embedded queue, not running: nor is any worker
    forgot = imgwatch(env, "forget", str(tmp_path / "old"))
    assert forgot.stdout.strip() == f"forgot 3 image(s) below {tmp_path / 'old'}"
    assert "failed-file records below" in forgot.stderr and "run forget again while imgwatch runs" in forgot.stderr
    refused = imgwatch(env, "forget", str(tmp_path / "photos"), check=False)  # general.roots still counts
    assert refused.returncode == 2 and "it is a watched folder" in refused.stderr
