"""Embedded (SQLite) backend specifics: several instances and processes on one file."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

import imgwatch
from imgwatch.store import EmbeddedGraphStore, FileState, ModelMismatchError, StoreError, StoreMissing, open_store
from imgwatch.store.embedded.sqlite import SCHEMA_VERSION
from tests.helpers import DIM, MODEL, angled, axis, make_config, make_record, random_unit_vectors

SRC_DIR = str(Path(imgwatch.__file__).resolve().parents[1])

# A separate Python process writing images the way a worker does: upsert, then link.
# Vector i of a writer is row i of random_unit_vectors(count, DIM, seed) (same generator).
WRITER_SCRIPT = r"""
import sys, time, pathlib
import numpy as np
from imgwatch.store import EmbeddedGraphStore, ImageRecord

db, prefix, count, batch, seed, dim, model = sys.argv[1:8]
count, batch, seed, dim = int(count), int(batch), int(seed), int(dim)
pause_at = int(sys.argv[8]) if len(sys.argv) > 8 else -1   # stop here until <db>.go exists
vectors = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
store = EmbeddedGraphStore(db)
store.ensure_model(model, dim)
for start in range(0, count, batch):
    if start == pause_at:
        pathlib.Path(db + ".paused").touch()
        while not pathlib.Path(db + ".go").exists():
            time.sleep(0.01)
    records = [
        ImageRecord(path=f"{prefix}/{i}.jpg", sha256=str(i), size=i, mtime_ns=i, width=1, height=1,
                    model=model, embedding=vectors[i])
        for i in range(start, min(start + batch, count))
    ]
    store.upsert(records)
    store.link(records, 0.5, 5)
store.close()
"""


def start_writer(
    db: Path, prefix: str, count: int, batch: int, seed: int, pause_at: int | None = None
) -> subprocess.Popen[bytes]:
    arguments = [str(db), prefix, str(count), str(batch), str(seed), str(DIM), MODEL]
    if pause_at is not None:
        arguments.append(str(pause_at))
    env = {**os.environ, "PYTHONPATH": SRC_DIR, "OPENBLAS_NUM_THREADS": "1"}
    command = [sys.executable, "-c", WRITER_SCRIPT, *arguments]
    return subprocess.Popen(command, env=env, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    _, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr.decode()


def wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


@pytest.fixture
def writer(db_path: Path) -> Iterator[EmbeddedGraphStore]:
    """This process's store on ``db_path``, with MODEL/DIM recorded."""
    store = EmbeddedGraphStore(db_path)
    try:
        store.ensure_model(MODEL, DIM)
        yield store
    finally:
        store.close()


def test_a_second_instance_follows_each_change(writer: EmbeddedGraphStore, db_path: Path) -> None:
    # (How it follows, through the shared vector files, is tested in test_shared_vectors.py.)
    with EmbeddedGraphStore(db_path) as reader:
        writer.upsert([make_record("/p/a.jpg", axis(0))])
        assert [m.path for m in reader.nearest(axis(0), 5)] == ["/p/a.jpg"]

        writer.upsert([make_record("/p/b.jpg", angled(0.9, 1))])
        found = [(m.path, round(m.score, 4)) for m in reader.nearest(axis(0), 5)]
        assert found == [("/p/a.jpg", 1.0), ("/p/b.jpg", 0.9)]

        writer.remove(["/p/a.jpg"])
        assert [m.path for m in reader.nearest(axis(0), 5)] == ["/p/b.jpg"]

        writer.update_file_states([FileState("/p/b.jpg", 1, 1)])  # no embedding changed: no new revision
        writer.upsert([make_record("/p/b.jpg", axis(0))])  # re-embedded: new vector, same path
        [match] = reader.nearest(axis(0), 5)
        assert match.path == "/p/b.jpg" and match.score == pytest.approx(1.0, abs=1e-6)


