"""Changing the model under a real `imgwatch run` (`imgwatch reindex`): search answers throughout, with the
old model's scores until the one switch and the new model's after it; a killed worker, a stopped run and
`--abort` lose nothing; a third model is still refused.

The old model is ResNet50 with random weights (every photo scores ~0.999 against every other), the new one
the calibrated weights (different photos ~0.8-0.98), so the two spaces' scores cannot be mistaken.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from imgwatch.config import Config
from imgwatch.embedding import Embedder, EmbeddingModel
from imgwatch.embedding.identity import model_file_identity, weights_file, weights_identity
from imgwatch.embedding.preprocessing import IMAGENET
from imgwatch.store import open_store
from imgwatch.valkey_server import EmbeddedValkey
from imgwatch.workqueue import WorkQueue
from imgwatch.workqueue.queue import REINDEX_JOB
from tests.embedding.tiny_models import TINY_DIM, write_torchscript
from tests.helpers import (
    RunningImgwatch,
    imgwatch,
    kill_process,
    make_config,
    make_record,
    read_terminal_until,
    run_worker_pids,
    status,
    store_mismatch,
    wait_for,
    wait_until,
)

pytestmark = pytest.mark.e2e

OLD_MODEL = "resnet50/random-seed0"
NAMES = ["astronaut", "coffee", "chelsea", "rocket", "camera"]
SCORE_TOLERANCE = 1e-3  # the workers' batches and the test's single images differ in float rounding


@pytest.fixture
def run_env(env: dict[str, str]) -> dict[str, str]:
    """`imgwatch run` with the old model, torch on the CPU (no engine export), one image per job."""
    env.update({"IMGWATCH_EMBEDDING_ENGINE": "torch", "IMGWATCH_WATCH_BATCH_SIZE": "1"})
    return env


@pytest.fixture
def new_model(calibrated_weights: Path) -> tuple[str, tuple[str, str]]:
    """The new model's identity and weights file record, as `imgwatch reindex --weights FILE` opens its space."""
    identity, file = weights_identity(str(calibrated_weights)), weights_file(str(calibrated_weights))
    assert identity is not None and file is not None
    return identity, file


def vectors_of(model: EmbeddingModel, paths: list[Path]) -> dict[str, np.ndarray]:
    with Embedder(model, batch_size=1) as embedder:
        return {str(path): embedder.embed_file(str(path)).vector for path in paths}


def scores(query: np.ndarray, vectors: dict[str, np.ndarray]) -> dict[str, float]:
    return {path: float(np.dot(query, vector)) for path, vector in vectors.items()}


def assert_scores(found: dict[str, float], expected: dict[str, float], what: str) -> None:
    assert found and set(found) <= set(expected), what
    wrong = {path: (score, expected[path]) for path, score in found.items()
             if abs(score - expected[path]) > SCORE_TOLERANCE}
    assert not wrong, f"{what}: (found, expected) {wrong}"


@pytest.fixture
def data_config(tmp_path: Path) -> Config:
    """A config for the data dir the test's `imgwatch` processes use (see tests.helpers.process_env)."""
    return make_config(tmp_path / "data")


@pytest.fixture
def indexed(run_env: dict[str, str], tmp_path: Path, write_photo: Callable[..., Path],
            start_run: Callable[[Path], RunningImgwatch]) -> Iterator[tuple[Path, list[Path], RunningImgwatch]]:
    """NAMES as photos below a root, indexed with the old model by a running `imgwatch run`."""
    root = tmp_path / "photos"
    photos = [write_photo(root / f"{name}.jpg", name) for name in NAMES]
    run = start_run(root)
    wait_for(lambda: store_mismatch(tmp_path / "data", root) is None, f"the photos indexed; log:\n{run.log()}")
    yield root, photos, run


