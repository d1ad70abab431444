"""Benchmark the embedded store through its contract as the library grows: nearest() and upsert + link.

    flock /tmp/imgwatch-bench.lock env PYTHONPATH=src .venv/bin/python bench/store_scale.py \
        --sizes 1000,20000,200000 --library /tmp/ann-bench-i26/library-500000x2048.f32

Vectors are rows of the clustered library made by bench/ann_scale.py (``--library``, a raw
``.npy`` file of unit 2048-d float32 vectors), or random clustered ones when it is missing. One
store grows to each size in ``--sizes``; at each size:

- the HNSW index is brought forward in this thread (timed: a full build the first time),
- warm ``nearest(k=10)`` through the index and, from a second store object on the same
  file with the threshold above the size, the exact scan; recall@10 of the first
  against the second, for two kinds of query: "similar" (a stored image's vector plus
  noise, cosine ~0.9 to it: another shot of a photographed scene) and "unrelated" (rows
  from the far end of the library, whose topics the first rows barely hold: the 10th and
  50th best scores differ by ~0.01, a flat neighbourhood where any top 10 is arbitrary; with a
  library file much larger than the sizes, its far end's topics are held by the first rows
  too), and "unlike" (photos of topics the library does not hold, as ann_scale's kinds step);
  with how many of them the store scanned exactly rather than trust the index there
  (ann_search.TailCheck), and the p50 over all of the kind's queries,
- the int8 copy links scan (compact_copy.py), built in full by a third store object's first
  link (one image; timed: what a worker started on this library pays once) and its size,
- upsert + link of new images in batches (per image), "copy" (the first store object: links
  through the int8 copy from any size, the index kept forward for ``nearest()`` as shipped)
  and "exact" (the second: float32 scan); after each batch its links are checked against
  brute force over the whole store (the exact store object's ``nearest``): every neighbour
  an image would pick (its ``--top-k`` best at or above ``--threshold``) must be linked to
  it, "missed" counts those that are not,
- warm ``nearest()`` again once the writes since the index reach the maintenance bound
  (each query then also scans those), the worst case before maintenance.

Below ``ANN_MIN_IMAGES`` the store itself searches exactly, and below ``COMPACT_MIN_IMAGES``
it links by the float32 scan; the index and copy figures there are what they would cost with
the thresholds lowered (the copy's links then also pay the index's bookkeeping, as above
``ANN_MIN_IMAGES``).
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
import torch  # noqa: F401  (loaded up front, as in a worker: the copy's timed build must not include the import)

from ann_scale import photos_unlike_library
from imgwatch.store import EmbeddedGraphStore, ImageRecord
from imgwatch.store.embedded.ann_search import ANN_MIN_IMAGES, delta_bound
from imgwatch.store.embedded.compact_copy import COMPACT_MIN_IMAGES
from imgwatch.store.linking import SCORE_EPSILON

MODEL = "bench/clustered-unit"
NEVER = 10**12  # an ann_min_images / compact_min_images no library reaches: exact search, float32 links


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,20000,200000")
    parser.add_argument("--library", default="/work/ann-bench/library-1000000x2048.f32")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--link-batch", type=int, default=32)
    parser.add_argument("--link-batches", type=int, default=8)
    parser.add_argument("--threshold", type=float, default=0.8, help="link threshold (the config's default)")
    parser.add_argument("--top-k", type=int, default=10, help="links picked per image (the config's default)")
    parser.add_argument("--dir", default=None, help="where the store goes (default: a temporary directory)")
    parser.add_argument("--link-device", default="cpu", help="where the int8 copy for links lives: cpu, or cuda as a "
                                                             "GPU worker holds it")
    parser.add_argument("--store", type=Path, default=None,
                        help="grow this store instead of a new one (bench/ingest_rate.py --keep leaves one holding "
                             "the library's first rows, named as here)")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    library = load_library(Path(args.library), args.dim, max(sizes) * 2 + 10_000)
    print(f"machine  {platform.machine()} {cpu_name()}, {len(os.sched_getaffinity(0))} cores; "
          f"numpy {np.__version__}; load {os.getloadavg()}; ANN_MIN_IMAGES {ANN_MIN_IMAGES}; "
          f"COMPACT_MIN_IMAGES {COMPACT_MIN_IMAGES}")
    # Unrelated queries and images added for linking come from the far end of the library.
    unrelated = np.asarray(library[-args.queries :])
    unlike = photos_unlike_library(args.queries, args.dim)
    spare = len(library) - args.queries
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        db = args.store or Path(directory) / "store.sqlite3"
        with (EmbeddedGraphStore(db, ann_min_images=0, compact_min_images=0, link_device=args.link_device) as indexed,
              EmbeddedGraphStore(db, ann_min_images=NEVER, compact_min_images=NEVER) as exact):
            indexed.ensure_model(MODEL, args.dim)
            stored = indexed.stats().images
            for size in sizes:
                started = time.perf_counter()
                while stored < size:
                    step = min(1000, size - stored)
                    indexed.upsert([record(n, library[n]) for n in range(stored, stored + step)])
                    stored += step
                fill_s = time.perf_counter() - started
                started = time.perf_counter()
                indexed.ann.maintain_now(args.dim)
                maintain_s = time.perf_counter() - started
                figures = [f"size {size:>9,}", f"fill {fill_s:6.1f} s", f"index forward {maintain_s:6.1f} s"]
                figures.append(copy_build(db, record(stored - 1, library[stored - 1]), args.threshold, args.top_k,
                                          args.link_device))
                similar = similar_queries(library, size, args.queries)
                through_index = [indexed.nearest(q, 10) for q in similar[:5]]  # warm-up, opens the index
                seconds_index = timed_queries(indexed, similar)
                seconds_exact = timed_queries(exact, similar)
                assert through_index and indexed.ann.index_revision is not None
                figures.append(f"nearest p50 index {p50(seconds_index)} / exact {p50(seconds_exact)}")
                for name, queries in (("similar", similar), ("unrelated", unrelated), ("unlike", unlike)):
                    hits, scanned_before, seconds = 0, indexed.ann.untrusted, []
                    for query in queries:
                        truth = {m.path for m in exact.nearest(query, 10)}
                        started = time.perf_counter()
                        found = indexed.nearest(query, 10)
                        seconds.append(time.perf_counter() - started)
                        hits += len(truth & {m.path for m in found})
                    figures.append(f"recall@10 {name} {hits / (10 * len(queries)):.3f} (scanned "
                                   f"{indexed.ann.untrusted - scanned_before}/{len(queries)}, p50 {p50(seconds)})")
                for name, store in (("copy", indexed), ("exact", exact)):
                    per_image, picks, missed = [], 0, 0
                    for _ in range(args.link_batches):
                        batch = [record(n, library[n]) for n in range(spare - args.link_batch, spare)]
                        spare -= args.link_batch
                        started = time.perf_counter()
                        store.upsert(batch)
                        store.link(batch, args.threshold, args.top_k)
                        per_image.append((time.perf_counter() - started) / len(batch))
                        batch_picks, batch_missed = missed_links(store, exact, batch, args.threshold, args.top_k)
                        picks, missed = picks + batch_picks, missed + batch_missed
                    stored_extra = args.link_batch * args.link_batches
                    figures.append(f"upsert+link/image {name} {p50(per_image)} (+{stored_extra} images; "
                                   f"links vs brute force: {missed} missed of {picks})")
                figures.append(f"load {os.getloadavg()[0]:.2f}")
                # The worst case before maintenance: as many unindexed writes as the bound allows.
                written = delta_bound(size) - 2 * args.link_batch * args.link_batches
                for start in range(stored, stored + written, 1000):
                    indexed.upsert([record(n, library[n]) for n in range(start, min(start + 1000, stored + written))])
                stored += written
                seconds_delta = timed_queries(indexed, similar)
                figures.append(f"nearest p50 index with {delta_bound(size):,} writes since it {p50(seconds_delta)}")
                print(" | ".join(figures), flush=True)
    print(f"load after {os.getloadavg()}")


def copy_build(db: Path, image: ImageRecord, threshold: float, top_k: int, link_device: str = "cpu") -> str:
    """The int8 copy's full build at this size: the first link (of one stored image) by a new store object."""
    with EmbeddedGraphStore(db, ann_min_images=NEVER, compact_min_images=0, link_device=link_device) as fresh:
        started = time.perf_counter()
        fresh.link([image], threshold, top_k)
        seconds = time.perf_counter() - started
        assert fresh.compact.builds == 1
        return f"copy build {seconds:.2f} s ({fresh.compact.nbytes / 2**20:,.1f} MiB)"


