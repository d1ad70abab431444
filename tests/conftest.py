"""Shared fixtures: real servers, real files, real photos."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imgwatch.config import Config
from imgwatch.embedding import EmbeddingModel, load_model
from imgwatch.store import EmbeddedGraphStore, GraphStore, open_store
from imgwatch.valkey_server import EmbeddedValkey
from imgwatch.workqueue import FailureLedger, WorkQueue
from tests.helpers import (
    DIM,
    MODEL,
    PHOTO_NAMES,
    RunningImgwatch,
    make_config,
    process_env,
    write_calibrated_weights,
)
from tests.store.neo4j_stand_in import fake_store

THREAD_EXIT_GRACE_S = 5.0


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves threads running: a leaked observer or pool outlives its test."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + THREAD_EXIT_GRACE_S
    while True:  # threads told to stop may need a moment to finish
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked or time.monotonic() > deadline:
            break
        leaked[0].join(timeout=0.05)
    assert not leaked, f"test left threads running: {sorted(t.name for t in leaked)}"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Environment for imgwatch subprocesses (a module may override it, e.g. to add NOTIFY_SOCKET)."""
    return process_env(tmp_path)


@pytest.fixture
def start_run(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[Path], RunningImgwatch]]:
    """start_run(root) starts `imgwatch run ROOT` as a real process; every one is stopped after the test."""
    started: list[RunningImgwatch] = []

    def start(root: Path) -> RunningImgwatch:
        run = RunningImgwatch(env, root, tmp_path / "run.log")
        started.append(run)
        return run

    yield start
    for run in started:
        run.stop()


@pytest.fixture(scope="session")
def queue_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedValkey]:
    """One real embedded Valkey for the session; tests isolate themselves by queue name."""
    config = make_config(tmp_path_factory.mktemp("queue-server"))
    with EmbeddedValkey(config) as server:
        yield server


@pytest.fixture
def config(tmp_path: Path, queue_server: EmbeddedValkey) -> Config:
    config = make_config(tmp_path / "data")
    config.queue.redis_url = queue_server.url
    config.queue.name = f"test-{uuid.uuid4().hex[:8]}"
    return config


@pytest.fixture
def work_queue(config: Config) -> WorkQueue:
    return WorkQueue.from_config(config)


@pytest.fixture
def failures(work_queue: WorkQueue) -> FailureLedger:
    return FailureLedger.for_queue(work_queue)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty photos folder: the root a test's indexer or daemon watches."""
    folder = tmp_path / "photos"
    folder.mkdir()
    return folder


@pytest.fixture
def store(config: Config) -> Iterator[GraphStore]:
    """The embedded store the test's ``config`` names: empty, no model recorded yet."""
    with open_store(config) as store:
        yield store


@pytest.fixture
def store_with_test_model(store: GraphStore) -> GraphStore:
    """``store`` with the 4-dimensional "test/model" recorded, for tests that store images of it."""
    store.ensure_model("test/model", 4)
    return store


@pytest.fixture(scope="session")
def random_model() -> EmbeddingModel:
    """The real ResNet50 code with seeded random weights, on the CPU, built once per session."""
    return load_model("random", device="cpu", seed=0)


@pytest.fixture(scope="session")
def calibrated_weights(tmp_path_factory: pytest.TempPathFactory, photo_arrays: dict[str, object]) -> Path:
    """A weights file that spreads real photos apart (see write_calibrated_weights), made once."""
    from PIL import Image

    photos = [Image.fromarray(array) for array in photo_arrays.values()]  # type: ignore[call-overload]
    return write_calibrated_weights(tmp_path_factory.mktemp("weights") / "calibrated.pth", photos)


@pytest.fixture(scope="session")
def calibrated_model(calibrated_weights: Path) -> EmbeddingModel:
    """The real ResNet50 code with calibrated weights (different photos score ~0.8-0.98), on the CPU.

    Use it, never ``random_model``, in tests that compare or rank embeddings.
    """
    return load_model(str(calibrated_weights), device="cpu")


@pytest.fixture(scope="session")
def photo_arrays() -> dict[str, object]:
    """scikit-image's real sample photos as RGB arrays."""
    import numpy as np
    from skimage import data

    photos = {}
    for name in PHOTO_NAMES:
        image = getattr(data, name)()
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        photos[name] = image[..., :3]
    return photos


@pytest.fixture
def write_photo(photo_arrays: dict[str, object]) -> Callable[..., Path]:
    """write_photo(path, name="astronaut", fmt=None) saves a real photo to ``path``."""
    from PIL import Image

    def write(path: Path, name: str = "astronaut", fmt: str | None = None) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo_arrays[name]).save(path, format=fmt)  # type: ignore[arg-type]
        return path

    return write


@pytest.fixture(params=["embedded", "neo4j-stand-in"])
def embedded_or_stand_in_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GraphStore]:
    """An empty embedded store, then the Neo4j stand-in, with MODEL/DIM recorded."""
    opened: GraphStore = (EmbeddedGraphStore(tmp_path / "store.sqlite3") if request.param == "embedded"
                          else fake_store()[0])
    opened.ensure_model(MODEL, DIM)
    yield opened
    opened.close()
