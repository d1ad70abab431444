"""The embedded store's memory-mapped vector files: shared by processes, caught up, rebuilt when untrustworthy.

Real files and real processes: a second Python process opens the same store, crashes are
real SIGKILLs at the moment in question, damage is done to the files on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import imgwatch
from imgwatch.store import EmbeddedGraphStore, Match
from imgwatch.store.embedded.shared_vectors import SLOT_STEP
from tests.helpers import DIM, MODEL, angled, axis, make_record, random_unit_vectors

SRC_DIR = str(Path(imgwatch.__file__).resolve().parents[1])
ENV = {**os.environ, "PYTHONPATH": SRC_DIR, "OPENBLAS_NUM_THREADS": "1"}

# Another process answering nearest() queries on one store, one JSON line in, one out.
READER_SCRIPT = r"""
import json, os, sys
import numpy as np
from imgwatch.store import EmbeddedGraphStore

store = EmbeddedGraphStore(sys.argv[1])
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    matches = store.nearest(np.asarray(request["vector"], dtype=np.float32), request["k"])
    vectors_file = os.stat(store.vectors.vectors_path)
    print(json.dumps({"matches": [[m.path, m.score] for m in matches], "rebuilds": store.vectors.rebuilds,
                      "vectors_inode": vectors_file.st_ino}), flush=True)
"""

# A writer that dies by SIGKILL at a chosen point: right after its commit, before the vector
# files are touched ("after_commit"), or after the rows were written but before the header
# records the new revision ("before_header").
CRASHING_WRITER_SCRIPT = r"""
import os, signal, sys
import numpy as np
from imgwatch.store import EmbeddedGraphStore, ImageRecord
from imgwatch.store.embedded import shared_vectors, store as store_module

db, when, dim, model = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
vectors = np.load(sys.argv[5])
die = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
store = EmbeddedGraphStore(db)
if when == "after_commit":
    store_module.EmbeddedGraphStore._update_vectors = die
else:  # a removal left to the next update too, so the interrupted one has a tombstone to apply
    update = store_module.EmbeddedGraphStore._update_vectors
    store_module.EmbeddedGraphStore._update_vectors = lambda self: None
    store.remove(["/p/0.jpg"])
    store_module.EmbeddedGraphStore._update_vectors = update
    shared_vectors._MappedFiles.write_header = die
store.upsert([ImageRecord(path=f"/new/{i}.jpg", sha256=str(i), size=1, mtime_ns=1, width=1, height=1,
                          model=model, embedding=vector) for i, vector in enumerate(vectors)])