def similar_queries(library: np.ndarray, stored: int, count: int) -> np.ndarray:
    """Stored images' vectors plus noise (cosine ~0.9 to the original), normalised."""
    rng = np.random.default_rng(stored)
    rows = np.sort(rng.choice(stored, size=min(count, stored), replace=False))
    vectors = np.asarray(library[rows]) + 0.0105 * rng.standard_normal((len(rows), library.shape[1]), dtype=np.float32)
    normalised: np.ndarray = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return normalised


def missed_links(linked: EmbeddedGraphStore, brute_force: EmbeddedGraphStore, batch: list[ImageRecord],
                 threshold: float, top_k: int) -> tuple[int, int]:
    """(picks, missed): each batch image's picks by brute force over the whole store (its top_k best
    other images at or above threshold), and how many of them ``linked`` holds no link for."""
    picks = missed = 0
    for image in batch:
        best = brute_force.nearest(image.embedding, top_k + 1, exclude=[image.path])
        if len(best) > top_k and best[top_k - 1].score - best[top_k].score <= SCORE_EPSILON:
            best = best[: top_k - 1]  # the last pick is a tie: either image may be linked
        wanted = {m.path: m.score for m in best[:top_k] if m.score >= threshold}
        linked_to = {m.path for m in linked.neighbours(image.path)}
        picks += len(wanted)
        for path in wanted.keys() - linked_to:
            missed += 1
            print(f"missed link {image.path} -> {path} (score {wanted[path]:.5f}; brute force's top {top_k}: "
                  f"{[round(m.score, 5) for m in best]})", flush=True)
    return picks, missed


