"""Benchmark the embedded store at library scale: shared vector files, first and warm queries, memory.

    PYTHONPATH=src .venv/bin/python bench/store_search.py               # 100k and 200k x 2048
    PYTHONPATH=src .venv/bin/python bench/store_search.py --images 20000 --kernels

Random unit vectors stand in for ResNet50 embeddings: search cost does not depend on
the values, and random data is the worst case for any pruning. Images are inserted up to
each size in ``--images`` (one store, growing), then measured there:

- the first ``nearest()`` in a fresh process (store open to first result, page cache warm),
  and the one-off rebuild of the vector files from SQLite (after a reboot or damage);
- warm ``nearest()`` and the float32 product alone;
- RSS and PSS (from /proc/<pid>/smaps_rollup) of 1, 2 and 3 processes that each ran
  queries on the store, against the same processes before their first query;
- upsert + link of new images, per image.

``--kernels`` also times alternative exact float32 layouts for the same product (and, if
torch is installed, float16/bfloat16 products for reference). The numbers are noisy on a
shared machine: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from imgwatch.store import EmbeddedGraphStore, ImageRecord
from imgwatch.store.embedded.shared_vectors import HEADER_BYTES

MODEL = "bench/random-unit"
# This bench measures the exact scan at every size; bench/store_scale.py measures the HNSW path.
EXACT_ONLY = 10**12

# A fresh process: imports first (not timed as the store's), then open + first nearest().
# With "hold", it prints its figures, then waits (for memory readings) until stdin closes.
QUERY_PROCESS = r"""
import json, sys, time
import numpy as np
from imgwatch.store import EmbeddedGraphStore

db, dim, queries, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "hold"
rng = np.random.default_rng(int(time.time_ns()) % 2**32)
if hold:
    print(json.dumps({"state": "imported"}), flush=True)
    sys.stdin.readline()
started = time.perf_counter()
store = EmbeddedGraphStore(db, ann_min_images=10**12)  # the exact scan (bench/store_scale.py: the index)
store.nearest(rng.standard_normal(dim).astype(np.float32), 10)
first = time.perf_counter() - started
for _ in range(queries - 1):
    store.nearest(rng.standard_normal(dim).astype(np.float32), 10)