def test_a_reader_sees_what_another_process_commits_while_it_writes(
    writer: EmbeddedGraphStore, db_path: Path
) -> None:
    vectors = random_unit_vectors(60, DIM, seed=7)
    assert writer.nearest(vectors[0], 100) == []  # index loaded before the other process writes

    process = start_writer(db_path, "/other", count=60, batch=3, seed=7, pause_at=30)
    try:
        wait_for(Path(str(db_path) + ".paused").exists)
        # Exactly the first 30 are committed now; each one is found by its own vector.
        assert len(writer.nearest(vectors[0], 100)) == 30
        assert writer.nearest(vectors[29], 1)[0].path == "/other/29.jpg"
        assert writer.nearest(vectors[30], 1)[0].path != "/other/30.jpg"

        Path(str(db_path) + ".go").touch()
        seen = [30]
        while process.poll() is None:  # read while the other process writes
            seen.append(len(writer.nearest(vectors[0], 100)))
        finish(process)
    finally:
        process.kill()

    seen.append(len(writer.nearest(vectors[0], 100)))
    assert seen == sorted(seen) and seen[-1] == 60  # never goes back, ends complete
    for i in (30, 45, 59):
        match = writer.nearest(vectors[i], 1)[0]
        assert match.path == f"/other/{i}.jpg" and match.score == pytest.approx(1.0, abs=1e-6)
    assert writer.stats().links > 0


def test_two_writer_processes_lose_no_writes(db_path: Path) -> None:
    EmbeddedGraphStore(db_path).close()  # schema first, so both processes race on data only
    processes = [start_writer(db_path, f"/w{n}", count=200, batch=1, seed=n) for n in (1, 2)]
    for process in processes:
        finish(process)

    with EmbeddedGraphStore(db_path) as store:
        assert store.stats().images == 400
        assert len(store.nearest(axis(0), 1000)) == 400
        assert {s.path for s in store.file_states(under="/w1")} == {f"/w1/{i}.jpg" for i in range(200)}
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_processes_opening_a_new_store_together_all_succeed(tmp_path: Path) -> None:
    # Each opener sleeps until a common start time after its imports, so all of them
    # race to create the schema and switch the new file to WAL at the same moment.
    opener = (
        "import sys, time; from imgwatch.store import EmbeddedGraphStore as S; "
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time())); S(sys.argv[1]).close()"
    )
    env = {**os.environ, "PYTHONPATH": SRC_DIR}
    for attempt in range(3):
        db, start_at = tmp_path / f"new-{attempt}.sqlite3", time.time() + 0.6
        command = [sys.executable, "-c", opener, str(db), str(start_at)]
        openers = [subprocess.Popen(command, env=env, stderr=subprocess.PIPE) for _ in range(6)]
        for process in openers:
            finish(process)


def test_a_killed_writer_leaves_whole_transactions_and_a_sound_file(db_path: Path) -> None:
    EmbeddedGraphStore(db_path).close()
    process = start_writer(db_path, "/killed", count=100_000, batch=10, seed=3)
    try:
        with EmbeddedGraphStore(db_path) as observer:
            wait_for(lambda: observer.stats().images >= 50)
        process.send_signal(signal.SIGKILL)  # mid-run, possibly mid-transaction
        process.wait(timeout=10)
    finally:
        process.kill()

    with EmbeddedGraphStore(db_path) as store:
        images = store.stats().images
        assert images >= 50 and images % 10 == 0  # batches are all or nothing
        assert len(store.nearest(axis(0), 100_000)) == images
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_everything_persists_across_close_and_reopen(db_path: Path) -> None:
    with EmbeddedGraphStore(db_path) as store:
        store.ensure_model(MODEL, DIM)
        records = [make_record("/p/a.jpg", axis(0), size=5), make_record("/p/b.jpg", angled(0.9, 1))]
        store.upsert(records)
        assert store.link(records, 0.5, 5) == 1

    with EmbeddedGraphStore(db_path) as store:
        assert store.stats().images == 2 and store.stats().links == 1 and store.stats().model == MODEL
        stored = store.get("/p/a.jpg")
        assert stored is not None and stored.size == 5
        assert [m.path for m in store.neighbours("/p/a.jpg")] == ["/p/b.jpg"]
        assert [m.path for m in store.nearest(angled(0.9, 1), 2)] == ["/p/b.jpg", "/p/a.jpg"]
        with pytest.raises(ModelMismatchError):
            store.ensure_model("another/model", DIM)


