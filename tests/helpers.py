"""Helpers the tests share, importable as ``tests.helpers`` (fixtures live in conftest.py).

Store vectors are built with known angles so expected cosines are exact numbers:
``angled(c, axis)`` is ``c·e0 + sqrt(1-c²)·e_axis``, hence its cosine with ``e0`` is
``c`` and its cosine with ``angled(d, other_axis)`` is ``c·d``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imgwatch.config import Config, load_config
from imgwatch.store import GraphStore, ImageRecord, open_store

PHOTO_NAMES = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
               "retina", "camera"]


def make_config(data_dir: Path, **overrides: object) -> Config:
    """A Config as the CLI builds it, on a private data dir, without reading the user's files."""
    values: dict[str, object] = {"general.data_dir": str(data_dir), "embedding.weights": "random",
                                 "embedding.device": "cpu", "general.log_format": "json"}
    values.update(overrides)
    return load_config(overrides=values, environ={})


MODEL = "test-model/v1"
DIM = 16

NEO4J_SKIP_REASON = (
    "set IMGWATCH_TEST_NEO4J_URI (+ IMGWATCH_TEST_NEO4J_USER / IMGWATCH_TEST_NEO4J_PASSWORD) "
    "to run the contract tests on Neo4j"
)


def axis(index: int, dim: int = DIM) -> np.ndarray:
    vector = np.zeros(dim, dtype=np.float32)
    vector[index] = 1.0
    return vector


def angled(cosine: float, other_axis: int, dim: int = DIM) -> np.ndarray:
    """A unit vector whose cosine with e0 is ``cosine``, in the plane of e0 and e_other_axis."""
    assert other_axis != 0
    vector = np.zeros(dim, dtype=np.float64)
    vector[0] = cosine
    vector[other_axis] = math.sqrt(1.0 - cosine * cosine)
    return vector.astype(np.float32)


def make_record(
    path: str,
    vector: np.ndarray,
    *,
    model: str = MODEL,
    size: int = 1000,
    mtime_ns: int = 1_700_000_000_000_000_000,
    width: int = 640,
    height: int = 480,
    sha256: str | None = None,
    ctime_ns: int | None = None,
    inode: int | None = None,
) -> ImageRecord:
    return ImageRecord(
        path=path,
        sha256=sha256 or hashlib.sha256(path.encode() + np.asarray(vector).tobytes()).hexdigest(),
        size=size,
        mtime_ns=mtime_ns,
        width=width,
        height=height,
        model=model,
        embedding=vector,
        ctime_ns=ctime_ns,
        inode=inode,
    )


def random_unit_vectors(count: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    normalised: np.ndarray = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return normalised


def backend_config(kind: str, tmp_path: Path) -> Config:
    """A config for ``kind``; for Neo4j the test server's, or the test is skipped."""
    config = make_config(tmp_path / "data", **{"general.store": kind})
    if kind == "neo4j":
        uri = os.environ.get("IMGWATCH_TEST_NEO4J_URI")
        if not uri:
            pytest.skip(NEO4J_SKIP_REASON)
        config.neo4j.uri = uri
        config.neo4j.user = os.environ.get("IMGWATCH_TEST_NEO4J_USER", "neo4j")
        config.neo4j.database = os.environ.get("IMGWATCH_TEST_NEO4J_DATABASE", "neo4j")
        password_file = tmp_path / "neo4j-password"
        password_file.write_text(os.environ.get("IMGWATCH_TEST_NEO4J_PASSWORD", "") + "\n")
        config.neo4j.password_file = str(password_file)
    return config


def wipe_neo4j(config: Config) -> None:
    """Delete every imgwatch node from the test database (only ever the test server)."""
    import neo4j

    from imgwatch.config import neo4j_password

    auth = (config.neo4j.user, neo4j_password(config, environ={}) or "")
    with neo4j.GraphDatabase.driver(config.neo4j.uri, auth=auth) as driver:
        driver.execute_query("MATCH (n) WHERE n:Image OR n:ImgwatchStore DETACH DELETE n",
                             database_=config.neo4j.database)


def open_backend(kind: str, tmp_path: Path) -> GraphStore:
    config = backend_config(kind, tmp_path)
    if kind == "neo4j":
        wipe_neo4j(config)
    return open_store(config)




# -- imgwatch as real processes (end-to-end and fault tests) ------------------------------


def process_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """Environment for imgwatch subprocesses: a private data dir, random weights on the CPU.

    ``settings`` are extra IMGWATCH_* variables, e.g. ``IMGWATCH_WATCH_RESCAN_SECONDS="5"``.
    """
    environ = dict(os.environ)
    environ.update({
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),  # never read the developer's own config
        "IMGWATCH_GENERAL_DATA_DIR": str(tmp_path / "data"),
        "IMGWATCH_EMBEDDING_WEIGHTS": "random",
        "IMGWATCH_EMBEDDING_DEVICE": "cpu",
        "IMGWATCH_WATCH_SETTLE_SECONDS": "0.5",
        "IMGWATCH_GENERAL_LOG_FORMAT": "json",
    })
    environ.update(settings)
    return environ


