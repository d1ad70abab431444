"""The web server's memory around parallel near-limit uploads: at rest, at peak and after.

    python bench/upload_memory.py [--uploads 8] [--kinds png jpeg phone] [--settle 30] [--keep DIR]
                                  [--baseline-src DIR] [--variant NAME:VAR=VALUE,...] [--skip-tree]

Builds a small store (a dozen small JPEGs, ResNet50 with seeded random weights), then for each
server variant and each upload kind starts a fresh `python -m imgwatch web` on it, loads the
model with one small upload, and measures the server's RSS (VmRSS in /proc, sampled every
50 ms): at rest (after the model loaded), at peak while --uploads parallel `POST /api/search`
uploads run, and --settle seconds after the last answer. Every answer must be a 200 with results.

Upload kinds (made once, kept in --keep DIR when given):
  png   a 13000×13000 PNG of one colour: ~0.5 MB on the wire, 169 MP declared, just under the
        179 MP limit (photos/limits.py); nothing but a full-size decode can read it;
  jpeg  a 12000×9000 (108 MP) JPEG with sensor-like grain, 48 MiB: under web.max_upload_mb (50);
  phone a 4032×3024 (12 MP) JPEG with grain, as phones take: many of these at once (--uploads 40:
        Starlette's whole threadpool) show what small decodes leave behind in each thread.

Variants: "this tree" (the code in src/), and with --baseline-src DIR the same run against another
checkout's src/ (e.g. `git worktree add /tmp/wt-before <commit>`; --baseline-src /tmp/wt-before/src).
--variant NAME:VAR=VALUE,... adds a run of the baseline (or, without one, this tree) with extra
environment variables, e.g. glibc's own knobs: `arena2:MALLOC_ARENA_MAX=2`,
`mmap:MALLOC_MMAP_THRESHOLD_=1048576`. Then a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
Image.MAX_IMAGE_PIXELS = None  # the bench opens its own near-limit files for their labels
SAMPLE_S = 0.05
SERVER_START_TIMEOUT_S = 120
UPLOAD_TIMEOUT_S = 900
PNG_SIDE = 13_000
JPEG_SIZES = {"jpeg": (12_000, 9_000), "phone": (4032, 3024)}
MAX_UPLOAD_MB = 50


@dataclass(frozen=True)
class Upload:
    kind: str
    file: Path

    @property
    def label(self) -> str:
        size = self.file.stat().st_size
        with Image.open(self.file) as header:
            (width, height), kind = header.size, header.format
        shown = f"{size / 2**20:.1f} MiB" if size > 2**20 else f"{size / 1000:.0f} KB"
        return f"{kind} {width}×{height} ({width * height / 1e6:.0f} MP), {shown}"


@dataclass(frozen=True)
class Variant:
    name: str
    src: Path
    extra_env: dict[str, str] = field(default_factory=dict)


@dataclass
class Measured:
    variant: str
    upload: str
    uploads: int
    rest_mb: float
    peak_mb: float
    after_mb: float
    seconds: float  # first request sent to last answer
    statuses: list[int]


def make_uploads(folder: Path, kinds: list[str]) -> list[Upload]:
    folder.mkdir(parents=True, exist_ok=True)
    uploads = []
    for kind in kinds:
        file = folder / (f"{kind}.png" if kind == "png" else f"{kind}.jpg")
        if not file.exists():
            print(f"making {file} ...", file=sys.stderr)
            if kind == "png":
                Image.new("RGB", (PNG_SIDE, PNG_SIDE), (120, 140, 90)).save(file, compress_level=9)
            else:
                width, height = JPEG_SIZES[kind]
                rng = np.random.default_rng(0)
                pixels = np.empty((height, width, 3), np.uint8)
                columns = np.linspace(0, 60, width, dtype=np.float32)[None, :, None]
                for top in range(0, height, 500):  # a gradient with grain, a strip at a time (less memory)
                    rows = np.linspace(40, 215, height, dtype=np.float32)[top:top + 500, None, None]
                    grain = rng.normal(0, 9, (len(rows), width, 3)).astype(np.float32)
                    pixels[top:top + 500] = np.clip(rows + columns + grain, 0, 255)
                Image.fromarray(pixels).save(file, quality=95)
        uploads.append(Upload(kind, file))
    return uploads


def server_env(tmp: Path, src: Path) -> dict[str, str]:
    """The environment of a server (and of its store's making) running the code in ``src``."""
    env = dict(os.environ, PYTHONPATH=str(src), XDG_CONFIG_HOME=str(tmp / "xdg"),
               IMGWATCH_GENERAL_DATA_DIR=str(tmp / "data"), IMGWATCH_EMBEDDING_WEIGHTS="random",
               IMGWATCH_EMBEDDING_DEVICE="cpu", IMGWATCH_GENERAL_LOG_FORMAT="json",
               IMGWATCH_WEB_MAX_UPLOAD_MB=str(MAX_UPLOAD_MB))
    env.pop("IMGWATCH_WEB_TOKEN", None)
    return env


def make_store(tmp: Path) -> None:
    """A store of a dozen small photos in ``tmp``, indexed as the workers would (run with the server's code:
    each checkout writes its own store schema)."""
    from imgwatch.config import load_config
    from imgwatch.embedding import Embedded, Embedder, load_model
    from imgwatch.store import ImageRecord, open_store

    photos = tmp / "photos"
    photos.mkdir()
    rng = np.random.default_rng(1)
    for i in range(12):
        small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        Image.fromarray(small).resize((320, 240), Image.BILINEAR).save(photos / f"{i:02d}.jpg", quality=85)
    config = load_config(overrides={"general.data_dir": str(tmp / "data"), "embedding.weights": "random",
                                    "embedding.device": "cpu"}, environ={})
    model = load_model("random", device="cpu", seed=config.embedding.seed)
    with Embedder(model, batch_size=4) as embedder, open_store(config) as store:
        store.ensure_model(model.identity, model.dim)
        records = []
        for result in embedder.embed_files(sorted(str(p) for p in photos.iterdir())):
            assert isinstance(result, Embedded), result
            facts = result.facts
            records.append(ImageRecord(facts.path, facts.sha256, facts.size, facts.mtime_ns, result.width,
                                       result.height, model.identity, result.vector))
        store.upsert(records)
        store.link(records, config.links.threshold, config.links.top_k)


def store_for(src: Path, scratch: Path) -> Path:
    """A folder with a store made by the code in ``src`` (made once per checkout)."""
    folder = scratch / f"store-{abs(hash(str(src))):x}"
    if not folder.exists():
        folder.mkdir()
        subprocess.run([sys.executable, __file__, "--make-store", str(folder)], env=server_env(folder, src),
                       check=True)
    return folder


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class Sampler:
    """The highest RSS of a process, sampled every SAMPLE_S on a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(SAMPLE_S)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb(self.pid))


def start_server(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    with open(log, "wb") as handle:
        process = subprocess.Popen([sys.executable, "-m", "imgwatch", "web", "--port", "0"], env=env,
                                   stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        found = re.search(r"serving on (http://\S+?)/?$", log.read_text(), re.MULTILINE)
        if found:
            return process, found.group(1).rstrip("/")
        if process.poll() is not None:
            raise SystemExit(f"imgwatch web exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        time.sleep(0.05)
    process.kill()
    raise SystemExit(f"imgwatch web did not start:\n{log.read_text()[-4000:]}")


def upload(client: httpx.Client, url: str, file: Path, data: bytes) -> int:
    response = client.post(f"{url}/api/search", files={"image": (file.name, data, "application/octet-stream")},
                           timeout=UPLOAD_TIMEOUT_S)
    if response.status_code == 200 and not response.json()["results"]:
        return -1  # an answer without results is as wrong as an error
    return response.status_code


def rest_rss(pid: int, seconds: float = 1.0) -> float:
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(rss_mb(pid))
        time.sleep(SAMPLE_S)
    return statistics.median(samples)


def measure(variant: Variant, chosen: Upload, uploads: int, settle: float, scratch: Path) -> Measured:
    tmp = store_for(variant.src, scratch)
    env = dict(server_env(tmp, variant.src), **variant.extra_env)
    log = scratch / f"web-{variant.name}-{chosen.kind}.log".replace(" ", "-")
    process, url = start_server(env, log)
    try:
        data = chosen.file.read_bytes()
        warm = tmp / "photos" / "00.jpg"
        with httpx.Client() as client:
            assert upload(client, url, warm, warm.read_bytes()) == 200, log.read_text()[-4000:]
        time.sleep(2)
        rest = rest_rss(process.pid)
        with Sampler(process.pid) as sampler, ThreadPoolExecutor(uploads) as pool, \
                httpx.Client(limits=httpx.Limits(max_connections=uploads)) as client:
            started = time.perf_counter()
            statuses = list(pool.map(lambda _: upload(client, url, chosen.file, data), range(uploads)))
            seconds = time.perf_counter() - started
        time.sleep(settle)
        after = rest_rss(process.pid)
        return Measured(variant.name, chosen.label, uploads, rest, sampler.peak, after, seconds, statuses)
    finally:
        process.terminate()
        process.wait(timeout=30)


def parse_variant(text: str, src: Path) -> Variant:
    name, _, settings = text.partition(":")
    extra = dict(setting.split("=", 1) for setting in settings.split(",") if setting)
    return Variant(name, src, extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=8, help="parallel uploads")
    parser.add_argument("--kinds", nargs="+", choices=("png", "jpeg", "phone"), default=["png", "jpeg"])
    parser.add_argument("--settle", type=float, default=30.0, help="seconds after the last answer")
    parser.add_argument("--keep", type=Path, help="folder for the upload files, reused by later runs")
    parser.add_argument("--baseline-src", type=Path, help="another checkout's src/ to compare with")
    parser.add_argument("--variant", action="append", default=[], help="NAME:VAR=VALUE,... (repeatable)")
    parser.add_argument("--skip-tree", action="store_true", help="measure only the baseline and its variants")
    parser.add_argument("--make-store", type=Path, help=argparse.SUPPRESS)  # the subprocess store_for runs
    args = parser.parse_args()
    if args.make_store:
        make_store(args.make_store)
        return

    variants = []
    if args.baseline_src:
        variants.append(Variant("before", args.baseline_src.resolve()))
    variants += [parse_variant(text, (args.baseline_src or REPO / "src").resolve()) for text in args.variant]
    if not args.skip_tree:
        variants.append(Variant("this tree", REPO / "src"))

    with tempfile.TemporaryDirectory(prefix="imgwatch-bench-upload-memory-") as scratch:
        tmp = Path(scratch)
        uploads = make_uploads(args.keep or tmp / "uploads", args.kinds)
        results = []
        for chosen in uploads:
            for variant in variants:
                result = measure(variant, chosen, args.uploads, args.settle, tmp)
                print(f"{result.variant} | {result.upload}: rest {result.rest_mb:,.0f} MB, peak {result.peak_mb:,.0f}, "
                      f"after {args.settle:g} s {result.after_mb:,.0f}; {result.seconds:.1f} s; "
                      f"answers {sorted(set(result.statuses))}", file=sys.stderr, flush=True)
                results.append(result)

    print(f"\n{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{args.uploads} parallel uploads, RSS {args.settle:g} s after the last answer\n")
    print("| upload | server | at rest | peak | after | held (after − rest) | all answers | seconds |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- | ---: |")
    for r in results:
        answers = "200" if set(r.statuses) == {200} else ", ".join(map(str, sorted(set(r.statuses))))
        print(f"| {r.upload} | {r.variant} | {r.rest_mb:,.0f} MB | {r.peak_mb:,.0f} MB | {r.after_mb:,.0f} MB | "
              f"{r.after_mb - r.rest_mb:,.0f} MB | {answers} | {r.seconds:.1f} |")


if __name__ == "__main__":
    main()
