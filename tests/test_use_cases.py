"""The use cases the CLI and the web page share: what a search refuses before its model loads, the
photo itself left out, similar with the reason a path failed, duplicates' threshold, forget's rule
for which folders count as watched when the queue is out of reach."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from imgwatch.config import Config
from imgwatch.errors import (
    ImageNotFound,
    ImgwatchError,
    ModelMismatchError,
    QueueUnavailable,
    StillWatched,
    StoreMissing,
    ThresholdBelowLinks,
)
from imgwatch.photos.budget import DecodeBudget
from imgwatch.store import GraphStore, open_store
from imgwatch.use_cases import QueryModel, duplicate_groups, forget, search_with_file, search_with_photo, similar
from imgwatch.workqueue import FailureLedger, WorkQueue
from imgwatch.workqueue.worker_roots import WorkerRoots
from tests.helpers import angled, axis, make_config, make_record, random_unit_vectors

RANDOM_SEED0 = "resnet50/random-seed0"  # what make_config's weights give
RESNET50_DIM = 2048


@pytest.fixture
def empty_store(config: Config) -> Iterator[GraphStore]:
    """An embedded store on the test's data dir, with nothing indexed."""
    with open_store(config) as opened:
        yield opened


# -- search -------------------------------------------------------------------------------------


def test_a_store_with_nothing_indexed_is_refused_before_anything_loads_or_decodes(
    tmp_path: Path, empty_store: GraphStore, config: Config
) -> None:
    config.embedding.weights = str(tmp_path / "nowhere.pth")  # loading these would fail otherwise
    model = QueryModel(config, "search again")
    with pytest.raises(StoreMissing, match="nothing is indexed yet"):
        search_with_photo(empty_store, model, b"not a photo", "x.jpg", 5)
    with pytest.raises(StoreMissing, match="nothing is indexed yet"):
        search_with_file(empty_store, model, str(tmp_path / "nowhere.jpg"), 5)


def test_weights_of_another_model_than_the_stores_are_refused_before_they_load(
    tmp_path: Path, empty_store: GraphStore, config: Config
) -> None:
    empty_store.ensure_model(RANDOM_SEED0, RESNET50_DIM)
    not_weights = tmp_path / "other.pth"
    not_weights.write_bytes(b"no state_dict: loading it would fail another way")
    config.embedding.weights = str(not_weights)
    with pytest.raises(ModelMismatchError, match="search again with --weights random"):
        search_with_photo(empty_store, QueryModel(config, "search again"), b"not a photo", "x.jpg", 5)


@pytest.fixture
def indexed_coffee(tmp_path: Path, empty_store: GraphStore, write_photo: Callable[..., Path]) -> tuple[Path, Path]:
    """coffee.jpg indexed with a copy of it (the same bytes) and three other photos' records."""
    coffee = write_photo(tmp_path / "photos" / "coffee.jpg", "coffee")
    copy = tmp_path / "photos" / "backup" / "coffee.jpg"
    copy.parent.mkdir()
    shutil.copyfile(coffee, copy)
    sha256 = hashlib.sha256(coffee.read_bytes()).hexdigest()
    vectors = random_unit_vectors(5, RESNET50_DIM)
    records = [make_record(str(coffee), vectors[0], model=RANDOM_SEED0, sha256=sha256),
               make_record(str(copy), vectors[1], model=RANDOM_SEED0, sha256=sha256),
               *(make_record(str(tmp_path / "photos" / f"other-{n}.jpg"), vectors[n], model=RANDOM_SEED0)
                 for n in range(2, 5))]
    empty_store.ensure_model(RANDOM_SEED0, RESNET50_DIM)
    empty_store.upsert(records)
    return coffee, copy


def test_a_search_leaves_the_photo_itself_out_the_same_whoever_holds_the_resources(
    tmp_path: Path, empty_store: GraphStore, config: Config, indexed_coffee: tuple[Path, Path]
) -> None:
    coffee, copy = indexed_coffee
    config.embedding.engine = "torch"  # no export: the rule is under test, not the engine
    model = QueryModel(config, "search again")
    by_file = search_with_file(empty_store, model, str(coffee), 4)  # all four others are asked for: the copy is seen
    assert by_file.itself == [str(coffee), str(copy)]
    assert sorted(m.path for m in by_file.matches) == [str(tmp_path / "photos" / f"other-{n}.jpg") for n in (2, 3, 4)]

    assert model.for_store(empty_store) is model.for_store(empty_store)  # loaded once
    with ThreadPoolExecutor(max_workers=1) as forward:  # as the web page passes its budget and forward thread
        uploaded = search_with_photo(empty_store, model, coffee.read_bytes(), "upload.jpg", 4,
                                     budget=DecodeBudget(), forward=forward)
    assert uploaded.matches == by_file.matches
    assert sorted(uploaded.itself) == sorted(by_file.itself)  # by its content alone

    with open_store(make_config(tmp_path / "other-data")) as other:  # the store's model changed since it loaded
        other.ensure_model("resnet50/random-seed1", RESNET50_DIM)
        with pytest.raises(ModelMismatchError, match="random-seed1"):
            model.for_store(other)


