"""A first ingest of a big library through the embedded store: is it one steady rate? (issue 26, goal 4)

    flock /tmp/imgwatch-bench.lock env PYTHONPATH=src .venv/bin/python bench/ingest_rate.py \
        --images 200000 --library /tmp/ann-bench-i26/library-500000x2048.f32

What is simulated: a worker's store work only. Synthetic photo-like embeddings (rows of the
clustered library made by bench/ann_choice.py's generator; ``--library``, generated there
when missing) go through the real store code from an empty store, as a worker sends them:
``upsert`` of a batch of ``--batch`` images, then ``link`` of the same batch (the config's
default threshold and top_k), one batch after another, as fast as the store takes them (the
rate a GPU worker's model could feed is far above it). No decoding, no model, no queue.
The store runs as shipped: links scan the float32 vectors below ``COMPACT_MIN_IMAGES`` and
this process's int8 copy from there (built once when the library crosses it, then kept in
step); searches use the HNSW index from ``ANN_MIN_IMAGES``, kept forward by the store's own
background maintenance in a thread of this process, as in a worker, so the index build when
the library crosses ``ANN_MIN_IMAGES`` and every later bring-forward compete with the ingest
for the cores.

Printed per ``--window`` images: the ingest rate over the window (images/s), the median and
slowest batch, whether searches went through the index (the revision it covers), how many
index saves and how much of the window the maintenance thread was running, and the load
average. At the end: the last window's rate against the first, the store's files, and the
int8 copy's full builds and size.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ann_choice import library_file
from imgwatch.store import EmbeddedGraphStore, ImageRecord
from imgwatch.store.embedded.ann_search import ANN_MIN_IMAGES
from imgwatch.store.embedded.compact_copy import COMPACT_MIN_IMAGES
from store_scale import cpu_name

MODEL = "bench/clustered-unit"
THRESHOLD = 0.8  # the config's default link threshold
TOP_K = 10  # the config's default links per image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--library", type=Path, default=Path("/tmp/ann-bench-i26/library-500000x2048.f32"))
    parser.add_argument("--batch", type=int, default=32, help="images per upsert + link (a worker's batch)")
    parser.add_argument("--window", type=int, default=10_000, help="images per printed rate")
    parser.add_argument("--budget-s", type=float, default=1800, help="stop after this long, whatever the size")
    parser.add_argument("--dir", default=None, help="where the store goes (default: a temporary directory)")
    parser.add_argument("--link-device", default="cpu", help="where the int8 copy for links lives: cpu, or cuda as a "
                                                             "GPU worker holds it")
    parser.add_argument("--keep", type=Path, default=None,
                        help="leave the store here (a new folder) for bench/store_scale.py --store to measure")
    args = parser.parse_args()
    library = load_library(args.library, args.images)
    print(f"machine  {platform.machine()} {cpu_name()}, {len(os.sched_getaffinity(0))} cores; numpy {np.__version__}; "
          f"ANN_MIN_IMAGES {ANN_MIN_IMAGES}; COMPACT_MIN_IMAGES {COMPACT_MIN_IMAGES}; batch {args.batch}; "
          f"load {os.getloadavg()}", flush=True)
    rates: list[float] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        if args.keep:
            args.keep.mkdir(parents=True)
        db = (args.keep or Path(directory)) / "store.sqlite3"
        with EmbeddedGraphStore(db, link_device=args.link_device) as store:
            store.ensure_model(MODEL, library.shape[1])
            stored = 0
            while stored < args.images and time.perf_counter() - started < args.budget_s:
                window_start, window_end = stored, min(stored + args.window, args.images)
                window_started = time.perf_counter()
                saves_before = store.ann.saves
                batch_seconds, maintaining_seconds = [], 0.0
                while stored < window_end:
                    batch = [record(n, library[n]) for n in range(stored, min(stored + args.batch, window_end))]
                    maintaining = maintenance_running(store)
                    batch_started = time.perf_counter()
                    store.upsert(batch)
                    store.link(batch, THRESHOLD, TOP_K)
                    batch_seconds.append(time.perf_counter() - batch_started)
                    if maintaining or maintenance_running(store):
                        maintaining_seconds += batch_seconds[-1]
                    stored += len(batch)
                window_seconds = time.perf_counter() - window_started
                rates.append((window_end - window_start) / window_seconds)
                print(f"images {window_end:>9,} | rate {rates[-1]:7.0f} img/s | batch p50 "
                      f"{statistics.median(batch_seconds) * 1e3:7.1f} ms, slowest {max(batch_seconds) * 1e3:7.1f} ms | "
                      f"index at revision {store.ann.index_revision} | saves {store.ann.saves - saves_before}, "
                      f"maintenance running {maintaining_seconds / window_seconds:4.0%} of the window | "
                      f"untrusted {store.ann.untrusted} | load {os.getloadavg()[0]:.2f}", flush=True)
            total = time.perf_counter() - started
            print(f"ingested {stored:,} images in {total:.0f} s ({stored / total:.0f} img/s); last window "
                  f"{rates[-1]:.0f} img/s = {rates[-1] / rates[0]:.0%} of the first {rates[0]:.0f} img/s", flush=True)
            print(f"files    {files_mib(db.parent)}; peak resident {peak_rss_mib():,.0f} MiB; "
                  f"load after {os.getloadavg()}", flush=True)
            print(f"copy     {store.compact.builds} full build(s), {store.compact.nbytes / 2**20:,.0f} MiB", flush=True)


def maintenance_running(store: EmbeddedGraphStore) -> bool:
    worker = store.ann._worker  # the store's background maintenance thread, if it has started one
    return worker is not None and worker.is_alive()


def record(number: int, vector: np.ndarray) -> ImageRecord:
    return ImageRecord(path=f"/bench/{number // 1000:04d}/{number:07d}.jpg", sha256=f"{number:064x}",
                       size=1000, mtime_ns=number, width=640, height=480, model=MODEL,
                       embedding=np.asarray(vector, dtype=np.float32))


def load_library(path: Path, images: int) -> np.ndarray:
    """The first ``images`` rows of the library file, made with ann_choice's generator when missing."""
    if not path.exists():
        return library_file(path.parent, images)[:images]
    mapped = np.load(path, mmap_mode="r")  # an .npy file despite its name
    if len(mapped) < images:
        raise SystemExit(f"{path} holds {len(mapped):,} vectors, fewer than --images {images:,}")
    return mapped[:images]


def files_mib(directory: Path) -> str:
    sizes: dict[str, float] = {}
    for path in directory.rglob("*"):
        if path.is_file():
            kind = "index" if ".hnsw" in str(path) else path.name.removeprefix("store.sqlite3") or "sqlite"
            sizes[kind] = sizes.get(kind, 0.0) + path.stat().st_size / 2**20
    return ", ".join(f"{kind} {mib:,.0f} MiB" for kind, mib in sorted(sizes.items()))


def peak_rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


if __name__ == "__main__":
    main()