def timed_queries(store: EmbeddedGraphStore, queries: np.ndarray) -> list[float]:
    seconds = []
    for query in queries:
        started = time.perf_counter()
        store.nearest(query, 10)
        seconds.append(time.perf_counter() - started)
    return seconds


def p50(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) * 1e3:.2f} ms"


def record(number: int, vector: np.ndarray) -> ImageRecord:
    return ImageRecord(path=f"/bench/{number // 1000:04d}/{number:07d}.jpg", sha256=f"{number:064x}",
                       size=1000, mtime_ns=number, width=640, height=480, model=MODEL,
                       embedding=np.asarray(vector, dtype=np.float32))


def load_library(path: Path, dim: int, rows: int) -> np.ndarray:
    if path.exists():
        mapped = np.load(path, mmap_mode="r")  # an .npy file despite its name
        if mapped.shape[1] != dim:
            raise SystemExit(f"{path} holds {mapped.shape[1]}-d vectors, not {dim}")
        return mapped[: min(rows, len(mapped))]
    print(f"{path} missing: random clustered vectors instead")
    rng = np.random.default_rng(7)
    centres = np.maximum(rng.standard_normal((500, dim), dtype=np.float32), 0)
    vectors = centres[rng.integers(0, 500, rows)] + 0.8 * rng.standard_normal((rows, dim), dtype=np.float32)
    np.maximum(vectors, 0, out=vectors)
    normalised: np.ndarray = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return normalised


def cpu_name() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    return names[0] if names else "?"


if __name__ == "__main__":
    main()