def test_the_query_model_follows_the_store_when_a_reindex_switches_it(
    tmp_path: Path, empty_store: GraphStore, config: Config, indexed_coffee: tuple[Path, Path]
) -> None:
    coffee, _copy = indexed_coffee
    config.embedding.engine = "torch"
    del config.sources["embedding.weights"]  # no weights configured: the store's own
    model = QueryModel(config, "search again")
    assert model.for_store(empty_store).identity == RANDOM_SEED0

    empty_store.begin_space("resnet50/random-seed1", RESNET50_DIM)  # what `imgwatch reindex` opens
    stored = empty_store.get_many([state.path for state in empty_store.file_states()])
    vectors = random_unit_vectors(len(stored), RESNET50_DIM, seed=1)
    empty_store.put_pending([(path, image.sha256, vector) for (path, image), vector in zip(stored.items(), vectors,
                                                                                            strict=True)])
    empty_store.switch_space(0.9, 2)
    assert model.for_store(empty_store).identity == "resnet50/random-seed1"
    assert len(search_with_file(empty_store, model, str(coffee), 4).matches) == 3


# -- similar, duplicates --------------------------------------------------------------------------


def test_similar_is_best_first_and_says_why_a_path_is_not_indexed_when_it_failed(
    tmp_path: Path, empty_store: GraphStore, config: Config, failures: FailureLedger
) -> None:
    records = [make_record("/p/a.jpg", axis(0)), make_record("/p/b.jpg", angled(0.99, 1)),
               make_record("/p/c.jpg", angled(0.9, 2))]
    empty_store.ensure_model(records[0].model, len(records[0].embedding))
    empty_store.upsert(records)
    empty_store.link(records, 0.5, 5)
    assert [m.path for m in similar(empty_store, "/p/a.jpg")] == ["/p/b.jpg", "/p/c.jpg"]
    assert [m.path for m in similar(empty_store, "/p/a.jpg", 1)] == ["/p/b.jpg"]

    failures.record("/p/broken.jpg", "cannot decode /p/broken.jpg: truncated", 10, 1)
    with pytest.raises(ImgwatchError, match=r"^/p/broken.jpg is not indexed: it failed: .*truncated") as failed:
        similar(empty_store, "/p/broken.jpg", reasons_from=config)
    assert not isinstance(failed.value, ImageNotFound)
    with pytest.raises(ImageNotFound):
        similar(empty_store, "/p/broken.jpg")  # the web page answers 404
    with pytest.raises(ImageNotFound):
        similar(empty_store, "/p/never.jpg", reasons_from=config)


def test_duplicates_below_the_links_threshold_are_refused(empty_store: GraphStore) -> None:
    records = [make_record("/p/a.jpg", axis(0)), make_record("/p/a-copy.jpg", angled(0.99, 1))]
    empty_store.ensure_model(records[0].model, len(records[0].embedding))
    empty_store.upsert(records)
    empty_store.link(records, 0.8, 5)
    [group] = duplicate_groups(empty_store, 0.95, 0.8)
    assert {image.path for image in group.images} == {"/p/a.jpg", "/p/a-copy.jpg"}
    with pytest.raises(ThresholdBelowLinks):
        duplicate_groups(empty_store, 0.5, 0.8)


# -- forget ---------------------------------------------------------------------------------------


def forget_config(tmp_path: Path, **queue: str) -> Config:
    """A store with an image in /photos (general.roots) and two in /old, which was watched once."""
    config = make_config(tmp_path / "data", **{"general.roots": [str(tmp_path / "photos")]})
    for key, value in queue.items():
        setattr(config.queue, key, value)
    records = [make_record(str(tmp_path / "photos" / "a.jpg"), axis(0)),
               make_record(str(tmp_path / "old" / "b.jpg"), axis(1)),
               make_record(str(tmp_path / "old" / "2019" / "c.jpg"), axis(2))]
    with open_store(config) as store:
        store.ensure_model(records[0].model, len(records[0].embedding))
        store.upsert(records)
    return config


def stored(config: Config) -> int:
    with open_store(config, create=False) as store:
        return store.stats().images


def test_forget_asks_the_queue_which_folders_running_workers_index_and_clears_their_failures(
    tmp_path: Path, config: Config, failures: FailureLedger
) -> None:
    config = forget_config(tmp_path, redis_url=config.queue.redis_url, name=config.queue.name)
    failures.record(str(tmp_path / "old" / "broken.jpg"), "cannot decode", 10, 1)
    roots = WorkerRoots.for_queue(WorkQueue.from_config(config))
    roots.announce("a-worker", [str(tmp_path / "old" / "2019")], ttl=60)
    with pytest.raises(StillWatched, match="holds the watched folder"):
        list(forget(config, [str(tmp_path / "old")]))
    roots.withdraw("a-worker")
    [(folder, forgotten)] = forget(config, [str(tmp_path / "old")])
    assert (folder, forgotten.images, forgotten.failures) == (str(tmp_path / "old"), 2, 1)
    assert stored(config) == 1


def test_with_an_external_queue_out_of_reach_forget_refuses(tmp_path: Path) -> None:
    config = forget_config(tmp_path, redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(QueueUnavailable, match="forget needs the queue"):
        list(forget(config, [str(tmp_path / "old")]))
    assert stored(config) == 3


def test_with_the_embedded_queue_not_running_forget_goes_by_general_roots_and_keeps_failure_records(
    tmp_path: Path,
) -> None:
    config = forget_config(tmp_path)
    [(_folder, forgotten)] = forget(config, [str(tmp_path / "old")])
    assert (forgotten.images, forgotten.failures) == (2, None)
    with pytest.raises(StillWatched, match="it is a watched folder"):
        list(forget(config, [str(tmp_path / "photos")]))


def test_while_imgwatch_run_holds_the_data_dir_but_its_queue_is_out_of_reach_forget_refuses(tmp_path: Path) -> None:
    config = forget_config(tmp_path)
    with config.data_dir.exclusive_run_lock():  # as `imgwatch run` holds it, its queue down a moment
        with pytest.raises(QueueUnavailable, match="`imgwatch run` is using .* try again in a moment"):
            list(forget(config, [str(tmp_path / "old")]))
    assert stored(config) == 3

