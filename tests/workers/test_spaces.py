"""A worker's models follow the store's spaces while the model changes, with the real model (random weights
of two seeds: two identities, two vector spaces), a real store and a real queue."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from imgwatch.config import Config
from imgwatch.embedding import Embedder, EmbeddingModel, load_chosen_model
from imgwatch.embedding.identity import ChosenModel, store_model_choice
from imgwatch.errors import WeightsUnavailable
from imgwatch.files import PathFilter
from imgwatch.store import GraphStore, open_store
from imgwatch.workers.indexer import Indexer, LinkPolicy
from imgwatch.workers.reindexer import reindex
from imgwatch.workers.spaces import WHERE, ModelSpaces
from imgwatch.workqueue import FailureLedger, WorkQueue
from tests.helpers import RunningImgwatch, wait_for

OLD, NEW = "resnet50/random-seed0", "resnet50/random-seed1"


@pytest.fixture
def store(config: Config) -> Iterator[GraphStore]:
    with open_store(config) as store:
        store.ensure_model(OLD, 2048)
        yield store


@pytest.fixture
def requeued() -> list[list[str]]:
    return []


@pytest.fixture
def spaces(config: Config, store: GraphStore, work_queue: WorkQueue, failures: FailureLedger,
           random_model: EmbeddingModel, requeued: list[list[str]], tmp_path: Path) -> Iterator[ModelSpaces]:
    """A worker's indexer on the old model, its spaces loading others as a worker does."""
    config.embedding.engine = "torch"  # no export: which models are held is under test, not the engine

    def load(chosen: ChosenModel) -> Embedder:
        return Embedder(load_chosen_model(config, chosen), batch_size=4)

    indexer = Indexer(Embedder(random_model, batch_size=4), store, failures,
                      lambda paths: requeued.append(list(paths)), LinkPolicy(threshold=0.0, top_k=2),
                      PathFilter.create(["jpg"], [".*"]), [str(tmp_path / "photos")])
    spaces = ModelSpaces(config, store, indexer, work_queue, load)
    yield spaces
    spaces.close()


def vector_of(embedder: Embedder, path: Path) -> np.ndarray:
    return embedder.embed_file(str(path)).vector


def test_new_photos_get_both_vectors_and_the_worker_that_completes_the_space_switches_to_it(
    spaces: ModelSpaces, store: GraphStore, tmp_path: Path, write_photo: Callable[..., Path],
) -> None:
    indexer = spaces.indexer
    first = write_photo(tmp_path / "photos" / "a.jpg", "astronaut")
    indexer.index([str(first)])
    store.begin_space(NEW, 2048)
    spaces.follow()
    assert indexer.embedder.identity == OLD and indexer.pending is not None and indexer.pending.identity == NEW

    second = write_photo(tmp_path / "photos" / "b.jpg", "coffee")
    indexer.index([str(second)])  # a new photo while the reindex runs: both vectors
    space = store.pending_space()
    assert space is not None and (space.embedded, space.total) == (1, 2)
    new_vector = vector_of(indexer.pending, second)
    stored = store.get(str(second))
    assert stored is not None
    np.testing.assert_allclose(store.pending_by_hash([stored.sha256])[stored.sha256], new_vector, atol=1e-5)
    old_vector = vector_of(indexer.embedder, second)
    assert store.nearest(old_vector, 1)[0].score == pytest.approx(1.0, abs=1e-5)  # search: the old space

    assert reindex(indexer, [str(first), str(second)]).counts() == {"stored": 2, "reused": 1, "skipped": 0,
                                                                     "handed_over": 0}
    spaces.after_job(progressed=True)
    assert store.pending_space() is None and store.recorded_model() == (NEW, 2048)
    assert indexer.embedder.identity == NEW and indexer.pending is None  # the model it held, no reload
    assert store.nearest(new_vector, 1)[0].score == pytest.approx(1.0, abs=1e-5)  # search: the new space
    assert store.get_many([str(first)])[str(first)].model == NEW


def test_a_worker_drops_an_aborted_space_and_follows_a_switch_it_did_not_fill(
    spaces: ModelSpaces, store: GraphStore, tmp_path: Path, write_photo: Callable[..., Path],
    config: Config,
) -> None:
    indexer = spaces.indexer
    photo = write_photo(tmp_path / "photos" / "a.jpg", "astronaut")
    indexer.index([str(photo)])
    store.begin_space(NEW, 2048)
    spaces.follow()
    assert indexer.pending is not None
    store.abort_space()
    spaces.follow()
    assert indexer.pending is None and indexer.embedder.identity == OLD

    # Another worker fills and switches the space, which this one never looked at: it loads the new model.
    store.begin_space(NEW, 2048)
    with Embedder(load_chosen_model(config, store_model_choice(config, NEW, None, WHERE))) as other:
        stored = store.get(str(photo))
        assert stored is not None
        assert store.put_pending([(str(photo), stored.sha256, vector_of(other, photo))]) == 1
    store.switch_space(0.0, 2)
    spaces.follow()
    assert indexer.embedder.identity == NEW and indexer.pending is None