def imgwatch(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "imgwatch", *args], env=env, capture_output=True,
                            text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"imgwatch {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def status(env: dict[str, str]) -> dict[str, Any]:
    return json.loads(imgwatch(env, "status", "--json").stdout)


def indexed_count(env: dict[str, str]) -> int:
    store = status(env)["store"]
    return 0 if store is None else int(store["images"])


def wait_until(condition: Callable[[], bool], timeout: float = 15.0, poll: float = 0.02) -> bool:
    """Whether ``condition()`` became true within ``timeout`` seconds, checked every ``poll``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return False


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 180.0) -> None:
    """Wait for ``condition()`` (a process-level check, so polled twice a second), or fail naming ``what``."""
    if not wait_until(condition, timeout, poll=0.5):
        raise AssertionError(f"timed out waiting for {what}")


class RunningImgwatch:
    """`imgwatch run ROOT [ARGS...]` (or another command) as a real process, logging to ``log_path``."""

    def __init__(self, env: dict[str, str], root: Path, log_path: Path, *args: str, command: str = "run") -> None:
        self.log_path = log_path
        self._log = open(log_path, "a")
        self.process = subprocess.Popen([sys.executable, "-m", "imgwatch", command, str(root), *args], env=env,
                                        stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            return self.process.wait(timeout=120)
        finally:
            self._log.close()


def read_terminal_until(terminal: int, expected: bytes, timeout: float = 30) -> bytes:
    """What a program wrote to ``terminal`` (a pty's end), until ``expected`` shows or ``timeout`` passes."""
    import select

    shown = b""
    deadline = time.monotonic() + timeout
    while expected not in shown and time.monotonic() < deadline:
        if select.select([terminal], [], [], 0.1)[0]:
            try:
                shown += os.read(terminal, 65536)
            except OSError:  # the program has exited and closed it
                break
    return shown


def store_mismatch(data_dir: Path, root: Path, path_filter_extensions: tuple[str, ...] = ("jpg", "jpeg", "png"),
                   ) -> str | None:
    """None when the embedded store in ``data_dir`` holds exactly the images below ``root``,
    each once and each linked; otherwise what differs (for wait_for messages)."""
    from imgwatch.datadir import DataDir
    from imgwatch.store.embedded import EmbeddedGraphStore

    on_disk = sorted(
        str(path) for path in root.rglob("*")
        if path.is_file() and path.suffix.lower().lstrip(".") in path_filter_extensions
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )
    store_file = DataDir(data_dir).store_file
    if not store_file.exists():
        return "no store yet"
    with EmbeddedGraphStore(store_file) as store:
        stored = [state.path for state in store.file_states()]
        facts = store.get_many(stored)
    problems = []
    if sorted(set(stored)) != sorted(stored):
        problems.append("duplicated paths")
    missing = sorted(set(on_disk) - set(stored))
    extra = sorted(set(stored) - set(on_disk))
    unlinked = sorted(path for path, image in facts.items() if not image.linked)
    if missing:
        problems.append(f"missing {len(missing)}: {missing[:5]}")
    if extra:
        problems.append(f"extra {len(extra)}: {extra[:5]}")
    if unlinked:
        problems.append(f"unlinked {len(unlinked)}: {unlinked[:5]}")
    return "; ".join(problems) or None


# -- kernel limits, lowered for a moment (fault tests; needs root, as CI runs) ---------------


INOTIFY_SYSCTL = Path("/proc/sys/fs/inotify")


@contextlib.contextmanager
def lowered_inotify_limit(name: str, value: int) -> Iterator[int]:
    """Set /proc/sys/fs/inotify/``name`` to ``value`` (e.g. max_queued_events) and restore it on exit.

    Skips the test when the limit cannot be written (not root). The limit is global: keep the
    window short. Yields the previous value.
    """
    path = INOTIFY_SYSCTL / name
    try:
        previous = int(path.read_text())
        path.write_text(f"{value}\n")
    except OSError as exc:
        pytest.skip(f"cannot lower fs.inotify.{name} ({exc.strerror}); the test needs root, as CI runs it")
    try:
        yield previous
    finally:
        path.write_text(f"{previous}\n")


def valkey_pid(url: str) -> int:
    """The process id of the Redis-compatible server at ``url`` (to kill it for real)."""
    import redis

    connection = redis.Redis.from_url(url)
    try:
        return int(connection.info("server")["process_id"])
    finally:
        connection.close()


# -- queue security ----------------------------------------------------------------------------

CALLED_MARKER_ENV = "IMGWATCH_TEST_CALLED_MARKERS"


def record_call(*args: object, **kwargs: object) -> None:
    """An importable function anyone could name as an RQ callback: when a worker runs it (which
    it must never do) it leaves a marker file named after the job in $IMGWATCH_TEST_CALLED_MARKERS."""
    folder = os.environ.get(CALLED_MARKER_ENV)
    if folder:
        job_id = getattr(args[0], "id", "unknown") if args else "unknown"
        (Path(folder) / f"called-{job_id}").write_text(f"called with {len(args)} argument(s)\n")


# -- captured logs with their times (fault tests) -----------------------------------------------


@contextlib.contextmanager
def timed_logs() -> Iterator[list[dict[str, Any]]]:
    """Like structlog.testing.capture_logs (from every thread), each entry with a time.time() "timestamp"."""
    import structlog
    from structlog.testing import LogCapture

    capture = LogCapture()
    previous = structlog.get_config()["processors"]
    structlog.configure(processors=[structlog.processors.TimeStamper(fmt=None), capture])
    try:
        yield capture.entries
    finally:
        structlog.configure(processors=previous)


def logged(entries: list[dict[str, Any]], event: str, **fields: Any) -> list[dict[str, Any]]:
    """The captured entries of ``event`` whose fields include ``fields``."""
    return [e for e in list(entries) if e["event"] == event and all(e.get(k) == v for k, v in fields.items())]


# -- the processes of a running `imgwatch run` (fault tests) ---------------------------------


def child_pids(pid: int) -> list[int]:
    """The live children of process ``pid`` (from /proc)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return children


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def run_worker_pids(run_pid: int) -> list[int]:
    """The worker processes `imgwatch run` (process ``run_pid``) has now (multiprocessing spawns them)."""
    return [pid for pid in child_pids(run_pid) if "spawn_main" in cmdline(pid)]


def run_valkey_pid(run_pid: int) -> int | None:
    """The embedded Valkey server of `imgwatch run` (a child of its queue helper process), if running."""
    for helper in child_pids(run_pid):
        if "imgwatch.valkey_server" in cmdline(helper):
            for server in child_pids(helper):
                if "valkey" in cmdline(server):
                    return server
    return None


def kill_process(pid: int, signum: int = signal.SIGKILL) -> None:
    """Send ``signum`` to ``pid``, ignoring a process that already ended."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def write_calibrated_weights(path: Path, photos: list[Any], seed: int = 0) -> Path:
    """Seeded random ResNet50 weights whose BatchNorm statistics are measured on ``photos``.

    Raw random weights map every photo to nearly the same vector (cosines 0.997-1.000), so a
    test comparing embeddings could not fail. With the BatchNorm running statistics
    recalibrated on real photos, different photos score about 0.8-0.98 apart, like a trained
    model, while a photo and a faithful copy of it still score ~1. ``photos`` are PIL images;
    the weights are saved as a state_dict file that ``load_model`` and every engine can load.
    """
    import torch

    from imgwatch.embedding import load_model, reference_preprocess

    network = load_model("random", device="cpu", seed=seed).network
    generator = torch.Generator().manual_seed(seed)
    crops = []
    for photo in photos:  # six random square crops of each photo, half to all of its short side
        width, height = photo.size
        for _ in range(6):
            side = int(min(width, height) * (0.5 + 0.5 * torch.rand(1, generator=generator).item()))
            left = int((width - side) * torch.rand(1, generator=generator).item())
            top = int((height - side) * torch.rand(1, generator=generator).item())
            crops.append(reference_preprocess(photo.crop((left, top, left + side, top + side))))
    batch = torch.stack(crops)
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over every batch seen
    network.train()
    with torch.no_grad():
        for start in range(0, len(batch), 16):
            network(batch[start : start + 16])
    network.eval()
    torch.save(network.state_dict(), path)
    return path


def clustered_unit_vectors(
    count: int, seed: int, topics: int = 60, dim: int = 2048, centre_seed: int = 1234
) -> np.ndarray:
    """Photo-library-like vectors: a topic plus noise of random strength (a fifth near-duplicates),
    ReLU'd like ResNet features, normalised."""
    centres = np.maximum(np.random.default_rng(centre_seed).standard_normal((topics, dim), dtype=np.float32), 0)
    rng = np.random.default_rng(seed)
    noise = np.where(rng.random(count) < 0.2, 0.15, rng.uniform(0.5, 1.2, count)).astype(np.float32)
    vectors = centres[rng.integers(0, topics, count)]
    vectors += noise[:, None] * rng.standard_normal((count, dim), dtype=np.float32)
    np.maximum(vectors, 0, out=vectors)
    normalised: np.ndarray = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return normalised


class FakeClock:
    """A monotonic clock that moves only when a test moves it (``clock.now += 5``): for the units
    that take an injectable clock (Settler, Outage, RestartPolicy)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


WEIGHTS_FILE = ("/models/resnet50.pth", "5be77" + "0" * 59)  # (absolute path, SHA-256)


def user_namespace_skip_reason() -> str | None:
    """Why a test cannot run a child in a user namespace of its own here (None: it can)."""
    import shutil

    if shutil.which("unshare") is None:
        return "needs unshare(1) (util-linux) to give the daemon a user namespace of its own"
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "true"], capture_output=True, text=True,
                           check=False)
    if probe.returncode != 0:
        return f"cannot create a user namespace here: {probe.stderr.strip()}"
    return None


def run_scenario_in_own_user_namespace(function: str, *args: str) -> None:
    """Run ``function`` (``module:name``, a scenario taking argv and returning an exit code) in a child
    in a new user namespace whose root may lower its own inotify limits; skip where none can be made.
    The scenario prints "ok" last when all it checks held."""
    reason = user_namespace_skip_reason()
    if reason:
        pytest.skip(reason)
    module, name = function.split(":")
    code = f"import sys; from {module} import {name}; sys.exit({name}(sys.argv[1:]))"
    repo = Path(__file__).resolve().parent.parent
    result = subprocess.run(["unshare", "--user", "--map-root-user", sys.executable, "-c", code, *args],
                            cwd=repo, capture_output=True, text=True, timeout=60, check=False,
                            env={**os.environ, "PYTHONPATH": str(repo)})
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stdout + result.stderr