def test_search_answers_throughout_a_change_of_model_with_one_space_at_a_time(
    indexed: tuple[Path, list[Path], RunningImgwatch], run_env: dict[str, str], data_config: Config,
    tmp_path: Path, write_photo: Callable[..., Path], random_model: EmbeddingModel, calibrated_model: EmbeddingModel,
    calibrated_weights: Path, new_model: tuple[str, tuple[str, str]],
) -> None:
    root, photos, run = indexed
    query = write_photo(tmp_path / "query.jpg", "retina")
    arriving = write_photo(tmp_path / "staging" / "hubble.jpg", "hubble_deep_field")
    everything = [*photos, root / arriving.name]
    arriving_copy = root / arriving.name
    old = vectors_of(random_model, [query, *photos, arriving])
    new = vectors_of(calibrated_model, [query, *photos, arriving])
    for vectors in (old, new):
        vectors[str(arriving_copy)] = vectors.pop(str(arriving))
    queries = {OLD_MODEL: old.pop(str(query)), new_model[0]: new.pop(str(query))}
    expected = {OLD_MODEL: scores(queries[OLD_MODEL], old), new_model[0]: scores(queries[new_model[0]], new)}
    answered = {OLD_MODEL: 0, new_model[0]: 0}

    with open_store(data_config, create=False) as store:
        def search_once() -> str:
            """One query as the CLI makes it: the store's model, then its nearest images."""
            model = store.recorded_model()
            assert model is not None and model[0] in expected
            matches = store.nearest(queries[model[0]], len(everything))
            if store.recorded_model() == model:  # else it switched meanwhile: a CLI search asks again
                assert_scores({m.path: m.score for m in matches}, expected[model[0]], f"a search with {model[0]}")
                answered[model[0]] += 1
            return model[0]

        search_once()
        reindex_env = dict(run_env, IMGWATCH_EMBEDDING_WEIGHTS=str(calibrated_weights))
        started = subprocess.Popen([sys.executable, "-m", "imgwatch", "reindex"], env=reindex_env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        arrived = False
        deadline = time.monotonic() + 240
        while search_once() != new_model[0] or store.pending_space() is not None:
            if not arrived and store.pending_space() is not None:
                arriving.rename(arriving_copy)  # a new photo while the reindex runs: it gets both vectors
                arrived = True
            assert time.monotonic() < deadline, f"the reindex did not finish; log:\n{run.log()}"
            time.sleep(0.05)
        out, err = started.communicate(timeout=60)
        assert started.returncode == 0, err
        assert f"with {new_model[0]}" in err and "`imgwatch status` shows how far" in err
        wait_for(lambda: store_mismatch(tmp_path / "data", root) is None, f"the new photo indexed; log:\n{run.log()}")
        final = {m.path: m.score for m in store.nearest(np.asarray(new[str(photos[0])]), len(everything))}
        assert set(final) == {str(p) for p in everything}

    assert answered[OLD_MODEL] >= 1 and answered[new_model[0]] >= 1, answered
    # The CLI follows the store's model (no weights configured): the new model's scores, and the links of the
    # new space (recomputed at the switch) with the new model's cosines.
    follow_env = {k: v for k, v in run_env.items() if k != "IMGWATCH_EMBEDDING_WEIGHTS"}
    searched = json.loads(imgwatch(follow_env, "search", str(query), "--json").stdout)
    assert_scores({r["path"]: r["score"] for r in searched}, expected[new_model[0]], "imgwatch search after the switch")
    new_vectors = vectors_of(calibrated_model, everything)
    linked = 0
    for photo in photos:
        neighbours = json.loads(imgwatch(follow_env, "similar", str(photo), "--json").stdout)
        assert_scores({n["path"]: n["score"] for n in neighbours} or {str(photo): 0.0},
                      {**scores(new_vectors[str(photo)], new_vectors), str(photo): 0.0}, f"similar {photo.name}")
        linked += len(neighbours)
    assert linked > 0
    report = status(follow_env)
    assert report["reindex"] is None and report["store"]["model"] == new_model[0]
    assert run.stop() == 0, run.log()
    assert "model_switched" in run.log() and "Traceback" not in run.log()



def test_a_reindex_resumes_when_run_starts_and_after_its_worker_is_killed(
    indexed: tuple[Path, list[Path], RunningImgwatch], data_config: Config, tmp_path: Path,
    start_run: Callable[[Path], RunningImgwatch], calibrated_model: EmbeddingModel,
    new_model: tuple[str, tuple[str, str]],
) -> None:
    root, photos, run = indexed
    assert run.stop() == 0, run.log()
    with open_store(data_config, create=False) as store:
        # Opened while nothing runs, so no job is queued for it: as after a crash that lost the queue.
        store.begin_space(new_model[0], 2048, new_model[1])

        run = start_run(root)
        space = store.pending_space()
        assert wait_until(lambda: (space := store.pending_space()) is None or space.embedded >= 1, 180, poll=0.02), \
            f"the reindex did not resume; log:\n{run.log()}"
        space = store.pending_space()
        assert space is not None and not space.complete, "the reindex ended before the worker could be killed"
        for pid in run_worker_pids(run.process.pid):
            kill_process(pid)
        wait_for(lambda: store.pending_space() is None, f"the reindex to finish; log:\n{run.log()}")
        recorded = store.recorded_model()
        assert recorded is not None and recorded[0] == new_model[0]
        new = vectors_of(calibrated_model, photos)
        found = {m.path: m.score for m in store.nearest(new[str(photos[0])], len(photos))}
        assert_scores(found, scores(new[str(photos[0])], new), "a search after the resumed reindex")
    assert "reindex_resumed" in run.log() and "worker_died" in run.log()
    assert run.stop() == 0, run.log()


def test_a_model_file_of_another_dimension_takes_over_once_the_workers_are_restarted_with_it(
    indexed: tuple[Path, list[Path], RunningImgwatch], run_env: dict[str, str], data_config: Config, tmp_path: Path,
    start_run: Callable[[Path], RunningImgwatch],
) -> None:
    root, photos, run = indexed
    model = write_torchscript(tmp_path / "models" / "tiny.pt")  # torch runs it, as the run's engine is torch
    identity = model_file_identity("torchscript", hashlib.sha256(model.read_bytes()).hexdigest(), IMAGENET)
    with_model = {"IMGWATCH_EMBEDDING_MODEL": str(model), "IMGWATCH_EMBEDDING_PREPROCESS_DIM": str(TINY_DIM)}

    # The running workers read the old config: the space opens, and they say they cannot fill it.
    started = imgwatch(dict(run_env, **with_model), "reindex")
    assert f"re-indexing {len(photos)} images with {identity}" in started.stderr, started.stderr
    assert "restart `imgwatch run` (or the workers) with this embedding.model" in started.stderr
    wait_for(lambda: "reindex_model_unavailable" in run.log(), f"the workers' refusal; log:\n{run.log()}")
    assert run.stop() == 0, run.log()

    run_env.update(with_model)  # the next run's config: the model being re-indexed to
    run = start_run(root)
    with open_store(data_config, create=False) as store:
        wait_for(lambda: store.recorded_model() == (identity, TINY_DIM), f"the switch; log:\n{run.log()}")
        assert store.pending_space() is None
    searched = json.loads(imgwatch(run_env, "search", str(photos[0]), "--json").stdout)
    assert {r["path"] for r in searched} == {str(p) for p in photos[1:]}
    assert run.stop() == 0, run.log()
    second_run = run.log().rsplit('"event": "stopped"', 2)[-2]  # the first run's reindex jobs failed, as said
    assert "Traceback" not in second_run and "reindex_model_loaded" in second_run


def unit_vectors(count: int, seed: int) -> list[np.ndarray]:
    vectors = np.random.default_rng(seed).standard_normal((count, 2048)).astype(np.float32)
    return list(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))


