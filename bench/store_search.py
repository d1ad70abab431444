"""Benchmark the embedded store: inserts, warm exact nearest() and link() at library scale.

    PYTHONPATH=src .venv/bin/python bench/store_search.py               # 100k x 2048
    PYTHONPATH=src .venv/bin/python bench/store_search.py --images 20000 --kernels

Random unit vectors stand in for ResNet50 embeddings: search cost does not depend on
the values, and random data is the worst case for any pruning. ``--kernels`` also
times alternative exact float32 layouts for the same matrix-vector product (and, if
torch is installed, float16/bfloat16 products for reference) so layout choices can
be re-checked on other machines. The numbers are noisy on a shared machine: the
load average is printed before and after.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from imgwatch.store import EmbeddedGraphStore, ImageRecord

MODEL = "bench/random-unit"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=100_000)
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
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    try:
        run(args, db_path)
    finally:
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)


def run(args: argparse.Namespace, db_path: Path) -> None:
    rng = np.random.default_rng(0)
    store = EmbeddedGraphStore(db_path)
    store.ensure_model(MODEL, args.dim)

    started = time.perf_counter()
    for start in range(0, args.images, args.insert_batch):
        count = min(args.insert_batch, args.images - start)
        vectors = unit_vectors(rng, count, args.dim)
        store.upsert([record(start + i, vector) for i, vector in enumerate(vectors)])
    insert_s = time.perf_counter() - started
    print(f"\ninsert   {args.images} images in {insert_s:.1f} s = {args.images / insert_s:,.0f} images/s "
          f"(batches of {args.insert_batch}); file {db_path.stat().st_size / 2**20:,.0f} MiB")

    query = unit_vectors(rng, 1, args.dim)[0]
    started = time.perf_counter()
    store.nearest(query, args.k)
    print(f"cold     first nearest() loads the index: {time.perf_counter() - started:.2f} s")

    index = store.mirror.index  # the store's in-memory mirror; ids are 1..N in insertion order
    assert index is not None
    live = index._matrix[: len(index)]
    queries = unit_vectors(rng, args.queries, args.dim)
    # Interleaved, so the three see the same machine conditions.
    timings: dict[str, list[float]] = {"store": [], "index": [], "blas": []}
    for q in queries:
        timings["store"].append(timed(store.nearest, q, args.k))
        timings["index"].append(timed(index.search, q, args.k))
        timings["blas"].append(timed(np.matmul, live, q))
    print(f"nearest  warm, k={args.k}, {len(queries)} queries: {summary(timings['store'])}")
    print(f"  VectorIndex.search alone:             {summary(timings['index'])}")
    print(f"  its float32 matrix-vector product:    {summary(timings['blas'])}")
    [best] = store.nearest(index.vectors([124])[0], 1)
    print(f"check    image 123 finds itself first: {best.path == path_of(123)}, score {best.score:.6f}")

    batch_ids = list(range(1, 1 + args.link_batch))
    batch = [record(i - 1, vector) for i, vector in zip(batch_ids, index.vectors(batch_ids), strict=True)]
    link_timings, written = [], 0
    for _ in range(5):
        started = time.perf_counter()
        written = store.link(batch, threshold=0.0, top_k=10)
        link_timings.append(time.perf_counter() - started)
    print(f"link     batch of {args.link_batch} (top_k=10, threshold 0, {written} links written): "
          f"{summary(link_timings)}")

    store.upsert([record(args.images + i, v) for i, v in enumerate(unit_vectors(rng, 32, args.dim))])
    print(f"refresh  nearest() right after 32 new images were committed: "
          f"{timed(store.nearest, query, args.k) * 1e3:.1f} ms")

    stats = store.stats()
    print(f"stats    {stats.images} images, {stats.links} links; index {index.nbytes / 2**20:,.0f} MiB "
          f"(capacity {index.capacity})")
    print(f"memory   RSS {proc_status('VmRSS')}, peak {proc_status('VmHWM')}")

    if args.kernels:
        time_kernels(index._matrix[: len(index)], queries)
    store.close()
    print(f"\nload average after: {os.getloadavg()}")


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
