"""Choose the ANN library for the embedded store: usearch vs faiss vs hnswlib, measured.

    flock /tmp/imgwatch-bench.lock .venv/bin/python bench/ann_choice.py --images 100000 --variant usearch-i8
    flock /tmp/imgwatch-bench.lock .venv/bin/python bench/ann_choice.py --images 100000 --variant all

Data: clustered 2048-d unit vectors shaped like a photo library's ResNet50 embeddings
(non-negative after the ReLU, random pairs at cosine ~0.3-0.5, each photo near its
topic's other photos, some near-duplicates), generated deterministically block by block
into a float32 file under --data-dir and reused by later runs, with numpy's exact top-10
of every query as ground truth.

Each variant is measured in its own subprocess (clean memory figures): build rate with
2 threads, incremental add rate (batches of 32, as a worker adds them), single-query
latency of ANN candidates (over-fetch) + exact re-score from the float32 rows, recall@10
after the re-score, file size, anonymous memory, whether another process can open the
saved file as a read-only memory-mapped view (and gets the same answers), and removal.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 2048
BLOCK_ROWS = 4096  # vectors are generated in blocks seeded by block number: any prefix is reproducible
PHOTOS_PER_TOPIC = 64  # ~1.5k topics at 100k images
LIBRARY_SEED = 20261121
QUERY_SEED = 7
BUILD_THREADS = 2
LINK_BATCH = 32
VARIANTS = [
    "usearch-f32", "usearch-f16", "usearch-i8",
    "faiss-hnsw-flat", "faiss-hnsw-sq8", "faiss-hnsw-fp16",
    "hnswlib",
]


# ---------------------------------------------------------------- data


def topic_centres(topics: int, dim: int = DIM) -> np.ndarray:
    """Non-negative topic directions (ReLU'd Gaussians: pairs of topics at cosine ~1/pi)."""
    rng = np.random.default_rng([LIBRARY_SEED, topics])
    return np.maximum(rng.standard_normal((topics, dim), dtype=np.float32), 0)


def photo_block(centres: np.ndarray, seed: int, block: int, rows: int = BLOCK_ROWS) -> np.ndarray:
    """``rows`` unit vectors: a random topic each, plus noise of a random strength, ReLU'd.

    A fifth are near-duplicates of their topic (bursts, copies: cosine ~0.98 to each
    other), the rest spread widely (cosine ~0.55-0.9 to their topic's other photos).
    """
    rng = np.random.default_rng([seed, block])
    topic = rng.integers(0, len(centres), rows)
    noise_scale = np.where(rng.random(rows) < 0.2, 0.15, rng.uniform(0.5, 1.2, rows)).astype(np.float32)
    vectors = centres[topic]
    vectors += noise_scale[:, None] * rng.standard_normal((rows, centres.shape[1]), dtype=np.float32)
    np.maximum(vectors, 0, out=vectors)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def library_file(data_dir: Path, images: int, dim: int = DIM) -> np.ndarray:
    """The library's float32 vectors (row i = image id i), a memory-mapped file made on first use."""
    path = data_dir / f"library-{images}x{dim}.f32"
    done = path.with_suffix(".done")
    topics = max(1, images // PHOTOS_PER_TOPIC)
    if not done.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        matrix = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(images, dim))
        centres = topic_centres(topics, dim)
        started = time.perf_counter()
        for block, start in enumerate(range(0, images, BLOCK_ROWS)):
            rows = min(BLOCK_ROWS, images - start)
            matrix[start : start + rows] = photo_block(centres, LIBRARY_SEED, block)[:rows]
        matrix.flush()
        del matrix
        done.touch()
        print(f"data     generated {images} x {dim} in {time.perf_counter() - started:.0f} s -> {path}")
    return np.load(path, mmap_mode="r")


def query_vectors(images: int, count: int, dim: int = DIM) -> np.ndarray:
    """New photos from the same topics (not in the library)."""
    centres = topic_centres(max(1, images // PHOTOS_PER_TOPIC), dim)
    return np.ascontiguousarray(photo_block(centres, QUERY_SEED, 0, max(count, 1))[:count])


def exact_top_k(library: np.ndarray, queries: np.ndarray, k: int, chunk_rows: int = 65536) -> np.ndarray:
    """Exact top-k ids (best first) of each query by brute force over ``library`` in chunks."""
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), k), dtype=np.int64)
    for start in range(0, len(library), chunk_rows):
        block = np.asarray(library[start : start + chunk_rows])
        scores = queries @ block.T
        take = min(k, scores.shape[1])
        top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, 1)], axis=1)
        merged_ids = np.concatenate([best_ids, top + start], axis=1)
        order = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(merged_scores, order, 1)
        best_ids = np.take_along_axis(merged_ids, order, 1)
    return best_ids