sys.exit(3)  # not reached
"""


class Reader:
    """A second process searching the store."""

    def __init__(self, db_path: Path) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", READER_SCRIPT, str(db_path)], env=ENV,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert json.loads(self._line()) == {"ready": True}

    def nearest(self, vector: np.ndarray, k: int) -> dict[str, object]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"vector": vector.tolist(), "k": k}) + "\n")
        self.process.stdin.flush()
        answer: dict[str, object] = json.loads(self._line())
        return answer

    def paths(self, vector: np.ndarray, k: int) -> list[str]:
        return [path for path, _ in self.nearest(vector, k)["matches"]]  # type: ignore[attr-defined]

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"reader died with {self.process.wait()}"
        return line

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        assert self.process.wait(timeout=30) == 0


@pytest.fixture
def embedded_store(db_path: Path) -> Iterator[EmbeddedGraphStore]:
    """An empty EmbeddedGraphStore at ``db_path`` with MODEL/DIM recorded."""
    opened = EmbeddedGraphStore(db_path)
    try:
        opened.ensure_model(MODEL, DIM)
        yield opened
    finally:
        opened.close()


def fill(store: EmbeddedGraphStore, vectors: np.ndarray, prefix: str = "/p", batch: int = 2000) -> None:
    for start in range(0, len(vectors), batch):
        numbers = range(start, min(start + batch, len(vectors)))
        store.upsert([make_record(f"{prefix}/{i}.jpg", vectors[i]) for i in numbers])


def results(store: EmbeddedGraphStore, queries: np.ndarray, k: int = 10) -> list[list[tuple[str, float]]]:
    return [[(m.path, round(m.score, 5)) for m in store.nearest(q, k)] for q in queries]


def vector_files(db_path: Path) -> list[Path]:
    return [Path(f"{db_path}.vectors"), Path(f"{db_path}.vectors-live")]


def test_a_second_process_follows_each_write_without_reloading_and_never_sees_deleted_images(
    embedded_store: EmbeddedGraphStore, db_path: Path
) -> None:
    embedded_store.upsert([make_record("/p/a.jpg", axis(0))])
    reader = Reader(db_path)
    try:
        first = reader.nearest(axis(0), 5)
        assert [path for path, _ in first["matches"]] == ["/p/a.jpg"]  # type: ignore[attr-defined]

        embedded_store.upsert([make_record("/p/b.jpg", angled(0.9, 1))])
        assert reader.paths(axis(0), 5) == ["/p/a.jpg", "/p/b.jpg"]
        embedded_store.remove(["/p/a.jpg"])
        assert reader.paths(axis(0), 5) == ["/p/b.jpg"]
        embedded_store.upsert([make_record("/p/b.jpg", axis(0))])  # re-embedded in place: same id, same slot
        [[path, score]] = reader.nearest(axis(0), 5)["matches"]  # type: ignore[misc]
        assert path == "/p/b.jpg" and score == pytest.approx(1.0, abs=1e-6)

        # Past the files' first capacity: they grow, and the reader remaps instead of rebuilding.
        many = random_unit_vectors(SLOT_STEP + 500, DIM, seed=11)
        fill(embedded_store, many, prefix="/many", batch=5000)
        embedded_store.remove(["/many/7.jpg"])
        last = reader.nearest(many[-1], 3)
        assert [p for p, _ in last["matches"]][0] == f"/many/{len(many) - 1}.jpg"  # type: ignore[index]
        assert "/many/7.jpg" not in reader.paths(many[7], 3)
        assert last["rebuilds"] == 0 and last["vectors_inode"] == first["vectors_inode"]
    finally:
        reader.close()
    assert embedded_store.vectors.rebuilds == 1  # the files were created once, by the first writer


def test_results_equal_brute_force_over_thousands_of_vectors(embedded_store: EmbeddedGraphStore) -> None:
    vectors = random_unit_vectors(3000, DIM, seed=1)
    fill(embedded_store, vectors, batch=700)
    removed = list(range(0, 3000, 7))
    embedded_store.remove([f"/p/{i}.jpg" for i in removed])
    replaced = [i for i in range(3, 3000, 11) if i % 7]  # re-embedded in place
    fresh = random_unit_vectors(len(replaced), DIM, seed=2)
    embedded_store.upsert([make_record(f"/p/{i}.jpg", v) for i, v in zip(replaced, fresh, strict=True)])
    expected_vectors = vectors.copy()
    expected_vectors[replaced] = fresh
    alive = np.array(sorted(set(range(3000)) - set(removed)))

    for q, query in enumerate(random_unit_vectors(20, DIM, seed=3)):
        exclude = [f"/p/{i}.jpg" for i in alive[q * 5 : q * 5 + 3]]
        candidates = np.array([i for i in alive if f"/p/{i}.jpg" not in exclude])
        scores = expected_vectors[candidates].astype(np.float64) @ query.astype(np.float64)
        best = np.argsort(-scores, kind="stable")[:25]
        found = embedded_store.nearest(query, 25, exclude=exclude)
        assert [m.path for m in found] == [f"/p/{i}.jpg" for i in candidates[best]]
        np.testing.assert_allclose([m.score for m in found], scores[best], atol=1e-5)
    assert len(embedded_store.nearest(vectors[1], 10_000)) == len(alive)


def test_equal_scores_come_in_id_order(embedded_store: EmbeddedGraphStore) -> None:
    embedded_store.upsert([make_record(f"/p/{name}.jpg", axis(1)) for name in ("c", "a", "b")])  # ids 1, 2, 3
    assert [m.path for m in embedded_store.nearest(axis(1), 3)] == ["/p/c.jpg", "/p/a.jpg", "/p/b.jpg"]


@pytest.mark.parametrize("damage", ["delete", "truncate vectors", "truncate live flags", "corrupt header",
                                    "empty live file", "delete lock file"])
def test_damaged_or_missing_files_are_rebuilt_with_the_same_results(
    embedded_store: EmbeddedGraphStore, db_path: Path, damage: str
) -> None:
    fill(embedded_store, random_unit_vectors(1500, DIM, seed=4))
    embedded_store.remove(["/p/3.jpg", "/p/1499.jpg"])
    queries = random_unit_vectors(5, DIM, seed=5)
    before = results(embedded_store, queries)
    embedded_store.close()

    vectors_file, live_file = vector_files(db_path)
    if damage == "delete":
        vectors_file.unlink()
        live_file.unlink()
    elif damage == "truncate vectors":
        os.truncate(vectors_file, 4096 + 1000 * 4 * DIM)  # the header and 1000 of 1501 slots
    elif damage == "truncate live flags":
        os.truncate(live_file, 100)
    elif damage == "corrupt header":
        with open(vectors_file, "r+b") as file:
            file.seek(24)  # inside the revision field: the checksum no longer matches
            file.write(b"\x7f\x7f")
    elif damage == "empty live file":
        os.truncate(live_file, 0)
    else:
        Path(f"{db_path}.vectors-lock").unlink()

    with EmbeddedGraphStore(db_path) as reopened:
        assert results(reopened, queries) == before
        assert reopened.vectors.rebuilds == (0 if damage == "delete lock file" else 1)
        assert results(reopened, queries) == before and reopened.vectors.rebuilds <= 1  # once


def test_another_store_file_put_in_place_gets_its_own_vectors(tmp_path: Path, db_path: Path) -> None:
    other_path = tmp_path / "other" / "store.sqlite3"
    other_path.parent.mkdir()
    with EmbeddedGraphStore(db_path) as first, EmbeddedGraphStore(other_path) as other:
        for opened in (first, other):
            opened.ensure_model(MODEL, DIM)
        fill(first, random_unit_vectors(50, DIM, seed=6), prefix="/first")
        # The same number of images and revisions: only the identity tells them apart.
        fill(other, random_unit_vectors(50, DIM, seed=7), prefix="/other")
        expected = results(other, random_unit_vectors(3, DIM, seed=8))
        assert results(first, random_unit_vectors(3, DIM, seed=8)) != expected
    shutil.copyfile(other_path, db_path)  # checkpointed on close: the file holds everything

    with EmbeddedGraphStore(db_path) as replaced:
        assert results(replaced, random_unit_vectors(3, DIM, seed=8)) == expected
        assert replaced.vectors.rebuilds == 1


def test_an_older_copy_of_the_store_put_back_is_detected_by_its_revision(
    embedded_store: EmbeddedGraphStore, db_path: Path, tmp_path: Path
) -> None:
    fill(embedded_store, random_unit_vectors(20, DIM, seed=9))
    embedded_store.close()
    backup = tmp_path / "backup.sqlite3"
    shutil.copyfile(db_path, backup)
    with EmbeddedGraphStore(db_path) as later:
        later.remove(["/p/1.jpg"])  # the files now reflect one more revision than the backup
        later.upsert([make_record("/p/late.jpg", axis(0))])
    shutil.copyfile(backup, db_path)

    with EmbeddedGraphStore(db_path) as restored:
        assert [m.path for m in restored.nearest(random_unit_vectors(20, DIM, seed=9)[1], 1)] == ["/p/1.jpg"]
        assert "/p/late.jpg" not in {m.path for m in restored.nearest(axis(0), 100)}
        assert restored.vectors.rebuilds == 1


def test_an_open_reader_follows_when_the_revision_goes_back_or_the_model_changes(
    embedded_store: EmbeddedGraphStore, db_path: Path
) -> None:
    for i in range(1, 4):  # one revision each
        embedded_store.upsert([make_record(f"/p/{i}.jpg", angled(0.9, i))])
    with EmbeddedGraphStore(db_path) as reader:
        assert len(reader.nearest(axis(0), 5)) == 3
        with sqlite3.connect(db_path) as raw:  # as if the file were replaced by an older copy
            raw.execute("UPDATE meta SET value = 2 WHERE key = 'rev'")
        raw.close()
        assert len(reader.nearest(axis(0), 5)) == 3
        assert reader.vectors.rebuilds == 1

        embedded_store.remove([f"/p/{i}.jpg" for i in range(1, 4)])
        embedded_store.ensure_model("other-model/v2", 8)
        embedded_store.upsert([make_record("/p/small.jpg", axis(1, dim=8), model="other-model/v2")])
        assert [m.path for m in reader.nearest(axis(1, dim=8), 5)] == ["/p/small.jpg"]
        assert reader.vectors.rebuilds + embedded_store.vectors.rebuilds == 3  # created, revision back, dim 8


def test_rows_written_to_sqlite_behind_the_files_back_are_caught_up(
    embedded_store: EmbeddedGraphStore, db_path: Path
) -> None:
    fill(embedded_store, random_unit_vectors(10, DIM, seed=10))
    with sqlite3.connect(db_path) as raw:  # what a writer that died after its commit leaves
        rev = raw.execute("UPDATE meta SET value = value + 1 WHERE key = 'rev' RETURNING value").fetchone()[0]
        raw.execute("INSERT INTO images (path, sha256, size, mtime_ns, width, height, model, embedding, rev) "
                    "VALUES ('/p/raw.jpg', 'x', 1, 1, 1, 1, ?, ?, ?)", (MODEL, axis(5).tobytes(), rev))
        raw.execute("INSERT INTO tombstones (id, rev) VALUES (1, ?)", (rev,))
        raw.execute("DELETE FROM images WHERE id = 1")
    raw.close()

    found = embedded_store.nearest(axis(5), 20)
    assert found[0] == Match("/p/raw.jpg", pytest.approx(1.0, abs=1e-6))
    assert "/p/0.jpg" not in {m.path for m in found} and len(found) == 10
    assert embedded_store.vectors.rebuilds == 1  # caught up, not rebuilt


@pytest.mark.parametrize("when", ["after_commit", "before_header"])
def test_a_writer_killed_between_its_commit_and_the_file_update_is_repaired(
    embedded_store: EmbeddedGraphStore, db_path: Path, tmp_path: Path, when: str
) -> None:
    fill(embedded_store, random_unit_vectors(10, DIM, seed=12))
    new_vectors = random_unit_vectors(30, DIM, seed=13)
    np.save(tmp_path / "new.npy", new_vectors)
    command = [sys.executable, "-c", CRASHING_WRITER_SCRIPT, str(db_path), when, str(DIM), MODEL,
               str(tmp_path / "new.npy")]
    crashed = subprocess.run(command, env=ENV, capture_output=True, timeout=60)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()

    with EmbeddedGraphStore(db_path) as after:
        assert after.stats().images == 40 - (when == "before_header")
        for i in (0, 17, 29):
            assert after.nearest(new_vectors[i], 1)[0] == Match(f"/new/{i}.jpg", pytest.approx(1.0, abs=1e-6))
        assert len(after.nearest(axis(0), 100)) == after.stats().images
        assert after.vectors.rebuilds == 0  # caught up from the header's revision


def test_threads_sharing_one_store_search_while_another_store_writes(
    embedded_store: EmbeddedGraphStore, db_path: Path
) -> None:
    vectors = random_unit_vectors(400, DIM, seed=14)
    fill(embedded_store, vectors[:200])
    failures: list[BaseException] = []
    with EmbeddedGraphStore(db_path) as shared:

        def search() -> None:
            try:
                for i in range(60):
                    assert shared.nearest(vectors[i], 1)[0].path == f"/p/{i}.jpg"
            except BaseException as exc:  # reported below
                failures.append(exc)

        threads = [threading.Thread(target=search) for _ in range(4)]
        for thread in threads:
            thread.start()
        for start in range(200, 400, 20):
            embedded_store.upsert([make_record(f"/p/{i}.jpg", vectors[i]) for i in range(start, start + 20)])
        for thread in threads:
            thread.join(timeout=60)
        assert not failures, failures
        assert len(shared.nearest(vectors[0], 1000)) == 400