print(json.dumps({"first_s": first, "rebuilds": store.vectors.rebuilds}), flush=True)
if hold:
    sys.stdin.readline()
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", default="100000,200000", help="sizes to measure at, comma-separated")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--link-batch", type=int, default=32)
    parser.add_argument("--insert-batch", type=int, default=500)
    parser.add_argument("--data-dir", type=Path,
                        help="where to put the store (default: a temp dir, removed after)")
    parser.add_argument("--kernels", action="store_true", help="also time alternative matrix-vector kernels")
    args = parser.parse_args()

    print_machine()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="imgwatch-bench-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    db_path = data_dir / "store.sqlite3"
    for suffix in ("", "-wal", "-shm", ".vectors", ".vectors-live", ".vectors-lock"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    try:
        run(args, db_path)
    finally:
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    print(f"\nload average after: {os.getloadavg()}")


def run(args: argparse.Namespace, db_path: Path) -> None:
    rng = np.random.default_rng(0)
    store = EmbeddedGraphStore(db_path, ann_min_images=EXACT_ONLY)
    store.ensure_model(MODEL, args.dim)
    inserted = 0
    for size in sorted(int(s) for s in args.images.split(",")):
        print(f"\n== {size:,} images ==")
        started = time.perf_counter()
        for start in range(inserted, size, args.insert_batch):
            count = min(args.insert_batch, size - start)
            vectors = unit_vectors(rng, count, args.dim)
            store.upsert([record(start + i, vector) for i, vector in enumerate(vectors)])
        if size > inserted:
            seconds = time.perf_counter() - started
            print(f"insert   {size - inserted:,} images in {seconds:.1f} s = {(size - inserted) / seconds:,.0f} "
                  f"images/s (batches of {args.insert_batch}, vector files updated after each commit)")
        inserted = size
        measure(args, store, db_path, rng, size)
        inserted += 5 * args.link_batch  # measure() added these
    store.close()


def measure(args: argparse.Namespace, store: EmbeddedGraphStore, db_path: Path,
            rng: np.random.Generator, size: int) -> None:
    vectors_file, live_file = store.vectors.paths
    print(f"files    SQLite {mib(db_path)}, vectors {mib(vectors_file)} ({disk_mib(vectors_file)} on disk), "
          f"live flags {mib(live_file)}")

    for _ in range(3):
        result = query_process(db_path, args.dim, queries=1)
        print(f"first    fresh process, store open to first result: {result['first_s']:.3f} s "
              f"(rebuilds {result['rebuilds']})")

    for path in (vectors_file, live_file):  # this process moves to the new files on its next query
        path.unlink()
    result = query_process(db_path, args.dim, queries=1)
    print(f"rebuild  vector files from SQLite (once, after a reboot or damage), in the first query: "
          f"{result['first_s']:.2f} s")

    query = unit_vectors(rng, 1, args.dim)[0]
    store.nearest(query, args.k)
    slots = (vectors_file.stat().st_size - HEADER_BYTES) // (4 * args.dim)
    matrix = np.memmap(vectors_file, dtype="<f4", mode="r", offset=HEADER_BYTES, shape=(slots, args.dim))
    live = matrix[: size + 1]  # ids 1..size; slot 0 unused
    queries = unit_vectors(rng, args.queries, args.dim)
    timings: dict[str, list[float]] = {"store": [], "blas": []}
    for q in queries:  # interleaved, so both see the same machine conditions
        timings["store"].append(timed(store.nearest, q, args.k))
        timings["blas"].append(timed(np.matmul, live, q))
    print(f"nearest  warm, k={args.k}, {len(queries)} queries: {summary(timings['store'])}")
    print(f"  its float32 matrix-vector product:    {summary(timings['blas'])}")
    [best] = store.nearest(np.asarray(live[124]), 1)
    print(f"check    image 123 finds itself first: {best.path == path_of(123)}, score {best.score:.6f}")

    for processes in (1, 2, 3):
        print(f"memory   {processes} querying process(es): {memory_of_processes(db_path, args.dim, processes)}")

    per_image = []
    for batch_number in range(5):
        first = size + batch_number * args.link_batch
        batch = [record(first + i, v) for i, v in enumerate(unit_vectors(rng, args.link_batch, args.dim))]
        started = time.perf_counter()
        store.upsert(batch)
        store.link(batch, threshold=0.0, top_k=10)
        per_image.append((time.perf_counter() - started) / len(batch))
    print(f"write    upsert + link of {args.link_batch} new images (top_k 10, threshold 0), per image: "
          f"{summary(per_image)}")
    print(f"memory   this process: RSS {proc_status('VmRSS')}, peak {proc_status('VmHWM')}")
    if args.kernels:
        time_kernels(np.ascontiguousarray(live), queries)
    del matrix, live


def query_process(db_path: Path, dim: int, queries: int) -> dict[str, Any]:
    command = [sys.executable, "-c", QUERY_PROCESS, str(db_path), str(dim), str(queries), "once"]
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=bench_env())
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def memory_of_processes(db_path: Path, dim: int, count: int) -> str:
    """Sums of RSS, PSS and private memory of ``count`` processes after 5 queries each, and before
    their first. PSS splits each shared page among the processes mapping it, this one included."""
    command = [sys.executable, "-c", QUERY_PROCESS, str(db_path), str(dim), "5", "hold"]
    processes = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  env=bench_env()) for _ in range(count)]
    try:
        for process in processes:
            assert process.stdout is not None and json.loads(process.stdout.readline())["state"] == "imported"
        before = [smaps_rollup(process.pid) for process in processes]
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("\n")
            process.stdin.flush()
        for process in processes:
            assert process.stdout is not None
            json.loads(process.stdout.readline())
        after = [smaps_rollup(process.pid) for process in processes]
    finally:
        for process in processes:
            if process.stdin is not None:
                process.stdin.close()
            process.wait(timeout=60)
    total = {key: sum(reading[key] for reading in after) / 2**20 for key in MEMORY_FIELDS}
    base = {key: sum(reading[key] for reading in before) / 2**20 for key in MEMORY_FIELDS}
    return (f"sum RSS {total['Rss']:.2f} GiB, PSS {total['Pss']:.2f} GiB, private {total['Private']:.2f} GiB "
            f"(before their first query: RSS {base['Rss']:.2f}, PSS {base['Pss']:.2f}, "
            f"private {base['Private']:.2f})")


MEMORY_FIELDS = ("Rss", "Pss", "Private")