def _store_of_two_models(config: Config, images: int = 2, folder: str = "/photos", *, pending: bool = True) -> None:
    """An embedded store of the old model with ``images`` images below ``folder`` and (``pending``) a
    pending space for random seed 1."""
    with open_store(config) as store:
        store.ensure_model(OLD_MODEL, 2048)
        store.upsert([make_record(f"{folder}/{index}.jpg", vector, model=OLD_MODEL)
                      for index, vector in enumerate(unit_vectors(images, seed=0))])
        if pending:
            store.begin_space("resnet50/random-seed1", 2048)


@pytest.fixture
def registered_worker(config: Config, work_queue: WorkQueue) -> Iterator[None]:
    """A worker registered on the test's queue (it takes nothing): what `imgwatch reindex` checks for."""
    worker = SimpleWorker([work_queue.rq_queue], connection=work_queue.connection, serializer=JSONSerializer,
                          name=f"registered-{config.queue.name}")
    worker.register_birth()
    yield
    worker.register_death()


def test_on_a_terminal_reindex_follows_until_the_switch_and_ctrl_c_leaves_it_going_on(
    env: dict[str, str], config: Config, work_queue: WorkQueue, registered_worker: None, tmp_path: Path,
) -> None:
    root = tmp_path / "photos"
    _store_of_two_models(config, folder=str(root), pending=False)
    env.update({"IMGWATCH_QUEUE_REDIS_URL": config.queue.redis_url, "IMGWATCH_QUEUE_NAME": config.queue.name,
                "IMGWATCH_EMBEDDING_SEED": "1"})
    unwatched = imgwatch(env, "reindex", check=False)  # no worker reads the images: it could never complete
    assert unwatched.returncode == 2 and "2 stored image(s) lie below no watched folder" in unwatched.stderr
    env["IMGWATCH_GENERAL_ROOTS"] = str(root)
    same = imgwatch(dict(env, IMGWATCH_EMBEDDING_SEED="0"), "reindex", check=False)
    assert same.returncode == 2 and "the store is embedded with resnet50/random-seed0, the model configured" \
        in same.stderr, same.stderr

    def on_a_terminal(until: bytes) -> tuple[subprocess.Popen[str], bytes, int]:
        terminal, terminal_end = pty.openpty()
        started = subprocess.Popen([sys.executable, "-m", "imgwatch", "reindex"], env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=terminal_end, text=True)
        os.close(terminal_end)
        return started, read_terminal_until(terminal, until), terminal

    following, shown, terminal = on_a_terminal(b"0/2 images")
    following.send_signal(signal.SIGINT)  # what Ctrl-C sends
    assert following.wait(timeout=30) == 130
    shown += read_terminal_until(terminal, b"again to watch")
    os.close(terminal)
    assert b"re-indexing 2 images with resnet50/random-seed1 (0 done, 2 queued)" in shown, shown
    assert b"stopped watching; the re-index goes on in the workers: run `imgwatch reindex` again to watch" in shown
    other = imgwatch(dict(env, IMGWATCH_EMBEDDING_SEED="2"), "reindex", check=False)
    assert other.returncode == 2 and "a re-index to resnet50/random-seed1 is under way" in other.stderr, other.stderr
    [job] = work_queue.fetch_jobs(work_queue.rq_queue.get_job_ids())
    assert job.func_name == REINDEX_JOB and sorted(job.args[0]) == [f"{root}/0.jpg", f"{root}/1.jpg"]

    with open_store(config, create=False) as store:
        space = store.pending_space()
        assert space is not None and space.model == "resnet50/random-seed1"
        stored = store.get_many(job.args[0])
        vectors = unit_vectors(2, seed=1)
        assert store.put_pending([(path, stored[path].sha256, vector)
                                  for path, vector in zip(sorted(stored), vectors, strict=True)]) == 2
    # Complete, and no job left to end with the switch: whoever finds it complete switches, here the command.
    watching, shown, terminal = on_a_terminal(b"(2 done, 0 queued)")
    answer, _ = watching.communicate(timeout=30)
    os.close(terminal)
    assert watching.returncode == 0, shown
    assert answer.startswith("done: the store now uses resnet50/random-seed1"), answer
    with open_store(config, create=False) as store:
        assert store.recorded_model() == ("resnet50/random-seed1", 2048) and store.pending_space() is None


