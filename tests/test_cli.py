"""The split commands (scan, worker, daemon) against an external Redis, CLI errors, odd names printed escaped."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from imgwatch.valkey_server import EmbeddedValkey
from tests.helpers import PHOTO_NAMES, process_env, read_terminal_until


@pytest.fixture
def env(tmp_path: Path, queue_server: EmbeddedValkey) -> dict[str, str]:
    # "external" Redis: the session's server, with a queue of this test's own
    return process_env(tmp_path, IMGWATCH_WATCH_SETTLE_SECONDS="0.3", IMGWATCH_QUEUE_REDIS_URL=queue_server.url,
                       IMGWATCH_QUEUE_NAME=f"cli-{tmp_path.name}")


def imgwatch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imgwatch", *args], env=env, capture_output=True, text=True,
                          timeout=180, check=False)


def start_until_logged(env: dict[str, str], event: str, *args: str, timeout: float = 120) -> subprocess.Popen[str]:
    """`imgwatch ARGS...` as a process, logging to a file in its data dir's parent; returned once
    that log shows ``event``."""
    log = Path(env["IMGWATCH_GENERAL_DATA_DIR"]).parent / f"{args[0]}.log"
    with open(log, "a") as handle:
        process = subprocess.Popen([sys.executable, "-m", "imgwatch", *args], env=env,
                                   stdout=subprocess.DEVNULL, stderr=handle, text=True)
    deadline = time.monotonic() + timeout
    while event not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"imgwatch {' '.join(args)} did not log {event}:\n{log.read_text()}")
        time.sleep(0.1)
    return process


def test_scan_then_a_burst_worker_indexes_a_folder(
    env: dict[str, str], tmp_path: Path, write_photo: Callable[..., Path]
) -> None:
    root = tmp_path / "photos"
    for name in ["astronaut", "coffee", "rocket"]:
        write_photo(root / f"{name}.jpg", name)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")

    scanned = imgwatch(env, "scan", str(root))
    assert scanned.returncode == 0, scanned.stderr
    assert "enqueued 4 new or changed" in scanned.stdout
    queued = json.loads(imgwatch(env, "status", "--json").stdout)["queue"]
    assert queued["queued_paths"] == 4

    worked = imgwatch(env, "worker", "--burst", str(root))
    assert worked.returncode == 0, worked.stderr
    jobs = [json.loads(line) for line in worked.stderr.splitlines() if '"job_done"' in line]
    assert sum(job["paths"] for job in jobs) == 4 and sum(job["indexed"] for job in jobs) == 3

    report = json.loads(imgwatch(env, "status", "--json").stdout)
    assert report["store"]["images"] == 3
    assert [f["path"] for f in report["queue"]["failed_files"]] == [str(root / "broken.png")]
    text = imgwatch(env, "status").stdout
    assert "3 images" in text and "broken.png" in text
    doctor = json.loads(imgwatch(env, "doctor", "--json").stdout)
    assert doctor["store"]["images"] == 3 and doctor["store"]["journal_mode"] == "wal"
    assert doctor["queue"]["reachable"] is True

    rescanned = imgwatch(env, "scan", str(root))
    assert "enqueued 0 new or changed" in rescanned.stdout  # the unchanged bad file is not retried

    why = imgwatch(env, "similar", str(root / "broken.png"))  # the failure's reason, not "not indexed (yet)"
    assert why.returncode == 2 and f"{root / 'broken.png'} is not indexed: it failed: " in why.stderr, why.stderr
    assert "imgwatch retry" in why.stderr
    assert why.stderr.count(str(root / "broken.png")) == 2  # once as the subject, once in `imgwatch retry PATH`


def test_daemon_enqueues_dropped_files_and_stops_on_sigterm(
    env: dict[str, str], tmp_path: Path, write_photo: Callable[..., Path]
) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    daemon = start_until_logged(env, '"watching"', "daemon", str(root))
    deadline = time.monotonic() + 60
    try:
        write_photo(root / "new.jpg", "chelsea")
        while time.monotonic() < deadline:
            if json.loads(imgwatch(env, "status", "--json").stdout)["queue"]["queued_paths"] == 1:
                break
            time.sleep(0.3)
        else:
            raise AssertionError("the dropped photo was not enqueued")
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["similar", "/nowhere/x.jpg"], "no imgwatch store"),
        (["search", __file__], "no imgwatch store"),
        (["status", "--config", "/nowhere/config.toml"], "does not exist"),
        (["scan"], "no folders to scan"),
        (["scan", "/nowhere/photos"], "cannot scan /nowhere/photos: the folder does not exist (check the path)"),
    ],
)
def test_errors_are_one_line_without_traceback(env: dict[str, str], args: list[str], message: str) -> None:
    result = imgwatch(env, *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(("value", "expected"), [("lots", "invalid literal"), ("0", "expected an integer >= 1")])
def test_invalid_environment_value_names_the_key_and_its_source(env: dict[str, str], value: str, expected: str) -> None:
    env["IMGWATCH_LINKS_TOP_K"] = value
    result = imgwatch(env, "status")
    assert result.returncode == 2
    assert "links.top_k (from environment variable IMGWATCH_LINKS_TOP_K)" in result.stderr
    assert expected in result.stderr


def test_status_before_anything_was_indexed_says_so(env: dict[str, str], tmp_path: Path) -> None:
    result = imgwatch(env, "status")
    assert result.returncode == 0
    assert "store:   none yet" in result.stdout and "queue:" in result.stdout
    doctor = imgwatch(env, "doctor", "--json")
    assert doctor.returncode == 0
    assert json.loads(doctor.stdout)["store"]["state"] == "none yet"
    assert not (tmp_path / "data").exists()  # read-only commands create nothing


def test_search_with_other_weights_than_the_stores_says_which_to_pass(
    env: dict[str, str], tmp_path: Path, write_photo: Callable[..., Path]
) -> None:
    root = tmp_path / "photos"
    photo = write_photo(root / "coffee.jpg", "coffee")
    assert imgwatch(env, "scan", str(root)).returncode == 0
    assert imgwatch(env, "worker", "--burst", str(root)).returncode == 0  # random weights (process_env)

    unset = dict(env)
    del unset["IMGWATCH_EMBEDDING_WEIGHTS"]
    searched = imgwatch(unset, "search", "--weights", "imagenet", str(photo))  # cannot be downloaded here
    assert searched.returncode == 2 and searched.stdout == ""
    assert ("the store holds embeddings from resnet50/random-seed0, but the configured weights give "
            "resnet50/IMAGENET1K_V2: search again with --weights random") in searched.stderr, searched.stderr
    assert "download" not in searched.stderr  # refused before the model loads
    own = imgwatch(unset, "search", str(photo))  # no weights configured: the store's own (random, seed 0)
    assert own.returncode == 0 and str(photo) in own.stderr, own.stderr  # the photo itself, left out


def test_the_store_remembers_its_weights_file_for_every_later_command(
    env: dict[str, str], tmp_path: Path, write_photo: Callable[..., Path], calibrated_weights: Path,
) -> None:
    root = tmp_path / "photos"
    write_photo(root / "coffee.jpg", "coffee")
    write_photo(root / "rocket.jpg", "rocket")
    query = write_photo(tmp_path / "query" / "chelsea.jpg", "chelsea")
    weights = tmp_path / "models" / "resnet50.pth"
    weights.parent.mkdir()
    shutil.copyfile(calibrated_weights, weights)
    unset = dict(env, IMGWATCH_EMBEDDING_ENGINE="torch")  # only the weights file: nothing configured
    del unset["IMGWATCH_EMBEDDING_WEIGHTS"]
    assert imgwatch(unset, "scan", str(root)).returncode == 0
    worked = imgwatch(unset, "worker", "--burst", "--weights", str(weights), str(root))
    assert worked.returncode == 0, worked.stderr

    remembered = imgwatch(unset, "search", "--json", str(query))
    assert remembered.returncode == 0, remembered.stderr
    assert remembered.stdout == imgwatch(unset, "search", "--json", "--weights", str(weights), str(query)).stdout
    assert len(json.loads(remembered.stdout)) == 2

    sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()
    moved = tmp_path / "resnet50.pth"
    weights.rename(moved)
    gone = imgwatch(unset, "search", str(query))
    assert gone.returncode == 2 and gone.stdout == ""
    assert (f"imgwatch: error: the store holds embeddings from resnet50/file-{sha256[:12]}, made with the weights "
            f"file {weights}, which no longer exists: put the file back, or search again with --weights PATH, the "
            f"weights file the workers use (its SHA-256 starts with {sha256[:12]}: check with sha256sum)\n"
            ) == gone.stderr
    web_gone = imgwatch(unset, "web", "--port", "0")
    assert web_gone.returncode == 2 and "serving on" not in web_gone.stderr
    assert f"weights file {weights}, which no longer exists: put the file back, or start `imgwatch web` again" \
        in web_gone.stderr, web_gone.stderr

    shutil.copyfile(moved, weights)
    with open(weights, "ab") as handle:
        handle.write(b"changed")
    changed = imgwatch(unset, "search", str(query))
    assert changed.returncode == 2 and f"weights file {weights}, which has changed since (its SHA-256 now " \
        f"starts with {hashlib.sha256(weights.read_bytes()).hexdigest()[:12]})" in changed.stderr, changed.stderr


def test_web_with_other_weights_than_the_stores_refuses_to_start(
    env: dict[str, str], tmp_path: Path, write_photo: Callable[..., Path]
) -> None:
    root = tmp_path / "photos"
    write_photo(root / "coffee.jpg", "coffee")
    assert imgwatch(env, "scan", str(root)).returncode == 0
    assert imgwatch(env, "worker", "--burst", str(root)).returncode == 0  # random weights, seed 0

    refused = imgwatch(env, "web", "--port", "0", "--weights", "imagenet")

    assert refused.returncode == 2 and "serving on" not in refused.stderr
    assert refused.stderr == (
        "imgwatch: error: the store holds embeddings from resnet50/random-seed0, but the configured weights give "
        "resnet50/IMAGENET1K_V2: start `imgwatch web` again with --weights random and embedding.seed = 0 "
        "(the default)\n")


def test_scan_refuses_a_folder_no_running_worker_indexes(
    env: dict[str, str], tmp_path: Path, write_photo: Callable[..., Path]
) -> None:
    photos, elsewhere = tmp_path / "photos", tmp_path / "elsewhere"
    write_photo(photos / "2024" / "coffee.jpg", "coffee")
    write_photo(elsewhere / "rocket.jpg", "rocket")
    worker = start_until_logged(env, '"worker_ready"', "worker", str(photos))
    try:
        refused = imgwatch(env, "scan", str(elsewhere))
        assert refused.returncode == 2 and refused.stdout == ""
        assert (f"cannot scan {elsewhere}: the running workers index only files below {photos} "
                "and refuse any other") in refused.stderr, refused.stderr
        assert json.loads(imgwatch(env, "status", "--json").stdout)["queue"]["queued_paths"] == 0
        below = imgwatch(env, "scan", str(photos / "2024"))  # inside the worker's folder: taken
        assert below.returncode == 0 and "enqueued 1 new or changed" in below.stdout, below.stderr
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    # The worker withdrew its folders as it stopped: with no worker running, scan cannot know
    # which folders will be indexed, and queues the work for whichever worker starts.
    later = imgwatch(env, "scan", str(elsewhere))
    assert later.returncode == 0 and "enqueued 1 new or changed" in later.stdout, later.stderr


def test_scan_without_folders_scans_what_the_running_workers_index_and_ctrl_c_leaves_it_queued(
    env: dict[str, str], tmp_path: Path, write_photo: Callable[..., Path]
) -> None:
    photos = tmp_path / "photos"
    write_photo(photos / "coffee.jpg", "coffee")
    worker = start_until_logged(env, '"worker_ready"', "worker", str(photos))  # as `imgwatch run PHOTOS` starts them
    try:
        worker.send_signal(signal.SIGSTOP)  # still registered, but takes nothing: the backlog stays
        scanned = imgwatch(env, "scan")
        assert scanned.returncode == 0, scanned.stderr
        assert f"scanning the folders the running workers index: {photos}" in scanned.stderr
        assert "enqueued 1 new or changed" in scanned.stdout

        # On a terminal scan follows the backlog; Ctrl-C stops following, not the indexing.
        terminal, terminal_end = pty.openpty()
        following = subprocess.Popen([sys.executable, "-m", "imgwatch", "scan"], env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=terminal_end, text=True)
        os.close(terminal_end)
        shown = read_terminal_until(terminal, b"0/1 paths")
        following.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert following.wait(timeout=30) == 130
        shown += read_terminal_until(terminal, b"status")
        os.close(terminal)
        assert following.stdout is not None and "enqueued" in following.stdout.read()
        assert b"stopped following; the queued files are indexed in the background" in shown, shown
        assert json.loads(imgwatch(env, "status", "--json").stdout)["queue"]["queued_paths"] == 1
    finally:
        worker.send_signal(signal.SIGCONT)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0


def test_scanning_again_before_a_worker_ran_queues_each_file_once(
    env: dict[str, str], tmp_path: Path, write_photo: Callable[..., Path]
) -> None:
    root = tmp_path / "photos"
    for name in ["astronaut", "coffee"]:
        write_photo(root / f"{name}.jpg", name)
    assert "enqueued 2 new or changed" in imgwatch(env, "scan", str(root)).stdout
    again = imgwatch(env, "scan", str(root))
    assert again.returncode == 0, again.stderr
    assert "enqueued 0 new or changed and 0 removed file(s); 2 already queued; 0 unchanged" in again.stdout
    assert json.loads(imgwatch(env, "status", "--json").stdout)["queue"]["queued_paths"] == 2


def test_status_lists_each_folder_a_running_daemon_watches_with_its_state(env: dict[str, str], tmp_path: Path) -> None:
    photos, typo = tmp_path / "photos", tmp_path / "nope"
    photos.mkdir()
    daemon = start_until_logged(env, '"watching"', "daemon", str(photos), str(typo))
    try:
        report = json.loads(imgwatch(env, "status", "--json").stdout)
        assert [(root["path"], root["state"], root["images"]) for root in report["roots"]] == [
            (str(typo), "missing", 0), (str(photos), "watching", 0)]
        text = imgwatch(env, "status").stdout
        assert "roots:   2 folder(s): 1 missing, 1 watching\n" in text
        assert f"\n  {typo}: missing, 0 images (not there: watched and indexed once it appears" in text
        assert f"\n  {photos}: watching, 0 images\n" in text
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    assert json.loads(imgwatch(env, "status", "--json").stdout)["roots"] == []  # withdrawn as it stopped
    assert "roots:   none watched (no daemon is running" in imgwatch(env, "status").stdout
    # Off a terminal the structured log says it; the plain line is for a person at a terminal.
    log = (tmp_path / "daemon.log").read_text()
    assert '"root_missing"' in log and "does not exist" not in log


def test_status_with_the_queue_out_of_reach_says_which_folders_are_watched_is_unknown(
    env: dict[str, str], tmp_path: Path
) -> None:
    env["IMGWATCH_QUEUE_REDIS_URL"] = f"unix://{tmp_path}/no-queue.sock"
    assert "roots:   unknown (the queue is out of reach" in imgwatch(env, "status").stdout
    photos = tmp_path / "photos"
    env["IMGWATCH_GENERAL_ROOTS"] = str(photos)
    [root] = json.loads(imgwatch(env, "status", "--json").stdout)["roots"]
    assert (root["path"], root["state"], root["images"]) == (str(photos), "unknown", 0)


def test_a_worker_with_other_weights_is_refused_before_it_loads_or_exports_a_model(
    env: dict[str, str], tmp_path: Path, write_photo: Callable[..., Path]
) -> None:
    root = tmp_path / "photos"
    write_photo(root / "coffee.jpg", "coffee")
    assert imgwatch(env, "scan", str(root)).returncode == 0
    assert imgwatch(env, "worker", "--burst", str(root)).returncode == 0  # random weights, seed 0
    engines = tmp_path / "data" / "engines"
    exported = sorted(p.name for p in engines.rglob("*")) if engines.exists() else []

    other = dict(env, IMGWATCH_EMBEDDING_SEED="1")  # another vector space
    refused = imgwatch(other, "worker", "--burst", str(root))
    assert refused.returncode == 2
    assert "holds 1 embeddings from resnet50/random-seed0" in refused.stderr, refused.stderr
    assert "configure resnet50/random-seed0 again: --weights random and embedding.seed = 0" in refused.stderr
    assert '"worker_ready"' not in refused.stderr and '"random_weights"' not in refused.stderr  # never loaded
    assert (sorted(p.name for p in engines.rglob("*")) if engines.exists() else []) == exported


def test_a_worker_with_a_model_file_records_it_and_only_a_search_with_that_model_is_answered(
    env: dict[str, str], tmp_path: Path, write_photo: Callable[..., Path]
) -> None:
    from imgwatch.embedding.identity import model_file_identity
    from imgwatch.embedding.preprocessing import IMAGENET
    from imgwatch.store import open_store
    from tests.embedding.tiny_models import TINY_DIM, write_onnx
    from tests.helpers import make_config

    model = write_onnx(tmp_path / "models" / "tiny.onnx")
    sha256 = hashlib.sha256(model.read_bytes()).hexdigest()
    with_model = dict(env, IMGWATCH_EMBEDDING_MODEL=str(model), IMGWATCH_EMBEDDING_PREPROCESS_DIM=str(TINY_DIM))
    root = tmp_path / "photos"
    for name in ("coffee", "chelsea", "rocket"):
        write_photo(root / f"{name}.jpg", name)
    assert imgwatch(with_model, "scan", str(root)).returncode == 0

    assert imgwatch(with_model, "worker", "--burst", str(root)).returncode == 0

    with open_store(make_config(tmp_path / "data"), create=False) as store:
        assert store.recorded_model() == (model_file_identity("onnx", sha256, IMAGENET), TINY_DIM)
        assert store.recorded_weights_file() == (str(model), sha256)
        assert store.stats().images == 3
    searched = imgwatch(with_model, "search", "--json", str(root / "coffee.jpg"))
    assert searched.returncode == 0, searched.stderr
    assert sorted(Path(result["path"]).name for result in json.loads(searched.stdout)) == ["chelsea.jpg", "rocket.jpg"]
    refused = imgwatch(env, "search", str(root / "coffee.jpg"))  # ResNet50 (random weights)
    assert refused.returncode == 2
    assert refused.stderr.strip().endswith(
        f'search again with embedding.model = "{model}", the store\'s onnx model file, and the '
        f"[embedding.preprocess] the workers use (its hash: {IMAGENET.fingerprint})"), refused.stderr
    assert '"random_weights"' not in refused.stderr  # refused before any model loaded


# -- file names that would drive the terminal ---------------------------------------------------

# Names an attacker could give files in a watched folder, and how every printer must show them.
TERMINAL_NAMES = {
    "\x1b]0;pwned\x07.jpg": "\\x1b]0;pwned\\x07.jpg",  # OSC: retitles the terminal
    "\x1b[2J.jpg": "\\x1b[2J.jpg",  # CSI: clears the screen
    "\x1b[31mred.jpg": "\\x1b[31mred.jpg",  # recolours what follows
    "a\nfake 0.9999  b.jpg": "a\\nfake 0.9999  b.jpg",  # a newline fakes a result line
    "over\rwritten.jpg": "over\\rwritten.jpg",
    "csi\u009b31m.jpg": "csi\\x9b31m.jpg",  # the 8-bit CSI (a C1 control)
    "x\u202egnp.jpg": "x\\u202egnp.jpg",  # right-to-left override: would read "xgpj.png"
}
KEPT_NAME = "café 写真 📷.jpg"  # ordinary Unicode is shown as it is
RAW_CONTROLS = (b"\x1b", b"\x07", b"\r", "\u009b".encode(), "\u202e".encode())
SCORED_LINE = re.compile(rb"-?\d\.\d{4}  /")  # what every line of similar/search looks like


def imgwatch_bytes(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    """`imgwatch ARGS...` with its output as bytes: text mode would turn a raw CR into a newline."""
    return subprocess.run([sys.executable, "-m", "imgwatch", *args], env=env, capture_output=True,
                          timeout=180, check=False)


def test_file_names_that_would_drive_the_terminal_are_printed_escaped(
    env: dict[str, str], tmp_path: Path, write_photo: Callable[..., Path]
) -> None:
    env["IMGWATCH_GENERAL_DATA_DIR"] = str(tmp_path / "data\x1b[36m")  # status and doctor show it
    root = tmp_path / "photos"
    names = [*TERMINAL_NAMES, KEPT_NAME]
    photos = [write_photo(root / name, photo) for name, photo in zip(names, PHOTO_NAMES, strict=True)]
    write_photo(root / "old\x1b[35m" / "rocket.jpg", "rocket")
    (root / "\x1b[2Kbroken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    scanned = imgwatch_bytes(env, "scan", str(root))
    assert scanned.returncode == 0, scanned.stderr
    worked = imgwatch_bytes(env, "worker", "--burst", str(root))
    assert worked.returncode == 0, worked.stderr
    shown = {name: f"{root}/{escaped}".encode() for name, escaped in TERMINAL_NAMES.items()}
    shown[KEPT_NAME] = f"{root}/{KEPT_NAME}".encode()

    outputs = {
        "scan": scanned,
        "similar": imgwatch_bytes(env, "similar", str(photos[0]), "--sheet", str(tmp_path / "sheet\x1b[2J.png")),
        "search": imgwatch_bytes(env, "search", str(photos[1])),
        "duplicates": imgwatch_bytes(env, "duplicates"),
        "duplicates --csv": imgwatch_bytes(env, "duplicates", "--csv"),
        "status": imgwatch_bytes(env, "status"),
        "doctor": imgwatch_bytes(env, "doctor"),
        "similar, not indexed": imgwatch_bytes(env, "similar", str(root / "nowhere\x1b[2J.jpg")),
        "similar, failed": imgwatch_bytes(env, "similar", str(root / "\x1b[2Kbroken.png")),
        "forget": imgwatch_bytes(env, "forget", str(root / "old\x1b[35m")),
    }

    for command, result in outputs.items():
        for stream in (result.stdout, result.stderr):
            assert not [raw for raw in RAW_CONTROLS if raw in stream], f"imgwatch {command} printed {stream!r}"
    similar, search = outputs["similar"], outputs["search"]
    assert similar.returncode == 0 and search.returncode == 0, (similar.stderr, search.stderr)
    assert all(SCORED_LINE.match(line) for line in similar.stdout.splitlines() + search.stdout.splitlines())
    # Off a terminal click.echo drops CSI sequences itself, so the escaped forms are what prove the rule.
    assert all(shown[name] in similar.stdout for name in names[1:]) and shown[names[0]] not in similar.stdout
    assert all(shown[name] in search.stdout for name in names if name != names[1])
    assert b"(the photo itself is left out: " + shown[names[1]] + b")" in search.stderr  # the query, escaped too
    assert f"contact sheet: {tmp_path}/sheet\\x1b[2J.png".encode() in similar.stderr
    assert all(shown[name] in outputs["duplicates"].stdout for name in names)
    rows = csv.DictReader(io.StringIO(outputs["duplicates --csv"].stdout.decode()))
    assert {row["path"].encode() for row in rows} >= set(shown.values())
    broken = f"{root}/\\x1b[2Kbroken.png".encode()
    assert broken + b": " in outputs["status"].stdout and b"data\\x1b[36m" in outputs["status"].stdout
    assert b"data\\x1b[36m" in outputs["doctor"].stdout
    assert outputs["similar, not indexed"].stderr.splitlines() == [
        f"imgwatch: error: {root}/nowhere\\x1b[2J.jpg is not indexed (yet); check the path or run `imgwatch status`"
        .encode()]
    [failed] = outputs["similar, failed"].stderr.splitlines()
    assert failed.startswith(b"imgwatch: error: " + broken + b" is not indexed: it failed: ")
    assert outputs["forget"].stdout == f"forgot 1 image(s) and 0 failed-file record(s) below {root}/old\\x1b[35m\n" \
        .encode()


# -- a CLI that behaves like its peers ----------------------------------------------------------


def logged_levels(stderr: str) -> set[str]:
    """The levels of the JSON log lines in ``stderr`` (process_env logs JSON)."""
    return {json.loads(line)["level"] for line in stderr.splitlines() if line.startswith("{")}


def test_queries_answer_quietly_take_the_common_options_before_the_command_and_cut_to_top(
    env: dict[str, str], tmp_path: Path, write_photo: Callable[..., Path]
) -> None:
    root = tmp_path / "photos"
    photos = [write_photo(root / f"{name}.jpg", name) for name in ["astronaut", "coffee", "rocket"]]
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert imgwatch(env, "scan", str(root)).returncode == 0
    worked = imgwatch(env, "worker", "--burst", str(root))
    assert worked.returncode == 0 and "info" in logged_levels(worked.stderr)  # a service logs its progress

    data_dir = env.pop("IMGWATCH_GENERAL_DATA_DIR")  # only the option, before the command's name, says where
    searched = imgwatch(env, "--data-dir", data_dir, "search", "--top", "2", str(photos[0]))
    assert searched.returncode == 0, searched.stderr
    assert len(searched.stdout.splitlines()) == 2
    assert logged_levels(searched.stderr) == {"warning"}, searched.stderr  # random weights; no engine_ready
    verbose = imgwatch(env, "-v", "--data-dir", data_dir, "search", "--top", "1", str(photos[0]))
    assert verbose.returncode == 0 and "info" in logged_levels(verbose.stderr), verbose.stderr

    every = imgwatch(env, "similar", "--data-dir", data_dir, "--json", str(photos[0]))
    best = imgwatch(env, "--data-dir", data_dir, "similar", "--top", "1", "--json", str(photos[0]))
    assert every.returncode == 0 and best.returncode == 0, (every.stderr, best.stderr)
    assert len(json.loads(every.stdout)) == 2 and json.loads(best.stdout) == json.loads(every.stdout)[:1]
    assert every.stderr == best.stderr == ""
    assert imgwatch(env, "--data-dir", data_dir, "similar", "--top", "0", str(photos[0])).returncode == 2

    env["IMGWATCH_GENERAL_DATA_DIR"] = data_dir
    nothing_failed = imgwatch(env, "retry", str(photos[0]))
    assert nothing_failed.returncode == 0 and nothing_failed.stdout == f"no failed file at or below {photos[0]}\n"
    gone = imgwatch(env, "retry", str(root / "gone.png"))
    assert gone.returncode == 2 and "does not exist" in gone.stderr and gone.stdout == ""
    retried = imgwatch(env, "retry", str(root / "broken.png"), str(photos[1]))
    assert retried.returncode == 0
    assert retried.stdout == f"no failed file at or below {photos[1]}\nrequeued 1 failed file(s)\n"


def test_common_options_after_the_command_beat_those_before(env: dict[str, str], tmp_path: Path) -> None:
    before, after = tmp_path / "before", tmp_path / "after"
    result = imgwatch(env, "--data-dir", str(before), "similar", "--data-dir", str(after), "x.jpg")
    assert result.returncode == 2 and f"no imgwatch store in {after}:" in result.stderr, result.stderr
    for args in (["--help"], ["similar", "--help"]):
        shown = imgwatch(env, *args).stdout
        assert "--data-dir DIR" in shown and "-v, --verbose" in shown


@pytest.mark.parametrize("args", [["--workers", "0"], ["--weights", "imagnet"]])
def test_run_refuses_bad_values_before_starting(env: dict[str, str], args: list[str]) -> None:
    result = imgwatch(env, "run", *args)
    assert result.returncode == 2 and result.stdout == ""
    assert ("0 is not in the range x>=1" if args[0] == "--workers" else "(did you mean imagenet?)") in result.stderr


SEARCH_THEN_SAY_IF_TORCH_LOADED = """
import sys
from imgwatch.cli import main
try:
    main(["search", *sys.argv[1:]])