def ground_truth(data_dir: Path, library: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    path = data_dir / f"truth-{len(library)}-{len(queries)}-{k}.npy"
    if path.exists():
        return np.load(path)
    started = time.perf_counter()
    truth = exact_top_k(library, queries, k)
    np.save(path, truth)
    print(f"truth    exact top-{k} of {len(queries)} queries in {time.perf_counter() - started:.1f} s")
    describe(library, queries, truth)
    return truth


def describe(library: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> None:
    """Cosine figures of the data, to compare with a real library's."""
    sample = np.asarray(library[: min(len(library), 2000)])
    half = len(sample) // 2
    random_pairs = np.einsum("id,id->i", sample[:half], sample[half : 2 * half])
    best = np.einsum("qd,qd->q", queries, library[truth[:, 0]])
    tenth = np.einsum("qd,qd->q", queries, library[truth[:, -1]])
    print(f"data     cosine of random pairs median {np.median(random_pairs):.3f}; a query's best neighbour "
          f"median {np.median(best):.3f} (p5 {np.percentile(best, 5):.3f}), its 10th median {np.median(tenth):.3f}")


def rescore(library: np.ndarray, query: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """The exact top-k among ``candidates`` (ids = rows of ``library``), best first."""
    candidates = np.sort(candidates[candidates >= 0])  # sorted rows: sequential reads of the file
    scores = np.asarray(library[candidates]) @ query
    order = np.lexsort((candidates, -scores))[:k]
    return candidates[order]


def recall(found: list[np.ndarray], truth: np.ndarray, k: int) -> float:
    hits = sum(len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth, strict=True))
    return hits / (k * len(truth))


# ---------------------------------------------------------------- libraries


class Variant:
    """One library + storage type behind a common interface (ids are int64 image ids)."""

    name = ""
    removal = "?"

    def build(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        raise NotImplementedError

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        raise NotImplementedError

    def search(self, query: np.ndarray, count: int) -> np.ndarray:
        raise NotImplementedError

    def set_expansion(self, expansion: int) -> None:
        raise NotImplementedError

    def save(self, path: Path) -> None:
        raise NotImplementedError

    def remove(self, ids: np.ndarray) -> None:
        raise NotImplementedError

    # Code run in a separate process: open the saved file read-only memory-mapped,
    # print the candidates of the queries in sys.argv[2] as JSON lines.
    view_code = ""


class Usearch(Variant):
    removal = "yes: index.remove(keys) (tombstones, slots reused by later adds)"

    def __init__(self, dtype: str, connectivity: int, expansion_add: int) -> None:
        from usearch.index import Index

        self.name = f"usearch-{dtype}"
        self.dtype = dtype
        self.index = Index(ndim=DIM, metric="ip", dtype=dtype, connectivity=connectivity,
                           expansion_add=expansion_add)

    def build(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        for start in range(0, len(ids), 20_000):  # chunks: bounded temporary copies of the memmap
            self.index.add(ids[start : start + 20_000], np.asarray(vectors[start : start + 20_000]),
                           threads=BUILD_THREADS)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.index.add(ids, vectors, threads=BUILD_THREADS)

    def search(self, query: np.ndarray, count: int) -> np.ndarray:
        return self.index.search(query, count, threads=1).keys.astype(np.int64)

    def set_expansion(self, expansion: int) -> None:
        self.index.expansion_search = expansion

    def save(self, path: Path) -> None:
        self.index.save(str(path))

    def remove(self, ids: np.ndarray) -> None:
        self.index.remove(ids)

    view_code = """
import sys, json, numpy as np
from usearch.index import Index
index = Index.restore(sys.argv[1], view=True)
index.expansion_search = int(sys.argv[3])
for q in np.load(sys.argv[2]):
    print(json.dumps(index.search(q, int(sys.argv[4])).keys.astype(int).tolist()))
"""


class Faiss(Variant):
    removal = "no: IndexHNSW* has no remove_ids (filter with an IDSelector at search time, rebuild to reclaim)"

    def __init__(self, storage: str, connectivity: int, expansion_add: int) -> None:
        import faiss

        faiss.omp_set_num_threads(BUILD_THREADS)
        self.faiss = faiss
        self.name = f"faiss-hnsw-{storage}"
        metric = faiss.METRIC_INNER_PRODUCT
        if storage == "flat":
            inner = faiss.IndexHNSWFlat(DIM, connectivity, metric)
        else:
            kind = {"sq8": faiss.ScalarQuantizer.QT_8bit, "fp16": faiss.ScalarQuantizer.QT_fp16}[storage]
            inner = faiss.IndexHNSWSQ(DIM, kind, connectivity, metric)
        inner.hnsw.efConstruction = expansion_add
        self.inner = inner
        self.index = faiss.IndexIDMap(inner)  # image ids as labels

    def build(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if not self.inner.is_trained:  # SQ8: per-dimension ranges from a sample
            sample = np.asarray(vectors[: min(len(ids), 20_000)])
            self.inner.train(sample)
        for start in range(0, len(ids), 20_000):
            self.index.add_with_ids(np.asarray(vectors[start : start + 20_000]), ids[start : start + 20_000])

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.index.add_with_ids(vectors, ids)

    def search(self, query: np.ndarray, count: int) -> np.ndarray:
        self.faiss.omp_set_num_threads(1)
        _, labels = self.index.search(query.reshape(1, -1), count)
        self.faiss.omp_set_num_threads(BUILD_THREADS)
        return labels[0]

    def set_expansion(self, expansion: int) -> None:
        self.inner.hnsw.efSearch = expansion

    def save(self, path: Path) -> None:
        self.faiss.write_index(self.index, str(path))

    def remove(self, ids: np.ndarray) -> None:
        self.index.remove_ids(ids)  # raises: not implemented for HNSW

    view_code = """
import sys, json, numpy as np, faiss
faiss.omp_set_num_threads(1)
index = faiss.read_index(sys.argv[1], faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
faiss.downcast_index(index.index).hnsw.efSearch = int(sys.argv[3])
for q in np.load(sys.argv[2]):
    print(json.dumps(index.search(q.reshape(1, -1), int(sys.argv[4]))[1][0].tolist()))
"""


class Hnswlib(Variant):
    name = "hnswlib"
    removal = "mark_deleted(id) (filtered at search; slot reusable with allow_replace_deleted)"

    def __init__(self, connectivity: int, expansion_add: int, capacity: int) -> None:
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=DIM)
        self.index.init_index(max_elements=capacity, M=connectivity, ef_construction=expansion_add,
                              allow_replace_deleted=True)
        self.index.set_num_threads(BUILD_THREADS)

    def build(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        for start in range(0, len(ids), 20_000):
            self.index.add_items(np.asarray(vectors[start : start + 20_000]), ids[start : start + 20_000])

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.index.add_items(vectors, ids)

    def search(self, query: np.ndarray, count: int) -> np.ndarray:
        labels, _ = self.index.knn_query(query, k=count, num_threads=1)
        return labels[0].astype(np.int64)

    def set_expansion(self, expansion: int) -> None:
        self.index.set_ef(expansion)

    def save(self, path: Path) -> None:
        self.index.save_index(str(path))

    def remove(self, ids: np.ndarray) -> None:
        for vector_id in ids:
            self.index.mark_deleted(int(vector_id))

    # hnswlib has no memory-mapped view: load_index reads the whole file into the heap.
    view_code = """
import sys, json, numpy as np, hnswlib
index = hnswlib.Index(space="ip", dim=2048)
index.load_index(sys.argv[1])
index.set_ef(int(sys.argv[3]))
for q in np.load(sys.argv[2]):
    print(json.dumps(index.knn_query(q, k=int(sys.argv[4]), num_threads=1)[0][0].astype(int).tolist()))
"""


def make_variant(name: str, connectivity: int, expansion_add: int, capacity: int) -> Variant:
    if name.startswith("usearch-"):
        return Usearch(name.split("-", 1)[1], connectivity, expansion_add)
    if name.startswith("faiss-hnsw-"):
        return Faiss(name.rsplit("-", 1)[1], connectivity, expansion_add)
    if name == "hnswlib":
        return Hnswlib(connectivity, expansion_add, capacity)
    raise SystemExit(f"unknown variant {name}")


# ---------------------------------------------------------------- measurement


def measure(args: argparse.Namespace) -> dict[str, object]:
    library = library_file(args.data_dir, args.images)
    queries = query_vectors(args.images, args.queries)
    truth = ground_truth(args.data_dir, library, queries, args.k)
    added = min(args.incremental, args.images // 10)
    base = args.images - added  # built in one go; the rest added in worker-sized batches
    ids = np.arange(args.images, dtype=np.int64)
    variant = make_variant(args.variant, args.connectivity, args.expansion_add, args.images + 1000)
    result: dict[str, object] = {"variant": variant.name, "images": args.images,
                                 "connectivity": args.connectivity, "expansion_add": args.expansion_add}

    anon_before = proc_kib("RssAnon")
    started = time.perf_counter()
    variant.build(ids[:base], library[:base])
    build_s = time.perf_counter() - started
    result["build_per_s"] = round(base / build_s)
    started = time.perf_counter()
    for start in range(base, args.images, LINK_BATCH):
        variant.add(ids[start : start + LINK_BATCH], np.asarray(library[start : start + LINK_BATCH]))
    add_s = time.perf_counter() - started
    result["add_per_s"] = round(added / add_s) if added else None
    result["anon_mib"] = round((proc_kib("RssAnon") - anon_before) / 1024)
    print(f"{variant.name}: build {base} in {build_s:.0f} s = {base / build_s:,.0f}/s, "
          f"add {added} in batches of {LINK_BATCH}: {added / add_s:,.0f}/s, anon memory +{result['anon_mib']} MiB",
          flush=True)

    rows = []
    for expansion in args.expansion_search:
        variant.set_expansion(expansion)
        for overfetch in args.overfetch:
            count = max(overfetch, args.k)
            variant.search(queries[0], count)  # warm
            ann_times, total_times, found = [], [], []
            for query in queries:
                started = time.perf_counter()
                candidates = variant.search(query, count)
                middle = time.perf_counter()
                found.append(rescore(library, query, candidates, args.k))
                ended = time.perf_counter()
                ann_times.append(middle - started)
                total_times.append(ended - started)
            row = {"expansion_search": expansion, "candidates": count,
                   "recall_at_10": round(recall(found, truth, args.k), 4),
                   "ann_p50_ms": ms(percentile(ann_times, 50)), "p50_ms": ms(percentile(total_times, 50)),
                   "p95_ms": ms(percentile(total_times, 95))}
            rows.append(row)
            print(f"  ef {expansion:>4} candidates {count:>3}: recall@10 {row['recall_at_10']:.4f}, "
                  f"ANN p50 {row['ann_p50_ms']} ms, +re-score p50 {row['p50_ms']} ms p95 {row['p95_ms']} ms",
                  flush=True)
    result["search"] = rows

    with tempfile.TemporaryDirectory(dir=args.data_dir) as scratch:
        index_path = Path(scratch) / "index.bin"
        started = time.perf_counter()
        variant.save(index_path)
        result["save_s"] = round(time.perf_counter() - started, 1)
        result["file_mib"] = round(index_path.stat().st_size / 2**20)
        result["view"] = check_view(variant, index_path, queries[:20], args)
    print(f"  file {result['file_mib']} MiB (saved in {result['save_s']} s); view: {result['view']}", flush=True)

    try:
        gone = ids[:1000]
        variant.remove(gone)
        variant.set_expansion(args.expansion_search[-1])
        leaked = sum(len(set(variant.search(q, 40).tolist()) & set(gone.tolist())) for q in queries)
        result["removal"] = f"{variant.removal}; removed ids returned afterwards: {leaked}"
    except Exception as error:  # the library refuses: that is the finding
        result["removal"] = f"{variant.removal} ({type(error).__name__})"
    print(f"  removal: {result['removal']}", flush=True)
    return result


def check_view(variant: Variant, index_path: Path, queries: np.ndarray, args: argparse.Namespace) -> str:
    """Open the file from another process read-only; same candidates? memory mapped or copied?"""
    expansion, count = args.expansion_search[-1], max(args.overfetch[-1], args.k)
    variant.set_expansion(expansion)
    here = [variant.search(q, count).tolist() for q in queries]
    query_path = index_path.with_name("queries.npy")
    np.save(query_path, queries)
    code = variant.view_code + "\nprint('MEM', open('/proc/self/status').read().split('RssAnon:')[1].split()[0], " \
        "open('/proc/self/status').read().split('RssFile:')[1].split()[0])\n"
    started = time.perf_counter()
    command = [sys.executable, "-c", code, str(index_path), str(query_path), str(expansion), str(count)]
    completed = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if completed.returncode:
        return f"failed: {completed.stderr.strip().splitlines()[-1]}"
    lines = completed.stdout.strip().splitlines()
    there = [json.loads(line) for line in lines[:-1]]
    _, anon_kib, file_kib = lines[-1].split()
    same = sum(a == b for a, b in zip(here, there, strict=True))
    return (f"other process: {same}/{len(here)} queries same candidates, RssAnon {int(anon_kib) // 1024} MiB, "
            f"RssFile {int(file_kib) // 1024} MiB, open+20 queries {elapsed:.1f} s")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(seconds: float) -> float:
    return round(seconds * 1e3, 2)


def proc_kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def print_machine() -> None:
    import importlib.metadata as metadata

    with open("/proc/cpuinfo") as cpuinfo:
        names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    versions = []
    for package in ("usearch", "faiss-cpu", "hnswlib", "numpy"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    print(f"machine  {platform.machine()} {names[0] if names else '?'}, {len(os.sched_getaffinity(0))} cores; "
          f"Python {platform.python_version()}; {', '.join(versions)}; load {os.getloadavg()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--variant", default="all", help=f"one of {VARIANTS}, or 'all' (one subprocess each)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--incremental", type=int, default=2000, help="images added in batches of 32 after the build")
    parser.add_argument("--connectivity", type=int, default=16)
    parser.add_argument("--expansion-add", type=int, default=128)
    parser.add_argument("--expansion-search", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--overfetch", type=int, nargs="+", default=[10, 40])
    parser.add_argument("--data-dir", type=Path, default=Path("/work/ann-bench"))
    parser.add_argument("--json", type=Path, help="append each variant's result as a JSON line")
    args = parser.parse_args()
    print_machine()
    if args.variant != "all":
        result = measure(args)
        if args.json:
            with args.json.open("a") as out:
                out.write(json.dumps(result) + "\n")
        return
    library_file(args.data_dir, args.images)  # make the data once, before the subprocesses
    for name in VARIANTS:
        # the last --variant wins in argparse
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--variant", name], check=False)


if __name__ == "__main__":
    main()