def test_a_reindex_job_hands_changed_and_vanished_files_to_index_jobs(
    spaces: ModelSpaces, store: GraphStore, tmp_path: Path, write_photo: Callable[..., Path],
    requeued: list[list[str]],
) -> None:
    indexer = spaces.indexer
    changed = write_photo(tmp_path / "photos" / "changed.jpg", "astronaut")
    gone = write_photo(tmp_path / "photos" / "gone.jpg", "coffee")
    kept = write_photo(tmp_path / "photos" / "kept.jpg", "chelsea")
    indexer.index([str(changed), str(gone), str(kept)])
    store.begin_space(NEW, 2048)
    spaces.follow()
    write_photo(changed, "rocket")
    gone.unlink()
    outside = str(tmp_path / "elsewhere.jpg")

    outcome = reindex(indexer, [str(changed), str(gone), str(kept), outside])
    assert (outcome.stored, outcome.skipped) == (1, 1)  # the path outside the roots is never read
    assert sorted(outcome.handed_over) == sorted([str(changed), str(gone)])
    assert requeued == [outcome.handed_over]
    space = store.pending_space()
    assert space is not None and (space.embedded, space.total) == (1, 3)


def test_the_store_s_model_is_loaded_whatever_weights_the_worker_is_configured_with(config: Config) -> None:
    assert "embedding.weights" in config.sources and config.embedding.seed == 0
    chosen = store_model_choice(config, NEW, None, WHERE)
    assert (chosen.weights, chosen.seed, chosen.identity) == ("random", 1, NEW)


def test_a_worker_that_cannot_load_the_model_the_store_switched_to_fails_the_job_and_asks_to_stop(
    spaces: ModelSpaces, store: GraphStore, tmp_path: Path, write_photo: Callable[..., Path],
) -> None:
    indexer = spaces.indexer
    photo = write_photo(tmp_path / "photos" / "a.jpg", "astronaut")
    indexer.index([str(photo)])
    # Switched (by another machine's workers) to a weights file this one does not have.
    gone = str(tmp_path / "elsewhere" / "new.pth")
    store.begin_space("resnet50/file-0123456789ab", 2048, (gone, "0123456789ab" + "0" * 52))
    stored = store.get(str(photo))
    assert stored is not None
    store.put_pending([(str(photo), stored.sha256, vector_of(indexer.embedder, photo))])
    store.switch_space(0.0, 2)
    stop_asked: list[bool] = []
    spaces.on_cannot_follow = lambda: stop_asked.append(True)

    with pytest.raises(WeightsUnavailable, match=f"made with the weights file {gone}, which no longer exists"):
        spaces.follow()
    assert stop_asked == [True] and spaces.cannot_follow is not None
    assert indexer.embedder.identity == OLD  # nothing embeds in the new space with the old model


def test_the_worker_process_exits_saying_which_setting_when_it_cannot_follow_a_switch(
    config: Config, env: dict[str, str], work_queue: WorkQueue, tmp_path: Path, write_photo: Callable[..., Path],
) -> None:
    root = tmp_path / "photos"
    photo = write_photo(root / "a.jpg", "astronaut")
    env.update({"IMGWATCH_QUEUE_REDIS_URL": config.queue.redis_url, "IMGWATCH_QUEUE_NAME": config.queue.name,
                "IMGWATCH_EMBEDDING_ENGINE": "torch"})
    worker = RunningImgwatch(env, root, tmp_path / "worker.log", command="worker")
    try:
        wait_for(lambda: '"worker_ready"' in worker.log(), f"the worker; log:\n{worker.log()}")
        work_queue.enqueue_paths([str(photo)], batch_size=1)
        wait_for(lambda: '"job_done"' in worker.log(), f"the photo indexed; log:\n{worker.log()}")
        with open_store(config, create=False) as store:  # switched by workers elsewhere, to weights not here
            gone = str(tmp_path / "elsewhere" / "new.pth")
            store.begin_space("resnet50/file-0123456789ab", 2048, (gone, "0123456789ab" + "0" * 52))
            stored = store.get(str(photo))
            assert stored is not None
            store.put_pending([(str(photo), stored.sha256, np.eye(2048, dtype=np.float32)[0])])
            store.switch_space(0.0, 2)
        photo.touch()
        work_queue.enqueue_paths([str(photo)], batch_size=1)
        assert worker.process.wait(timeout=120) == 2, worker.log()
    finally:
        worker.stop()
    assert f"made with the weights file {gone}, which no longer exists" in worker.log().splitlines()[-1]
