"""Bad and odd files through the real Indexer (real model, store, queue and ledger), and
`imgwatch status` facing odd file names and jobs that are not imgwatch's.

Each file ends up exactly one way: indexed, failed (one ledger entry whose reason says
what is wrong) or ignored (neither stored nor failed: not an image imgwatch indexes).
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rq import Queue
from rq.registry import FailedJobRegistry
from rq.results import Result

from imgwatch.config import Config
from imgwatch.embedding import Embedder, EmbeddingModel, EmbedResult
from imgwatch.embedding.decode import MAX_ASPECT_RATIO, MAX_FILE_BYTES
from imgwatch.embedding.embedder import ReuseLookup
from imgwatch.files import PathFilter
from imgwatch.store import GraphStore
from imgwatch.valkey_server import EmbeddedValkey
from imgwatch.workers.indexer import Indexer, LinkPolicy
from imgwatch.workqueue import INDEX_JOB, FailureLedger, WorkQueue

UNREADABLE_AS_ROOT = "/proc/sys/vm/drop_caches"  # write-only for everyone, root included
BIND_MOUNTS: list[Path] = []  # undone after each test


class VanishingEmbedder(Embedder):
    """Files named vanishing* are deleted after the triage saw them, just before they are read."""

    def embed_files(
        self, paths: Sequence[str], known_sha256: Mapping[str, str] | None = None,
        reuse: ReuseLookup | None = None,
    ) -> Iterator[EmbedResult]:
        for path in paths:
            if os.path.basename(path).startswith("vanishing"):
                os.remove(path)
        yield from super().embed_files(paths, known_sha256, reuse)



@pytest.fixture
def vanishing_indexer(
    random_model: EmbeddingModel, store: GraphStore, failures: FailureLedger, config: Config, root: Path
) -> Iterator[Indexer]:
    """An indexer whose embedder deletes files named vanishing* between triage and reading them."""
    embedder = VanishingEmbedder(random_model, batch_size=4, decode_threads=2)
    store.ensure_model(random_model.identity, random_model.dim)
    yield Indexer(embedder, store, failures, lambda paths: None, LinkPolicy(threshold=0.0, top_k=2),
                  PathFilter.create(config.watch.extensions, config.watch.exclude), [str(root)])
    embedder.close()


# -- the files ---------------------------------------------------------------------------


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _photo(photos: Mapping[str, object], name: str = "chelsea") -> Image.Image:
    return Image.fromarray(photos[name])  # type: ignore[arg-type]


def _write(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def _png_bomb() -> bytes:
    """A real decompression bomb: 20000×20000 1-bit pixels (400 MP), 50 KB of compressed zeros."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    side = 20_000
    rows = zlib.compress(b"\0" * ((side // 8 + 1) * side), 9)  # filter byte + 2500 bytes per row
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def truncated(root: Path, photos: Mapping[str, object]) -> str:
    data = _encoded(_photo(photos), "JPEG", quality=90)
    return _write(root / "truncated.jpg", data[: len(data) // 2])


def zero_bytes(root: Path, photos: Mapping[str, object]) -> str:
    return _write(root / "empty.jpg", b"")


def text_named_jpg(root: Path, photos: Mapping[str, object]) -> str:
    return _write(root / "notes.jpg", b"milk, eggs, a new SD card\n")


def decompression_bomb(root: Path, photos: Mapping[str, object]) -> str:
    return _write(root / "bomb.png", _png_bomb())


def sixteen_bit_png(root: Path, photos: Mapping[str, object]) -> str:
    grey = np.asarray(_photo(photos).convert("L"), dtype=np.uint16) * 257
    image = Image.fromarray(grey)
    assert image.mode.startswith("I;16")
    return _write(root / "sixteen-bit.png", _encoded(image, "PNG"))


def cmyk_jpeg(root: Path, photos: Mapping[str, object]) -> str:
    return _write(root / "cmyk.jpg", _encoded(_photo(photos).convert("CMYK"), "JPEG"))


def palette_png_with_transparency(root: Path, photos: Mapping[str, object]) -> str:
    palette = _photo(photos).convert("P", palette=Image.Palette.ADAPTIVE)
    return _write(root / "palette.png", _encoded(palette, "PNG", transparency=0))


def animated_gif(root: Path, photos: Mapping[str, object]) -> str:
    first, second = _photo(photos, "astronaut"), _photo(photos, "rocket").resize((512, 512))
    return _write(root / "animated.gif", _encoded(first, "GIF", save_all=True, append_images=[second],
                                                   duration=100, loop=0))


def unreadable(root: Path, photos: Mapping[str, object]) -> str:
    path = root / "unreadable.jpg"
    if os.geteuid() != 0:
        _write(path, _encoded(_photo(photos), "JPEG"))
        path.chmod(0)
        return str(path)
    # Root reads any file whatever its mode; a write-only /proc file it cannot read, bound (not
    # linked: a link leading outside the roots is refused before it is read) into the root.
    try:
        open(UNREADABLE_AS_ROOT, "rb").close()  # noqa: SIM115
    except PermissionError:
        path.touch()
        if subprocess.run(["mount", "--bind", UNREADABLE_AS_ROOT, str(path)], capture_output=True).returncode == 0:
            BIND_MOUNTS.append(path)
            return str(path)
    except OSError:
        pass
    pytest.skip(f"running as root and {UNREADABLE_AS_ROOT} cannot be bound into a folder: no unreadable file to be had")


@pytest.fixture(autouse=True)
def _unmount_bound_files() -> Iterator[None]:
    yield
    while BIND_MOUNTS:
        subprocess.run(["umount", str(BIND_MOUNTS.pop())], check=False)


def link_leading_outside(root: Path, photos: Mapping[str, object]) -> str:
    target = _write(root.parent / "elsewhere" / "target.jpg", _encoded(_photo(photos), "JPEG"))
    (root / "link.jpg").symlink_to(target)
    return str(root / "link.jpg")


def symlink_loop(root: Path, photos: Mapping[str, object]) -> str:
    path = root / "loop.jpg"
    path.symlink_to(path.name)
    return str(path)


def vanished_before_read(root: Path, photos: Mapping[str, object]) -> str:
    return _write(root / "vanishing.jpg", _encoded(_photo(photos), "JPEG"))  # see VanishingEmbedder


def non_utf8_name(root: Path, photos: Mapping[str, object]) -> str:
    path = os.fsdecode(os.fsencode(str(root)) + b"/caf\xe9.jpg")  # a Latin-1 name on a UTF-8 system
    with open(os.fsencode(path), "wb") as handle:
        handle.write(_encoded(_photo(photos), "JPEG"))
    return path


def one_by_sixty_thousand(root: Path, photos: Mapping[str, object]) -> str:
    return _write(root / "strip.png", _encoded(Image.new("RGB", (1, 60_000), (200, 30, 30)), "PNG"))


def panorama_one_to_twenty(root: Path, photos: Mapping[str, object]) -> str:
    strip = _photo(photos, "coffee").resize((4000, 200))
    return _write(root / "panorama.jpg", _encoded(strip, "JPEG", quality=85))


def eight_thousand_square(root: Path, photos: Mapping[str, object]) -> str:
    # 64 megapixels; greyscale JPEG keeps writing it fast (libjpeg decodes it at 1/8 scale).
    big = Image.new("L", (8000, 8000), 90)
    big.paste(_photo(photos, "camera").resize((4000, 4000)), (2000, 2000))
    return _write(root / "big.jpg", _encoded(big, "JPEG", quality=60))


def over_a_gibibyte(root: Path, photos: Mapping[str, object]) -> str:
    path = root / "huge.tif"
    with open(path, "wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used, and never read
    return str(path)


def in_a_hidden_folder(root: Path, photos: Mapping[str, object]) -> str:
    return _write(root / ".thumbnails" / "a.jpg", _encoded(_photo(photos), "JPEG"))


def non_image_extension(root: Path, photos: Mapping[str, object]) -> str:
    return _write(root / "photo.jpg.txt", _encoded(_photo(photos), "JPEG"))


def fifo_named_jpg(root: Path, photos: Mapping[str, object]) -> str:
    path = root / "pipe.jpg"
    os.mkfifo(path)  # opening it to read would wait for a writer forever
    return str(path)


def folder_named_jpg(root: Path, photos: Mapping[str, object]) -> str:
    path = root / "folder.jpg"
    path.mkdir()
    return str(path)


def outside_the_roots(root: Path, photos: Mapping[str, object]) -> str:
    return _write(root.parent / "elsewhere" / "secret.jpg", _encoded(_photo(photos), "JPEG"))


@dataclass(frozen=True)
class Case:
    make: Callable[[Path, Mapping[str, object]], str]
    outcome: str  # "indexed" | "failed" | "ignored"
    reason: str = ""  # for "failed": what the recorded reason must say

    def __str__(self) -> str:
        return self.make.__name__


CASES = [
    Case(truncated, "failed", "truncated image file"),
    Case(zero_bytes, "failed", "empty file (0 bytes)"),
    Case(text_named_jpg, "failed", "not a recognised image format"),
    Case(decompression_bomb, "failed", "too large to decode safely"),
    Case(sixteen_bit_png, "indexed"),
    Case(cmyk_jpeg, "indexed"),
    Case(palette_png_with_transparency, "indexed"),
    Case(animated_gif, "indexed"),
    Case(unreadable, "failed", "Permission denied (check its permissions)"),
    Case(symlink_loop, "failed", "symbolic link loop"),
    Case(vanished_before_read, "ignored"),
    Case(non_utf8_name, "failed", "not valid UTF-8"),
    Case(one_by_sixty_thousand, "failed", f"1×60000 pixels: aspect ratio 1:60000 is beyond 1:{MAX_ASPECT_RATIO}"),
    Case(panorama_one_to_twenty, "indexed"),
    Case(eight_thousand_square, "indexed"),
    Case(over_a_gibibyte, "failed", "1,073,741,825 bytes, beyond imgwatch's limit of 1,073,741,824 bytes (1 GiB)"),
    Case(in_a_hidden_folder, "ignored"),
    Case(non_image_extension, "ignored"),
    Case(fifo_named_jpg, "ignored"),
    Case(folder_named_jpg, "ignored"),
    Case(outside_the_roots, "failed", "outside the folders this worker indexes"),
    Case(link_leading_outside, "failed", "leading outside the watched folders"),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_each_odd_file_is_indexed_failed_with_a_reason_or_ignored_and_the_batch_goes_on(
    case: Case, vanishing_indexer: Indexer, store: GraphStore, failures: FailureLedger, root: Path,
    photo_arrays: dict[str, object], write_photo: Callable[..., Path],
) -> None:
    path = case.make(root, photo_arrays)
    good = str(write_photo(root / "good.jpg", "coffee"))

    outcome = vanishing_indexer.index([path, good])

    assert good in outcome.indexed  # the rest of the batch is indexed
    ledger = failures.failed_files()
    if case.outcome == "indexed":
        assert sorted(outcome.indexed) == sorted([path, good]) and ledger == []
        assert store.stats().images == 2
    elif case.outcome == "failed":
        assert list(outcome.failed) == [path] and [f.path for f in ledger] == [path]  # one entry
        reason = ledger[0].reason
        assert case.reason in reason, reason
        assert path in reason or repr(path) in reason, reason  # it names the file
        assert "\n" not in reason
        assert store.stats().images == 1  # a failed file stays out of the store
        assert [f.path for f in failures.failed_files()] == [path]  # failing again keeps one entry
    else:
        assert outcome.indexed == [good] and outcome.failed == {} and ledger == []
        assert store.stats().images == 1


def test_eight_thousand_square_keeps_its_size_and_a_panorama_is_not_refused(
    vanishing_indexer: Indexer, store: GraphStore, root: Path, photo_arrays: dict[str, object]
) -> None:
    big, panorama = eight_thousand_square(root, photo_arrays), panorama_one_to_twenty(root, photo_arrays)
    assert sorted(vanishing_indexer.index([big, panorama]).indexed) == sorted([big, panorama])
    stored_big, stored_panorama = store.get(big), store.get(panorama)
    assert stored_big is not None and (stored_big.width, stored_big.height) == (8000, 8000)
    assert stored_panorama is not None and (stored_panorama.width, stored_panorama.height) == (4000, 200)


# -- `imgwatch status` facing odd names and odd jobs --------------------------------------


def status_env(tmp_path: Path, config: Config, queue_server: EmbeddedValkey, **extra: str) -> dict[str, str]:
    environ = dict(os.environ)
    environ.update({
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "IMGWATCH_GENERAL_DATA_DIR": config.general.data_dir,
        "IMGWATCH_GENERAL_LOG_FORMAT": "json",
        "IMGWATCH_QUEUE_REDIS_URL": queue_server.url,
        "IMGWATCH_QUEUE_NAME": config.queue.name,
    })
    environ.update(extra)
    return environ


def imgwatch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imgwatch", *args], env=env, capture_output=True,
                          text=True, encoding="utf-8", errors="strict", timeout=120, check=False)


def test_status_shows_a_name_that_is_not_utf8_on_a_strict_utf8_stdout(
    vanishing_indexer: Indexer, root: Path, photo_arrays: dict[str, object], tmp_path: Path, config: Config,
    queue_server: EmbeddedValkey,
) -> None:
    odd = non_utf8_name(root, photo_arrays)
    vanishing_indexer.index([odd])
    env = status_env(tmp_path, config, queue_server, PYTHONIOENCODING="utf-8:strict", LC_ALL="C.UTF-8")

    text = imgwatch(env, "status")
    assert text.returncode == 0, text.stderr
    assert "Traceback" not in text.stderr
    assert "caf\\xe9.jpg" in text.stdout and "not valid UTF-8" in text.stdout

    as_json = imgwatch(env, "status", "--json")
    assert as_json.returncode == 0, as_json.stderr
    [failed] = json.loads(as_json.stdout)["queue"]["failed_files"]  # valid JSON, the name escaped
    assert os.fsencode(failed["path"]) == os.fsencode(odd)  # and it round-trips to the real bytes


def test_status_shows_jobs_that_are_not_imgwatch_jobs_without_crashing(
    work_queue: WorkQueue, tmp_path: Path, config: Config, queue_server: EmbeddedValkey
) -> None:
    pickled = Queue(work_queue.name, connection=work_queue.connection)  # rq's default: pickle
    unreadable = pickled.enqueue("os.getpid")
    foreign = work_queue.rq_queue.enqueue("math.sqrt", 4)  # JSON, but no list of paths
    mine = work_queue.rq_queue.enqueue(INDEX_JOB, ["/photos/a.jpg", "/photos/b.jpg"])
    failed = FailedJobRegistry(queue=work_queue.rq_queue)
    for job, why in [(unreadable, "rq.exceptions.DeserializationError"),
                     (foreign, "imgwatch.workers.worker.JobRefused: refused: the job runs 'math.sqrt'")]:
        work_queue.rq_queue.remove(job.id)
        exc_string = f"Traceback (most recent call last):\n{why}\n"
        failed.add(job, exc_string=exc_string)  # as RQ fails a job: the registry, then the result
        Result.create_failure(job, ttl=600, exc_string=exc_string)
    pickled.enqueue("os.getcwd")  # still queued, unreadable too
    env = status_env(tmp_path, config, queue_server)

    text = imgwatch(env, "status")
    assert text.returncode == 0, text.stderr
    assert f"job {unreadable.id} (0 paths): unreadable job (not an imgwatch job)" in text.stdout
    assert f"job {foreign.id} (0 paths): JobRefused: refused: the job runs 'math.sqrt'" in text.stdout

    report = json.loads(imgwatch(env, "status", "--json").stdout)["queue"]
    assert (report["queued_jobs"], report["queued_paths"]) == (2, 2)  # only imgwatch's paths count
    assert {job["job_id"]: job["reason"] for job in report["failed_jobs"]}[unreadable.id] == \
        "unreadable job (not an imgwatch job)"
    assert mine.id not in {job["job_id"] for job in report["failed_jobs"]}