def test_changing_an_embedding_drops_its_stale_links(writer: EmbeddedGraphStore) -> None:
    a, b = make_record("/p/a.jpg", axis(0)), make_record("/p/b.jpg", angled(0.9, 1))
    c = make_record("/p/c.jpg", angled(0.8, 2))
    writer.upsert([a, b, c])
    writer.link([a, b, c], 0.5, 5)

    writer.upsert([make_record("/p/a.jpg", axis(0), size=999)])  # same embedding: links still valid
    assert writer.stats().links == 3
    writer.upsert([make_record("/p/a.jpg", axis(7))])  # new embedding: its scores are stale

    assert writer.neighbours("/p/a.jpg") == []
    assert [m.path for m in writer.neighbours("/p/b.jpg")] == ["/p/c.jpg"]


def test_link_skips_images_another_process_removed_meanwhile(
    writer: EmbeddedGraphStore, db_path: Path
) -> None:
    a, b = make_record("/p/a.jpg", axis(0)), make_record("/p/b.jpg", angled(0.9, 1))
    writer.upsert([a, b])
    with EmbeddedGraphStore(db_path) as other:
        other.remove(["/p/b.jpg"])

    assert writer.link([a, b], 0.5, 5) == 0
    assert writer.neighbours("/p/a.jpg") == []


def test_upsert_needs_a_recorded_model(db_path: Path) -> None:
    with EmbeddedGraphStore(db_path) as store:
        with pytest.raises(StoreError, match="ensure_model"):
            store.upsert([make_record("/p/a.jpg", axis(0))])
        assert store.stats().model is None and store.nearest(axis(0), 3) == []


def test_query_vectors_are_validated_and_normalised(writer: EmbeddedGraphStore) -> None:
    writer.upsert([make_record("/p/a.jpg", angled(0.6, 1))])

    assert writer.nearest(axis(0) * 7, 1)[0].score == pytest.approx(0.6, abs=1e-6)
    for bad in (np.zeros(DIM), np.ones(DIM + 1), np.full(DIM, np.nan)):
        with pytest.raises(StoreError):
            writer.nearest(bad, 1)


def test_file_states_stream_every_row_once_across_pages(writer: EmbeddedGraphStore) -> None:
    vectors = random_unit_vectors(4500, DIM, seed=9)  # more than two 2000-row pages
    paths = [f"/lib/{'ab'[i % 2]}/{i:05d}.jpg" for i in range(4500)]
    writer.upsert([make_record(p, v, size=i) for i, (p, v) in enumerate(zip(paths, vectors, strict=True))])

    states = list(writer.file_states())
    assert [s.path for s in states] == sorted(paths)
    assert len({s.path for s in writer.file_states(under="/lib/a")}) == 2250


def test_schema_setup_is_idempotent_and_uses_wal(db_path: Path) -> None:
    for _ in range(2):
        with EmbeddedGraphStore(db_path) as store:
            store.ensure_model(MODEL, DIM)
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == SCHEMA_VERSION == 6
        db.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")

    with pytest.raises(StoreError, match="newer"):
        EmbeddedGraphStore(db_path)


def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "store.sqlite3"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError):
        EmbeddedGraphStore(garbage)


def test_a_closed_store_refuses_calls(writer: EmbeddedGraphStore) -> None:
    writer.close()
    with pytest.raises(StoreError, match="closed"):
        writer.stats()
    writer.close()  # closing twice is harmless


def test_open_store_creates_the_data_dir_and_rejects_unknown_backends(tmp_path: Path) -> None:
    data_dir = tmp_path / "deep" / "data"
    config = make_config(data_dir)
    with pytest.raises(StoreMissing, match="nothing is indexed"):
        open_store(config, create=False)
    with open_store(config) as store:
        assert isinstance(store, EmbeddedGraphStore)
        assert store.stats().location == str(data_dir / "store.sqlite3")
    assert (data_dir / "store.sqlite3").is_file()

    with pytest.raises(StoreError, match="unknown store backend 'mongo'"):
        open_store(config, backend="mongo")


