"""Benchmark the Neo4j store against a server of yours: writes, links, search latency and recall.

    IMGWATCH_NEO4J_URI=neo4j://localhost:7687 IMGWATCH_NEO4J_PASSWORD=... \\
        PYTHONPATH=src .venv/bin/python bench/neo4j_store.py --images 20000 --wipe

Random unit vectors stand in for ResNet50 embeddings. Recall compares nearest() (the
vector index, over-fetched and re-scored) with the exact top-k computed here in numpy,
and the score check confirms that the scores are raw cosines. ``--wipe`` deletes every
imgwatch node in the configured database first: use a scratch database.

``--round-trips`` needs no server: it runs worker jobs of 1, 8 and 32 files through the real
Indexer (random ResNet50 weights on the CPU, small generated JPEGs, a real embedded Valkey for
the failure ledger) against the tests' stand-in server (tests/store/neo4j_stand_in.py) and
counts what a server would be sent: transactions, statements by name, and Bolt round trips
(as FakeServer.round_trips counts them). Counts only: the stand-in times nothing.

    PYTHONPATH=src:. .venv/bin/python bench/neo4j_store.py --round-trips
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis
from PIL import Image

from imgwatch.config import load_config
from imgwatch.embedding import Embedder, load_model
from imgwatch.files import PathFilter
from imgwatch.store import ImageRecord, open_store
from imgwatch.store.neo4j import cypher
from imgwatch.valkey_server import EmbeddedValkey
from imgwatch.workers.indexer import Indexer, LinkPolicy
from imgwatch.workqueue import FailureLedger
from store_scale import cpu_name  # bench/ is on sys.path when run as a script

MODEL = "bench/random-unit"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32, help="images per upsert + link, as a worker does")
    parser.add_argument("--wipe", action="store_true", help="delete imgwatch's nodes in the database first")
    parser.add_argument("--round-trips", action="store_true",
                        help="no server: count what worker jobs send to the stand-in server (see above)")
    args = parser.parse_args()
    if args.round_trips:
        count_round_trips()
        return

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


JOB_SIZES = (1, 8, 32)  # 32: watch.batch_size, the paths of one queued job


def count_round_trips() -> None:
    """Jobs of new files, byte copies of stored files, touched files (mtime only) and removed
    files, each size in JOB_SIZES, on a stand-in already holding 64 images."""
    from tests.store.neo4j_stand_in import fake_store  # the repository root is on PYTHONPATH

    print(f"client {platform.node()} {cpu_name()}; Neo4j stand-in server (counts only, no timings)")
    names = {text: name for name, text in vars(cypher).items() if isinstance(text, str) and name.isupper()}
    model = load_model("random", device="cpu", seed=0)
    with tempfile.TemporaryDirectory() as scratch, EmbeddedValkey(
            load_config(overrides={"general.data_dir": scratch}, environ={})) as valkey, \
            Embedder(model, batch_size=16, decode_threads=2) as embedder:
        ledger = FailureLedger(redis.Redis.from_url(valkey.url), "bench-round-trips")
        root = Path(scratch) / "photos"
        store, server = fake_store()
        store.ensure_model(model.identity, model.dim)
        indexer = Indexer(embedder, store, ledger, lambda paths: None, LinkPolicy(threshold=0.9, top_k=10),
                          PathFilter.create(["jpg"], []), [str(root)])
        indexer.index([write_jpeg(root / "stored" / f"{i}.jpg", i) for i in range(64)])
        print(f"{'job':<24} {'files':>5} {'read tx':>7} {'write tx':>8} {'statements':>10} {'round trips':>11}"
              "   statements by name")
        for size in JOB_SIZES:
            new = [write_jpeg(root / f"new-{size}" / f"{i}.jpg", 1000 * size + i) for i in range(size)]
            copies = [str(root / f"copies-{size}" / f"{i}.jpg") for i in range(size)]
            for i, copy in enumerate(copies):
                Path(copy).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(root / "stored" / f"{i}.jpg", copy)
            jobs: list[tuple[str, Callable[[], object]]] = [
                ("new content", lambda new=new: indexer.index(new)),
                ("copies of stored content", lambda copies=copies: indexer.index(copies)),
                ("touched (mtime only)", lambda new=new: (touch(new), indexer.index(new))),
                ("unchanged", lambda new=new: indexer.index(new)),
                ("removed", lambda new=new: ([os.remove(path) for path in new], indexer.index(new))),
            ]
            for name, job in jobs:
                server.forget_sent()
                job()
                by_name = Counter(names.get(statement, "schema") for statement in server.statements())
                print(f"{name:<24} {size:>5} {server.transactions.count('read'):>7} "
                      f"{server.transactions.count('write'):>8} {len(server.log):>10} {server.round_trips():>11}   "
                      f"{', '.join(f'{n} {c}' for n, c in by_name.items())}")
        ledger.connection.close()


def write_jpeg(path: Path, seed: int) -> str:
    """A small JPEG of its own content (noise from ``seed``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)
    return str(path)


def touch(paths: list[str]) -> None:
    for path in paths:
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))


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
