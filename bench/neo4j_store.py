"""Benchmark the Neo4j store against a server of yours: writes, links, search latency and recall.

    IMGWATCH_NEO4J_URI=neo4j://localhost:7687 IMGWATCH_NEO4J_PASSWORD=... \\
        PYTHONPATH=src .venv/bin/python bench/neo4j_store.py --images 20000 --wipe

Random unit vectors stand in for ResNet50 embeddings. Recall compares nearest() (the
vector index, over-fetched and re-scored) with the exact top-k computed here in numpy,
and the score check confirms that the scores are raw cosines. ``--wipe`` deletes every
imgwatch node in the configured database first: use a scratch database.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np

from imgwatch.config import load_config
from imgwatch.store import ImageRecord, open_store

MODEL = "bench/random-unit"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32, help="images per upsert + link, as a worker does")
    parser.add_argument("--wipe", action="store_true", help="delete imgwatch's nodes in the database first")
    args = parser.parse_args()

    config = load_config(overrides={"general.store": "neo4j"})
    print(f"client {platform.node()} {platform.processor() or platform.machine()}, server {config.neo4j.uri}")
    store = open_store(config)
    try:
        if args.wipe:
            store.remove(state.path for state in store.file_states())
        if store.stats().images:
            raise SystemExit("the database already holds imgwatch images; pass --wipe (scratch databases only)")
        print(store.describe())
        store.ensure_model(MODEL, args.dim)
        rng = np.random.default_rng(0)
        vectors = rng.standard_normal((args.images, args.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

        upsert_s, link_s = [], []
        for start in range(0, args.images, args.batch):
            records = [record(i, vectors[i]) for i in range(start, min(start + args.batch, args.images))]
            upsert_s.append(timed(store.upsert, records))
            link_s.append(timed(store.link, records, 0.0, 10))
        total = sum(upsert_s) + sum(link_s)
        print(f"index    {args.images} images in batches of {args.batch}: {args.images / total:,.0f} images/s "
              f"(upsert {summary(upsert_s)}; link {summary(link_s)})")

        queries = vectors[rng.choice(args.images, args.queries, replace=False)] + \
            0.05 * rng.standard_normal((args.queries, args.dim)).astype(np.float32)
        latencies, hits, worst_score_error = [], 0, 0.0
        for query in queries:
            started = time.perf_counter()
            found = store.nearest(query, args.k)
            latencies.append(time.perf_counter() - started)
            unit = query / np.linalg.norm(query)
            exact = np.argsort(-(vectors @ unit))[: args.k]
            hits += len({m.path for m in found} & {path_of(int(i)) for i in exact})
            for match in found:
                true = float(vectors[int(match.path.rsplit("/", 1)[1].split(".")[0])] @ unit)
                worst_score_error = max(worst_score_error, abs(match.score - true))
        print(f"nearest  k={args.k}: {summary(latencies)}; recall@{args.k} {hits / (args.k * args.queries):.3f}; "
              f"largest score error vs numpy cosine {worst_score_error:.2e}")
        print(store.stats())
    finally:
        store.close()


def record(number: int, vector: np.ndarray) -> ImageRecord:
    return ImageRecord(path_of(number), f"{number:064x}", 1000, number, 640, 480, MODEL, vector)


def path_of(number: int) -> str:
    return f"/bench/{number}.jpg"


def timed(action: object, *arguments: object) -> float:
    started = time.perf_counter()
    action(*arguments)  # type: ignore[operator]
    return time.perf_counter() - started


def summary(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"median {statistics.median(ordered) * 1e3:.1f} ms, p95 {p95 * 1e3:.1f} ms"


if __name__ == "__main__":
    main()