# -- schema version 2: indexed_at and the score index ----------------------------------------

# A version-1 file exactly as imgwatch 0.1 created it (its statements, copied here so that
# later changes to the schema cannot change what "a v1 file" means in this test).
V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE images (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    path      TEXT    NOT NULL UNIQUE,
    sha256    TEXT    NOT NULL,
    size      INTEGER NOT NULL,
    mtime_ns  INTEGER NOT NULL,
    width     INTEGER NOT NULL,
    height    INTEGER NOT NULL,
    model     TEXT    NOT NULL,
    embedding BLOB    NOT NULL,
    rev       INTEGER NOT NULL,
    linked    INTEGER NOT NULL DEFAULT 0,
    pick_bar  REAL
);
CREATE INDEX images_by_rev ON images(rev);
CREATE TABLE links (
    a     INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    b     INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    score REAL    NOT NULL,
    PRIMARY KEY (a, b),
    CHECK (a < b)
) WITHOUT ROWID;
CREATE INDEX links_by_b ON links(b);
CREATE TABLE tombstones (id INTEGER PRIMARY KEY, rev INTEGER NOT NULL);
CREATE INDEX tombstones_by_rev ON tombstones(rev);
INSERT INTO meta (key, value) VALUES ('rev', 1), ('schema_version', 1), ('model', 'test-model/v1'), ('dim', 16);
"""


def make_v1_store(db_path: Path) -> None:
    """A v1 file holding a (0.9) and b, linked, as a v1 worker left them."""
    with sqlite3.connect(db_path) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript(V1_SCHEMA)
        for image_id, (path, vector) in enumerate([("/p/a.jpg", axis(0)), ("/p/b.jpg", angled(0.9, 1))], start=1):
            db.execute("INSERT INTO images (id, path, sha256, size, mtime_ns, width, height, model, embedding, rev, "
                       "linked, pick_bar) VALUES (?, ?, ?, 10, 20, 30, 40, ?, ?, 1, 1, 0.5)",
                       (image_id, path, f"sha-{image_id}", MODEL, vector.astype("<f4").tobytes()))
        db.execute("INSERT INTO links (a, b, score) VALUES (1, 2, ?)", (float(axis(0) @ angled(0.9, 1)),))
    db.close()


def test_a_version_1_store_is_migrated_on_open_and_keeps_its_images_and_links(db_path: Path) -> None:
    make_v1_store(db_path)

    with EmbeddedGraphStore(db_path) as store:
        assert store.recorded_model() == (MODEL, DIM)
        a = store.get("/p/a.jpg")
        assert a is not None and (a.sha256, a.size, a.width, a.linked, a.indexed_at) == ("sha-1", 10, 30, True, None)
        assert a.signature == (10, 20, None, None)  # v4: no ctime or inode yet, so the file is checked once
        assert [(m.path, round(m.score, 4)) for m in store.neighbours("/p/a.jpg")] == [("/p/b.jpg", 0.9)]
        assert [(link.a, link.b) for link in store.links_at_least(0.85)] == [("/p/a.jpg", "/p/b.jpg")]
        assert store.nearest(axis(0), 1)[0].path == "/p/a.jpg"
        # An unchanged re-upsert keeps "unknown"; a new embedding is stamped.
        store.upsert([make_record("/p/a.jpg", axis(0))])
        assert store.get("/p/a.jpg").indexed_at is None  # type: ignore[union-attr]
        store.upsert([make_record("/p/b.jpg", angled(0.8, 1))])
        assert store.get("/p/b.jpg").indexed_at is not None  # type: ignore[union-attr]

    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == SCHEMA_VERSION
        columns = [row[1] for row in db.execute("PRAGMA table_info(images)")]
        assert columns.count("indexed_at") == columns.count("ctime_ns") == columns.count("inode") == 1
        indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"links_by_score", "images_by_sha256"} <= indexes  # v2's score index, v3's content hashes
    db.close()
    with EmbeddedGraphStore(db_path) as again:  # opening a migrated file changes nothing
        assert again.stats().images == 2


def test_processes_opening_a_version_1_store_together_migrate_it_once(db_path: Path) -> None:
    make_v1_store(db_path)
    env = {**os.environ, "PYTHONPATH": SRC_DIR}
    script = "import sys; from imgwatch.store import EmbeddedGraphStore; EmbeddedGraphStore(sys.argv[1]).close()"
    openers = [subprocess.Popen([sys.executable, "-c", script, str(db_path)], env=env, stderr=subprocess.PIPE)
               for _ in range(4)]
    for process in openers:
        finish(process)

    with EmbeddedGraphStore(db_path) as store:
        assert store.stats().images == 2 and store.stats().links == 1


def test_a_file_with_the_column_but_no_recorded_version_still_opens(db_path: Path) -> None:
    make_v1_store(db_path)
    with sqlite3.connect(db_path) as db:
        db.execute("ALTER TABLE images ADD COLUMN indexed_at REAL")
        db.execute("DELETE FROM meta WHERE key = 'schema_version'")
    db.close()

    with EmbeddedGraphStore(db_path) as store:
        assert store.stats().images == 2


def test_links_at_least_seeks_the_score_index(writer: EmbeddedGraphStore, db_path: Path) -> None:
    vectors = random_unit_vectors(50, DIM, seed=4)
    records = [make_record(f"/p/{i}.jpg", v) for i, v in enumerate(vectors)]
    writer.upsert(records)
    writer.link(records, threshold=0.0, top_k=5)
    statements: list[str] = []
    writer._db._connection.set_trace_callback(statements.append)  # type: ignore[union-attr]
    assert list(writer.links_at_least(0.5))
    writer._db._connection.set_trace_callback(None)  # type: ignore[union-attr]
    [query] = [s for s in statements if "FROM links" in s]

    with sqlite3.connect(db_path) as db:
        plan = " ".join(str(row[-1]) for row in db.execute("EXPLAIN QUERY PLAN " + query))
    db.close()
    assert "links_by_score" in plan and "SCAN links" not in plan


def test_the_reported_size_is_what_the_files_take_on_disk_not_the_vector_files_reservation(tmp_path: Path) -> None:
    with EmbeddedGraphStore(tmp_path / "store.sqlite3") as store:
        vectors = random_unit_vectors(10)
        store.ensure_model(MODEL, DIM)
        store.upsert([make_record(f"/p/{i}.jpg", vectors[i]) for i in range(10)])
        reported = store.describe()["size_mib"]
    files = [p for p in tmp_path.iterdir() if p.name.startswith("store.sqlite3")]
    apparent = sum(p.stat().st_size for p in files) / 2**20
    on_disk = sum(p.stat().st_blocks * 512 for p in files) / 2**20
    assert on_disk < apparent / 2  # the vector file reserves room it does not use (sparse)
    assert reported == pytest.approx(on_disk, abs=0.1)


def test_a_version_5_store_file_is_migrated_and_keeps_its_images_and_links_and_takes_decisions(db_path: Path) -> None:
    with EmbeddedGraphStore(db_path) as store:
        store.ensure_model(MODEL, DIM)
        records = [make_record("/p/a.jpg", axis(0), sha256="a" * 64), make_record("/p/b.jpg", axis(0), sha256="b" * 64)]
        store.upsert(records)
        store.link(records, threshold=0.5, top_k=5)
    # A version 5 file is this one without the decisions' tables.
    with sqlite3.connect(db_path) as db:
        db.execute("DROP TABLE decision_contents")
        db.execute("DROP TABLE duplicate_decisions")
        db.execute("UPDATE meta SET value = 5 WHERE key = 'schema_version'")
    db.close()

    with EmbeddedGraphStore(db_path) as store:
        assert store.describe()["schema_version"] == SCHEMA_VERSION == 6
        assert store.stats().images == 2 and [m.path for m in store.neighbours("/p/a.jpg")] == ["/p/b.jpg"]
        decision = store.record_decision("not_duplicates", ["a" * 64, "b" * 64])
        assert store.decisions_about(["b" * 64]) == [decision]