def smaps_rollup(pid: int) -> dict[str, int]:
    """Rss, Pss and Private (clean + dirty: pages only this process maps) of a process, in KiB."""
    found = dict.fromkeys(MEMORY_FIELDS, 0)
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss"):
                found[key] = int(rest.split()[0])
            elif key in ("Private_Clean", "Private_Dirty"):
                found["Private"] += int(rest.split()[0])
    return found


def bench_env() -> dict[str, str]:
    source = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}


def mib(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:,.0f} MiB"


def disk_mib(path: Path) -> str:
    return f"{path.stat().st_blocks * 512 / 2**20:,.0f} MiB"


def time_kernels(matrix: np.ndarray, queries: np.ndarray) -> None:
    """Alternative layouts for the same exact float32 product, plus 16-bit references."""
    print(f"\nkernels  scores for {matrix.shape[0]} x {matrix.shape[1]}, "
          f"median/p95 over {len(queries)} queries")

    def report(name: str, kernel: Callable[[np.ndarray], object]) -> None:
        kernel(queries[0])
        print(f"  {name:<46} {summary([timed(kernel, q) for q in queries])}")

    report("float32 row-major  M @ q (the store's)", lambda q: matrix @ q)
    out = np.empty(matrix.shape[0], dtype=np.float32)
    report("float32 row-major  np.dot(M, q, out=)", lambda q: np.dot(matrix, q, out=out))
    blocks = [(s, matrix[s : s + 16384]) for s in range(0, matrix.shape[0], 16384)]

    def blocked(q: np.ndarray) -> None:
        for start, block in blocks:
            np.dot(block, q, out=out[start : start + len(block)])

    report("float32 row-major, 16384-row blocks", blocked)
    columns = np.ascontiguousarray(matrix.T)  # (dim, n): column per image
    report("float32 column-major  M.T @ q", lambda q: columns.T @ q)
    report("float32 column-major  q @ M", lambda q: q @ columns)
    try:
        import torch
    except ImportError:
        print("  (torch not installed: 16-bit kernels skipped)")
        return
    tensor = torch.from_numpy(matrix)
    report("torch float32 mv", lambda q: torch.mv(tensor, torch.from_numpy(q)))
    for dtype in (torch.float16, torch.bfloat16):
        low = tensor.to(dtype)
        report(f"torch {str(dtype).split('.')[1]} mv (pre-filter only, not exact)",
               functools.partial(_low_precision_mv, low))
        del low


def _low_precision_mv(matrix: Any, query: np.ndarray) -> object:
    import torch

    return torch.mv(matrix, torch.from_numpy(query).to(matrix.dtype))


def record(number: int, vector: np.ndarray) -> ImageRecord:
    return ImageRecord(path=path_of(number), sha256=f"{number:064x}", size=1000 + number,
                       mtime_ns=number, width=640, height=480, model=MODEL, embedding=vector)


def path_of(number: int) -> str:
    return f"/bench/photos/{number // 1000:03d}/{number:07d}.jpg"


def unit_vectors(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((count, dim), dtype=np.float32)
    normalised: np.ndarray = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return normalised


def timed(action: Callable[..., object], *arguments: object) -> float:
    started = time.perf_counter()
    action(*arguments)
    return time.perf_counter() - started


def summary(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered) * 1e3:.1f} ms, p95 {p95 * 1e3:.1f} ms"


def print_machine() -> None:
    with open("/proc/cpuinfo") as cpuinfo:
        names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    cpu = names[0] if names else "?"
    blas = "?"
    try:
        config = np.show_config(mode="dicts")
        blas_info = config["Build Dependencies"]["blas"]
        blas = f"{blas_info['name']} {blas_info['version']}"
    except Exception:  # older numpy: not worth failing the benchmark over
        pass
    memory = proc_meminfo("MemTotal")
    print(f"machine  {platform.machine()} {cpu}, {len(os.sched_getaffinity(0))} usable cores, RAM {memory}")
    print(f"software Python {platform.python_version()}, numpy {np.__version__} ({blas}), "
          f"SQLite {sqlite3.sqlite_version}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    print(f"load average before: {os.getloadavg()}")


def proc_status(field: str) -> str:
    return _proc_field("/proc/self/status", field)


def proc_meminfo(field: str) -> str:
    return _proc_field("/proc/meminfo", field)


def _proc_field(path: str, field: str) -> str:
    try:
        for line in open(path):
            if line.startswith(field + ":"):
                return f"{int(line.split()[1]) / 2**20:.2f} GiB"
    except OSError:
        pass
    return "?"


if __name__ == "__main__":
    main()
