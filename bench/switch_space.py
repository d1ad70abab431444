"""How long the embedded store's switch_space takes: the pending space (a re-index to a new model)
becoming the active one, for N images at dim D, with the part each step takes.

The store is seeded with N images in the active space and the same N in a complete pending
space (groups of five near-duplicates, so the new space has links to compute), then switched
once. Steps: reading the pending vectors into a temporary file, computing the new links (a batched
scan of an int8 copy of the pending vectors from compact_min_images images, exact below), the one write
transaction (catch-up, vectors, links, model), and the vector files rebuilt for every process.
A second process meanwhile searches the store four times a second: its slowest answer says how
long a search waited (none fails; they answer from the old space until the commit).

    python bench/switch_space.py --images 100000 --dim 2048
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from imgwatch.store import EmbeddedGraphStore, ImageRecord
from imgwatch.store.embedded import spaces

OLD_MODEL, NEW_MODEL = "bench/old", "bench/new"
GROUP = 5  # near-duplicates per group: cosine ~0.92 within a group, ~0 across
NOISE = 0.3
BATCH = 2000
THRESHOLD, TOP_K = 0.8, 5
SEARCH_EVERY_SECONDS = 0.25


def unit_rows(rng: np.random.Generator, centres: np.ndarray, count: int, start: int) -> np.ndarray:
    rows = centres[(np.arange(start, start + count) // GROUP) % len(centres)]
    rows = rows + NOISE * rng.standard_normal(rows.shape, dtype=np.float32) / np.sqrt(rows.shape[1])
    normalised: np.ndarray = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return normalised.astype(np.float32)


def batches(images: int, dim: int, seed: int) -> Iterator[tuple[int, np.ndarray]]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((images // GROUP + 1, dim), dtype=np.float32) / np.sqrt(dim)
    for start in range(0, images, BATCH):
        yield start, unit_rows(rng, centres, min(BATCH, images - start), start)


def path_of(index: int) -> str:
    return f"/photos/{index // 1000:03d}/{index:07d}.jpg"


def seed(store: EmbeddedGraphStore, images: int, dim: int) -> None:
    store.ensure_model(OLD_MODEL, dim)
    for start, vectors in batches(images, dim, seed=1):
        store.upsert([ImageRecord(path_of(start + i), f"{start + i:064x}", 1, 1, 1, 1, OLD_MODEL, vector)
                      for i, vector in enumerate(vectors)])
    store.begin_space(NEW_MODEL, dim)
    for start, vectors in batches(images, dim, seed=2):
        store.put_pending([(path_of(start + i), f"{start + i:064x}", vector) for i, vector in enumerate(vectors)])


def timed(steps: dict[str, float], name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            steps[name] = steps.get(name, 0.0) + time.perf_counter() - started

    return wrapper


def search_loop(db_path: Path, dim: int, stop: Any, results: Any) -> None:
    """Another process searching while the switch runs: its slowest answer and any failure."""
    query = np.zeros(dim, dtype=np.float32)
    query[0] = 1.0
    slowest, answered, failed = 0.0, 0, 0
    with EmbeddedGraphStore(db_path) as store:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                store.nearest(query, 10)
                answered += 1
            except Exception:  # counted: the bench reports it
                failed += 1
            slowest = max(slowest, time.perf_counter() - started)
            stop.wait(SEARCH_EVERY_SECONDS)  # a person searching, not a core taken from the switch
    results.put((slowest, answered, failed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--folder", type=Path, help="where the store goes (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        db_path = Path(folder) / "store.sqlite3"
        with EmbeddedGraphStore(db_path) as store:
            started = time.perf_counter()
            seed(store, args.images, args.dim)
            seconds = time.perf_counter() - started
            print(f"seeded {args.images:,} images at dim {args.dim} (both spaces) in {seconds:.0f} s")
            steps: dict[str, float] = {}
            spaces.read_vectors = timed(steps, "read pending vectors", spaces.read_vectors)  # type: ignore[assignment]
            spaces.compute_links = timed(steps, "compute links", spaces.compute_links)  # type: ignore[assignment]
            store._update_vectors = timed(steps, "vector files rebuilt", store._update_vectors)  # type: ignore[method-assign]
            context = multiprocessing.get_context("spawn")
            stop, results = context.Event(), context.Queue()
            searcher = context.Process(target=search_loop, args=(db_path, args.dim, stop, results))
            searcher.start()
            time.sleep(2)  # its first searches map the files
            started = time.perf_counter()
            links = store.switch_space(THRESHOLD, TOP_K)
            total = time.perf_counter() - started
            stop.set()
            slowest, answered, failed = results.get(timeout=600)
            searcher.join()
            assert store.recorded_model() == (NEW_MODEL, args.dim) and store.pending_space() is None
        steps["write transaction (catch-up, swap, commit)"] = total - sum(steps.values())
        print(f"switch_space: {total:.1f} s, {links:,} links")
        print("| step | seconds |")
        print("|---|---|")
        for name, seconds in steps.items():
            print(f"| {name} | {seconds:.1f} |")
        print(f"search meanwhile (another process): {answered:,} answers, {failed} failed, slowest {slowest:.2f} s")
        print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
