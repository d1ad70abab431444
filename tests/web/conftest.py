"""One real `imgwatch web` for the package, over a real store of real photos.

The photos are scikit-image's samples plus copies of some (resized, re-encoded as PNG), a
file whose name is HTML, a phone's HEIC of chelsea, a camera's DNG of coffee (with an embedded
JPEG preview big enough that the reader indexes it instead of developing the mosaic), and a
truncated JPEG the real decoder fails on (its reason is in the failure ledger, as a worker
would leave it). They are indexed through the real Embedder (ResNet50 with seeded random
weights) and the store's upsert and link. The server is `python -m imgwatch web` on a free
port, started once (its model loads on the first search by upload).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from imgwatch.embedding import Embedded, Embedder, EmbeddingModel, Failed
from imgwatch.store import ImageRecord, open_store
from imgwatch.valkey_server import EmbeddedValkey
from imgwatch.workqueue import FailureLedger, WorkQueue
from tests.helpers import make_config, process_env
from tests.photo_files import write_dng, write_heic
from tests.web.browser import CHROMIUM, CHROMIUM_ARGS

UPLOAD_LIMIT_MB = 1
ODD_NAME = "a<b>&\"q'.jpg"  # HTML in a file name must show as text
# Two portrait variants of one photo whose long names differ only at the end, as a phone's edits do.
PORTRAIT_NAMES = {"portrait": "IMG_20240101_123456789_portrait_crop.jpg",
                  "portrait-edit": "IMG_20240101_123456789_portrait_edit.jpg"}
DNG_SIZE = (768, 512)  # coffee as a camera's DNG: its preview (this size) has a short side >= 512
SERVER_START_TIMEOUT_S = 60


@dataclass
class PhotoSet:
    root: Path
    photos: dict[str, Path]  # short name -> indexed path
    broken: Path  # not indexed: the decoder refused it
    outside: Path  # a real photo that was never indexed
    data_dir: Path
    queue_name: str  # the failure ledger's queue


@dataclass
class WebServer:
    url: str  # without the trailing slash
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path


def index_photos(tmp: Path, photo_arrays: dict[str, object], random_model: EmbeddingModel,
                 queue_url: str, queue_name: str) -> PhotoSet:
    import numpy as np
    from PIL import Image

    root = tmp / "photos"
    (root / "copies").mkdir(parents=True)
    photos: dict[str, Path] = {}

    def save(name: str, image: Image.Image, relative: str, **options: object) -> None:
        photos[name] = root / relative
        image.save(photos[name], **options)

    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera", "retina"):
        save(name, Image.fromarray(np.asarray(photo_arrays[name])), f"{name}.jpg", quality=90)
    astronaut = Image.open(photos["astronaut"])
    save("astronaut-copy", astronaut, "copies/astronaut-copy.png")
    save("chelsea-small", Image.open(photos["chelsea"]).resize((225, 150)), "copies/chelsea-small.jpg", quality=80)
    save("odd", Image.open(photos["coffee"]), ODD_NAME, quality=70)
    save("victim", Image.open(photos["rocket"]).resize((320, 213)), "victim.jpg", quality=85)
    upright = astronaut.convert("RGB").crop((110, 0, 410, 512))  # 300 x 512
    save("portrait", upright, PORTRAIT_NAMES["portrait"], quality=85)
    save("portrait-edit", upright.point(lambda value: min(255, value + 30)), PORTRAIT_NAMES["portrait-edit"],
         quality=85)
    (root / "formats").mkdir()
    photos["chelsea-heic"] = write_heic(Image.fromarray(np.asarray(photo_arrays["chelsea"])),
                                        root / "formats" / "chelsea.heic")
    coffee = Image.fromarray(np.asarray(photo_arrays["coffee"])).resize(DNG_SIZE)
    photos["coffee-dng"] = write_dng(coffee, root / "formats" / "coffee.dng", preview=coffee)
    broken = root / "broken.jpg"
    data = photos["retina"].read_bytes()
    broken.write_bytes(data[: len(data) // 3])
    outside = tmp / "elsewhere" / "hubble.jpg"
    outside.parent.mkdir()
    Image.fromarray(np.asarray(photo_arrays["hubble_deep_field"])).save(outside)

    config = make_config(tmp / "data", **{"queue.redis_url": queue_url, "queue.name": queue_name})
    ledger = FailureLedger.for_queue(WorkQueue.from_config(config))
    with Embedder(random_model, batch_size=4) as embedder, open_store(config) as store:
        store.ensure_model(random_model.identity, random_model.dim)
        records = []
        for result in embedder.embed_files([str(p) for p in [*photos.values(), broken]]):
            if isinstance(result, Failed):  # what a worker does with a file it cannot decode
                assert result.path == str(broken), result.reason
                ledger.record(result.path, result.reason, broken.stat().st_size, broken.stat().st_mtime_ns,
                              permanent=True)
                continue
            assert isinstance(result, Embedded), result
            facts = result.facts
            records.append(ImageRecord(facts.path, facts.sha256, facts.size, facts.mtime_ns, result.width,
                                       result.height, random_model.identity, result.vector))
        store.upsert(records)
        store.link(records, config.links.threshold, config.links.top_k)
    assert ledger.get(str(broken)) is not None
    return PhotoSet(root, photos, broken, outside, tmp / "data", queue_name)


def start_server(env: dict[str, str], log: Path, *args: str) -> WebServer:
    """`imgwatch web` on a free port; returns once it serves (its URL read from its log)."""
    handle = open(log, "ab")
    process = subprocess.Popen([sys.executable, "-m", "imgwatch", "web", "--port", "0", *args], env=env,
                               stdout=handle, stderr=subprocess.STDOUT)
    handle.close()
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        found = re.search(r"serving on (http://\S+?)/?$", log.read_text(), re.MULTILINE)
        if found:
            return WebServer(found.group(1).rstrip("/"), env, process, log)
        if process.poll() is not None:
            raise AssertionError(f"imgwatch web exited with {process.returncode}:\n{log.read_text()}")
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"imgwatch web did not start:\n{log.read_text()}")


def stop_server(server: WebServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        raise


@pytest.fixture(scope="package")
def photo_set(tmp_path_factory: pytest.TempPathFactory, photo_arrays: dict[str, object],
              random_model: EmbeddingModel, queue_server: EmbeddedValkey) -> PhotoSet:
    tmp = tmp_path_factory.mktemp("web")
    return index_photos(tmp, photo_arrays, random_model, queue_server.url, f"test-web-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="package")
def web_server(photo_set: PhotoSet, queue_server: EmbeddedValkey) -> Iterator[WebServer]:
    tmp = photo_set.data_dir.parent
    env = process_env(tmp, IMGWATCH_QUEUE_REDIS_URL=queue_server.url,
                      IMGWATCH_QUEUE_NAME=photo_set.queue_name,
                      IMGWATCH_WEB_MAX_UPLOAD_MB=str(UPLOAD_LIMIT_MB))
    env.pop("IMGWATCH_WEB_TOKEN", None)
    server = start_server(env, tmp / "web.log")
    yield server
    stop_server(server)
    assert server.process.returncode == 0, server.log.read_text()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium, driven by Playwright (skips where either is missing)."""
    if CHROMIUM is None:
        pytest.skip("no Chromium on PATH for the browser tests (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright for the browser tests")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page; fails the test on a console error (a CSP violation, a script error).

    Refused requests (HTTP 4xx) are the server's answers: each test checks those it causes.
    """
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(30_000)
    errors: list[str] = []
    opened.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert not [e for e in errors if not e.startswith("Failed to load resource")], errors