def test_status_shows_a_reindex_under_way_and_abort_drops_it_keeping_the_old_model(
    env: dict[str, str], data_config: Config,
) -> None:
    _store_of_two_models(data_config)
    shown = imgwatch(env, "status").stdout
    assert "reindex: resnet50/random-seed1 0/2 images" in shown
    assert status(env)["reindex"] == {"model": "resnet50/random-seed1", "dim": 2048, "weights_file": None,
                                      "embedded": 0, "total": 2}
    assert "reindex:           resnet50/random-seed1 0/2 images" in imgwatch(env, "doctor").stdout

    dropped = imgwatch(env, "reindex", "--abort")
    assert dropped.stdout.strip() == "dropped the re-index to resnet50/random-seed1; the store keeps " + OLD_MODEL
    with open_store(data_config, create=False) as store:
        assert store.pending_space() is None and store.recorded_model() == (OLD_MODEL, 2048)
    assert status(env)["reindex"] is None
    assert imgwatch(env, "reindex", "--abort").stdout.strip() == "no re-index is under way"


def test_a_third_model_is_refused_with_the_settings_to_use_while_a_reindex_is_under_way(
    env: dict[str, str], data_config: Config, queue_server: EmbeddedValkey, tmp_path: Path,
) -> None:
    _store_of_two_models(data_config)
    env.update({"IMGWATCH_QUEUE_REDIS_URL": queue_server.url, "IMGWATCH_QUEUE_NAME": f"reindex-{tmp_path.name}",
                "IMGWATCH_EMBEDDING_SEED": "2"})
    (tmp_path / "photos").mkdir()
    worker = imgwatch(env, "worker", "--burst", str(tmp_path / "photos"), check=False)
    assert worker.returncode == 2, worker.stderr
    assert "resnet50/random-seed2" in worker.stderr
    assert "--weights random and embedding.seed = 0 (the default)" in worker.stderr
    assert "or the model being re-indexed to, resnet50/random-seed1: --weights random and embedding.seed = 1" \
        in worker.stderr

    with open_store(data_config, create=False) as store:
        store.abort_space()
    worker = imgwatch(env, "worker", "--burst", str(tmp_path / "photos"), check=False)
    assert worker.returncode == 2 and "to change the store's model, run `imgwatch reindex`" in worker.stderr

    query = tmp_path / "query.jpg"
    query.write_bytes(b"")  # refused before the photo is read
    searched = imgwatch(env, "search", str(query), check=False)
    assert searched.returncode == 2 and "--weights random and embedding.seed = 0" in searched.stderr

    # `imgwatch reindex` needs running workers: they do the work.
    env["IMGWATCH_EMBEDDING_SEED"] = "1"
    refused = imgwatch(env, "reindex", check=False)
    assert refused.returncode == 2 and "no worker is running" in refused.stderr