except SystemExit as exit:
    print("exit", exit.code, "torch" in sys.modules)
"""


def test_search_refusals_come_before_the_model_loads(
    env: dict[str, str], tmp_path: Path, write_photo: Callable[..., Path]
) -> None:
    photo = write_photo(tmp_path / "photos" / "coffee.jpg", "coffee")

    def search(environ: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", SEARCH_THEN_SAY_IF_TORCH_LOADED, *args], env=environ,
                              capture_output=True, text=True, timeout=180, check=False)

    no_store = search(env, str(photo))
    assert no_store.stdout == "exit 2 False\n" and "no imgwatch store" in no_store.stderr, no_store.stderr
    missing = search(env, str(tmp_path / "nowhere.jpg"))
    assert missing.stdout == "exit 2 False\n" and "does not exist" in missing.stderr, missing.stderr

    assert imgwatch(env, "scan", str(photo.parent)).returncode == 0  # a store, with nothing indexed yet
    empty = search(env, str(photo))
    assert empty.stdout == "exit 2 False\n" and "nothing is indexed yet" in empty.stderr, empty.stderr
    assert imgwatch(env, "worker", "--burst", str(photo.parent)).returncode == 0  # random weights, seed 0
    other_model = search(dict(env, IMGWATCH_EMBEDDING_SEED="1"), str(photo))
    assert other_model.stdout == "exit 2 False\n" and "the store holds embeddings" in other_model.stderr


# -- the query photo itself --------------------------------------------------------------------


def test_search_with_an_indexed_photo_leaves_it_and_its_exact_copies_out_saying_so(
    env: dict[str, str], tmp_path: Path, write_photo: Callable[..., Path]
) -> None:
    root = tmp_path / "photos"
    coffee = write_photo(root / "coffee.jpg", "coffee")
    backup = root / "backup" / "coffee.jpg"  # the same bytes: the photo itself, kept twice
    backup.parent.mkdir()
    shutil.copyfile(coffee, backup)
    others = [write_photo(root / f"{name}.jpg", name) for name in ["astronaut", "chelsea", "rocket"]]
    assert imgwatch(env, "scan", str(root)).returncode == 0
    assert imgwatch(env, "worker", "--burst", str(root)).returncode == 0
    outside = tmp_path / "Downloads" / "coffee-from-a-friend.jpg"  # not indexed, but its content is
    outside.parent.mkdir()
    shutil.copyfile(coffee, outside)
    by_path = imgwatch(env, "search", str(coffee))
    assert by_path.returncode == 0, by_path.stderr
    assert sorted(line.split("  ", 1)[1] for line in by_path.stdout.splitlines()) == sorted(map(str, others))
    assert by_path.stderr.endswith(f"(the photo itself is left out: {coffee}, {backup})\n"), by_path.stderr
    by_content = imgwatch(env, "search", str(outside))
    assert by_content.stdout == by_path.stdout
    note = re.search(r"\(the photo itself is left out: (.*)\)\n$", by_content.stderr)
    assert note and sorted(note.group(1).split(", ")) == sorted([str(coffee), str(backup)]), by_content.stderr

    top = imgwatch(env, "search", "--top", "2", "--json", str(coffee))  # --top counts the others
    assert [r["path"] for r in json.loads(top.stdout)] == [line.split("  ", 1)[1] for line in imgwatch(
        env, "search", str(coffee)).stdout.splitlines()][:2]
    sheet = imgwatch(env, "search", "--top", "2", "--sheet", str(tmp_path / "sheet.png"), str(coffee))
    assert "(the query and 2 result(s))" in sheet.stderr, sheet.stderr

    unrelated = imgwatch(env, "search", str(write_photo(tmp_path / "elsewhere" / "camera.jpg", "camera")))
    assert len(unrelated.stdout.splitlines()) == 5 and "left out" not in unrelated.stderr


def test_status_shows_failure_reasons_without_the_path_beside_them_and_the_queue_error_as_one_sentence(
    env: dict[str, str], tmp_path: Path
) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    broken = root / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert imgwatch(env, "scan", str(root)).returncode == 0
    assert imgwatch(env, "worker", "--burst", str(root)).returncode == 0
    report = imgwatch(env, "status")
    [line] = [line for line in report.stdout.splitlines() if line.startswith(f"  {broken}: ")]
    assert line.startswith(f"  {broken}: cannot decode: ") and line.count(str(broken)) == 1, line
    [failed] = json.loads(imgwatch(env, "status", "--json").stdout)["queue"]["failed_files"]
    assert failed["reason"].startswith(f"cannot decode {broken}: ")  # scripts get the reason as recorded

    del env["IMGWATCH_QUEUE_REDIS_URL"]  # the embedded queue, and no `imgwatch run`
    socket = tmp_path / "data" / "queue" / "redis.sock"
    offline = imgwatch(env, "status")
    assert (f"queue:   not reachable (cannot reach the queue at unix://{socket} (No such file or directory): "
            "start `imgwatch run` (it starts the embedded queue) or set queue.redis_url to an external Redis)"
            ) in offline.stdout, offline.stdout
