"""The HNSW index (src/imgwatch/store/embedded/ann.py) at 1k, 100k and 1M images.

Steps, each short enough to hold the shared benchmark lock for under ~10 minutes:

    B="flock /tmp/imgwatch-bench.lock .venv/bin/python bench/ann_scale.py"
    $B data                          # 1M x 2048 float32 file (8 GB) + exact top-10 of 200 queries
    $B build --budget-s 480          # repeat until it says "complete": adds in chunks, saves, resumes
    $B measure                       # the figures below
    $B kinds                         # the store's search path at 1M, by kind of query
    $B scan --images 200000          # batched exact scans of a compact copy (no index needed)
    $B clean                         # delete the big files (keeps nothing but this script)

measure prints, for indexes of 1k, 100k and 1M images (the 1k and 100k ones are the
saved snapshots of the same build, so all three hold the same kind of data):

- upsert+link-like cost per image: a batch of 32 new images is added to the index, its
  candidates searched (OVERFETCH x top 10, excluding itself) and re-scored exactly from the
  float32 file; the median over batches, divided by 32;
- warm nearest(): a single query through a read-only memory-mapped view, candidates +
  exact re-score, p50/p95 (second pass over the queries: pages already in the page cache);
- recall@10 of those answers against numpy's exact top 10 over the whole float32 file,
  for a few search breadths and candidate counts.

kinds runs the store's own search code (vectors.SlotVectors over the mapped float32 file,
candidates from ann_search.index_proposer, its TailCheck deciding which answers stand and
which queries are scanned exactly) at IMAGES for three kinds of query: a new photo of a
stored topic (measure's queries), another shot of a stored photo (a stored vector plus
noise, cosine ~0.9 to it), and a photo unlike the library (a topic it does not hold: its
ten best are near-ties). Per kind: recall@10 against exact truth, the share scanned, and
warm latency; for the first kind, also the graph search and the tail check timed alone (the
rest of an index answer is the exact re-score). What it leaves out of the store: SQLite's
id -> path lookup.

scan weighs the lever against the graph for a worker's linking on the CPU: every query of a
batch (32 or 256 new photos of stored topics) scored against the whole library in one product,
so the library is read once per batch instead of once per image, then each query's
SCAN_CANDIDATES best by that product re-scored exactly from the float32 rows. Products: numpy
float32 (OpenBLAS; exact, nothing re-scored), torch bfloat16 (a bf16 copy of the library),
torch int8 (``torch._int_mm``, an int8 copy scaled per row), and fbgemm's int8 GEMM (torch's
dynamically quantised Linear with the library as its per-row-quantised weight). Per method
and batch: time per image (median of SCAN_REPEATS), and against numpy's exact top 10 at or
above LINK_THRESHOLD over the whole library (the links an image would pick), how many a
method's answer misses, and the largest error of its approximate scores.

Data as in bench/ann_choice.py (clustered, photo-like 2048-d unit vectors).
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ann_choice import (
    LIBRARY_SEED,
    PHOTOS_PER_TOPIC,
    exact_top_k,
    ground_truth,
    library_file,
    percentile,
    photo_block,
    print_machine,
    proc_kib,
    query_vectors,
    topic_centres,
)
from imgwatch.store.embedded import ann
from imgwatch.store.embedded.ann import HnswIndex, IndexFileUnusable, candidate_count
from imgwatch.store.embedded.ann_search import TailCheck, candidates_for, index_proposer
from imgwatch.store.embedded.vectors import SlotVectors
from imgwatch.store.linking import SCORE_EPSILON

IMAGES = 1_000_000
SNAPSHOTS = (1_000, 100_000)  # saved on the way to IMAGES: the smaller sizes measured
QUERIES = 200
K = 10
LINK_BATCH = 32
BATCHES = 15
BUILD_CHUNK = 10_000
NEW_IMAGES_SEED = 99  # new photos for the upsert+link measurement (not in the library)
KIND_QUERIES = 100
OTHER_TOPICS_SEED = 4242  # topics of photos unlike the library
SCAN_BATCHES = (32, 256)
SCAN_CANDIDATES = 100  # as ann_search.MIN_CANDIDATES: re-scoring 100 rows costs ~0.1 ms
SCAN_REPEATS = 3
SCAN_CHUNK = 65_536  # rows per step when making the compact copies and the truth
LINK_THRESHOLD = 0.8  # the config's default link threshold


def index_dir(data_dir: Path, size: int) -> Path:
    # One folder per graph setting, so a denser build does not resume a sparser one.
    return data_dir / f"index-{size}-m{ann.CONNECTIVITY}-e{ann.EXPANSION_ADD}"


def step_data(args: argparse.Namespace) -> None:
    library = library_file(args.data_dir, args.images)
    ground_truth(args.data_dir, library, query_vectors(args.images, QUERIES), K)


def step_build(args: argparse.Namespace) -> None:
    """Add rows to the IMAGES index until done or the time budget is spent; save; resume next time."""
    library = library_file(args.data_dir, args.images)
    target = index_dir(args.data_dir, args.images)
    try:
        index = HnswIndex.open(target, ann_dim(library), view=False)
        print(f"resume   {len(index):,} images already indexed")
    except IndexFileUnusable:
        index = HnswIndex(ann_dim(library), revision=0)
    started = time.perf_counter()
    done = len(index)  # rows [0, done) are in: the revision counts rows here
    while done < args.images and time.perf_counter() - started < args.budget_s:
        # Stop at each snapshot size so it can be saved as the smaller library.
        end = min(done + BUILD_CHUNK, args.images, *[s for s in SNAPSHOTS if s > done])
        chunk_started, chunk_start = time.perf_counter(), done
        index.add(np.arange(done, end), np.asarray(library[done:end]), threads=args.build_threads)
        done = end
        index.revision = done
        if done in SNAPSHOTS:
            index.save(index_dir(args.data_dir, done))
        if done % 50_000 == 0:
            print(f"  {done:>9,} images; this chunk {(end - chunk_start) / (time.perf_counter() - chunk_started):,.0f}"
                  f" images/s", flush=True)
    elapsed = time.perf_counter() - started
    saving = time.perf_counter()
    index.save(target)
    print(f"build    {len(index):,} images indexed (this run {elapsed:.0f} s), saved in "
          f"{time.perf_counter() - saving:.1f} s, {dir_mib(target):,.0f} MiB; "
          f"{'complete' if done >= args.images else 'run again to continue'}")


def step_measure(args: argparse.Namespace) -> None:
    library = library_file(args.data_dir, args.images)
    queries = query_vectors(args.images, QUERIES)
    truth = ground_truth(args.data_dir, library, queries, K)
    sizes = [*SNAPSHOTS, args.images]
    for size in sizes:
        try:
            measure_upsert_and_link(args, library, size)
        except IndexFileUnusable as error:
            print(f"{size:>9,}: not built ({error})")
    measure_queries(args, library, queries, truth)
    measure_exact(library, queries[:5])


def measure_upsert_and_link(args: argparse.Namespace, library: np.ndarray, size: int) -> None:
    """Per image: add to the index + candidate search + exact re-score, batches of 32."""
    dim = ann_dim(library)
    started = time.perf_counter()
    index = HnswIndex.open(index_dir(args.data_dir, size), dim, view=False)
    load_s = time.perf_counter() - started
    centres = topic_centres(max(1, args.images // PHOTOS_PER_TOPIC), dim)
    next_id = args.images + 1_000_000  # ids of new images: beyond the library's rows
    per_image, add_part, search_part = [], [], []
    for batch_number in range(BATCHES + 1):
        batch = photo_block(centres, NEW_IMAGES_SEED, batch_number, LINK_BATCH)
        ids = np.arange(next_id, next_id + LINK_BATCH)
        next_id += LINK_BATCH
        started = time.perf_counter()
        index.add(ids, batch, threads=2)
        added = time.perf_counter()
        found = index.candidates(batch, candidate_count(K), exclude=[{int(i)} for i in ids], threads=2)
        for vector, candidates in zip(batch, found, strict=True):
            exact_rescore(library, batch, ids, vector, candidates)
        ended = time.perf_counter()
        if batch_number:  # the first batch warms caches
            per_image.append((ended - started) / LINK_BATCH)
            add_part.append((added - started) / LINK_BATCH)
            search_part.append((ended - added) / LINK_BATCH)
    print(f"{size:>9,} images: upsert+link per image median {ms(statistics.median(per_image))} ms "
          f"(add {ms(statistics.median(add_part))} + candidates & re-score {ms(statistics.median(search_part))}), "
          f"p95 {ms(percentile(per_image, 95))} ms; load of the writable copy {load_s:.1f} s", flush=True)


def exact_rescore(library: np.ndarray, batch: np.ndarray, batch_ids: np.ndarray, query: np.ndarray,
                  candidates: np.ndarray) -> np.ndarray:
    """Exact top-10 of the candidates: library rows from the float32 file, batch images from memory."""
    in_library = np.sort(candidates[candidates < len(library)])
    vectors = np.concatenate([np.asarray(library[in_library]),
                              batch[np.isin(batch_ids, candidates)]])
    ids = np.concatenate([in_library, batch_ids[np.isin(batch_ids, candidates)]])
    scores = vectors @ query
    order = np.lexsort((ids, -scores))[:K]
    return ids[order]


def measure_queries(args: argparse.Namespace, library: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> None:
    """Warm single-query nearest() at IMAGES through a read-only view, and recall@10."""
    dim = ann_dim(library)
    anon_before = proc_kib("RssAnon")
    started = time.perf_counter()
    view = HnswIndex.open(index_dir(args.data_dir, args.images), dim)
    print(f"view     opened {len(view):,} images in {(time.perf_counter() - started) * 1e3:.0f} ms, "
          f"anonymous memory +{(proc_kib('RssAnon') - anon_before) // 1024} MiB")
    settings = [(ef, over) for ef in args.expansion_search for over in args.overfetch]
    for expansion, overfetch in settings:
        ann.EXPANSION_SEARCH = expansion  # the module constant, as the store would use it
        count = overfetch * K
        for warm_pass in ("first", "warm"):
            times, hits = [], 0
            for query, expected in zip(queries, truth, strict=True):
                started = time.perf_counter()
                [candidates] = view.candidates(query, count)
                rows = np.sort(candidates)
                scores = np.asarray(library[rows]) @ query
                found = rows[np.lexsort((rows, -scores))[:K]]
                times.append(time.perf_counter() - started)
                hits += len(set(found.tolist()) & set(expected.tolist()))
            print(f"nearest  {args.images:,}: ef {expansion:>3}, {count:>3} candidates, {warm_pass:>5} pass: "
                  f"p50 {ms(percentile(times, 50))} ms, p95 {ms(percentile(times, 95))} ms, "
                  f"recall@10 {hits / (K * len(queries)):.4f}", flush=True)


def measure_exact(library: np.ndarray, queries: np.ndarray) -> None:
    """Brute force over the float32 file for comparison (what exact search costs at this size)."""
    times = []
    for query in queries:
        started = time.perf_counter()
        for start in range(0, len(library), 65536):
            np.asarray(library[start : start + 65536]) @ query
        times.append(time.perf_counter() - started)
    print(f"exact    numpy over the {len(library):,}-row float32 file: median {ms(statistics.median(times))} ms")


def photos_unlike_library(count: int, dim: int) -> np.ndarray:
    """Photos of topics the library does not hold: their ten best in it are near-ties."""
    rng = np.random.default_rng(OTHER_TOPICS_SEED)
    other_topics = np.maximum(rng.standard_normal((count, dim), dtype=np.float32), 0)
    return photo_block(other_topics, OTHER_TOPICS_SEED, 0, count)[:count]


def step_kinds(args: argparse.Namespace) -> None:
    """The store's search path at IMAGES, by kind of query (see the module docstring)."""
    library = library_file(args.data_dir, args.images)
    dim = ann_dim(library)
    rng = np.random.default_rng(5)
    stored = np.asarray(library[np.sort(rng.choice(len(library), KIND_QUERIES, replace=False))])
    shots = stored + 0.0105 * rng.standard_normal(stored.shape, dtype=np.float32)
    kinds = {
        "new photo of a stored topic": query_vectors(args.images, KIND_QUERIES),
        "another shot of a stored photo": shots / np.linalg.norm(shots, axis=1, keepdims=True),
        "a photo unlike the library": photos_unlike_library(KIND_QUERIES, dim),
    }
    started = time.perf_counter()
    truths = {kind: exact_top_k(library, queries, K) for kind, queries in kinds.items()}
    print(f"truth    exact top {K} of {len(kinds) * KIND_QUERIES} queries in {time.perf_counter() - started:.0f} s")
    view = SlotVectors(library, np.ones(len(library), dtype=np.uint8))
    index = HnswIndex.open(index_dir(args.data_dir, args.images), dim)
    scanned: list[int] = []
    tail_check = TailCheck(view)
    searched = view.proposed_by(index_proposer(index, np.empty(0, np.int64), tail_check,
                                               lambda: scanned.append(1)))
    for (kind, queries), expansion in itertools.product(kinds.items(), args.expansion_search):
        ann.EXPANSION_SEARCH = expansion  # the module constant, as the store would use it
        for warm_pass in ("first", "warm"):
            by_index, by_scan, hits = [], [], 0
            for query, expected in zip(queries, truths[kind], strict=True):
                before = len(scanned)
                started = time.perf_counter()
                [(ids, _)] = searched.candidates(query, K)
                (by_scan if len(scanned) > before else by_index).append(time.perf_counter() - started)
                hits += len(set(ids.tolist()) & set(expected.tolist()))
            every = by_index + by_scan
            recall = hits / (K * len(queries))
            print(f"kinds    {kind:<31} ef {expansion:>3}, {warm_pass:>5} pass: recall@10 {recall:.3f}, "
                  f"scanned {len(by_scan)}/{len(queries)}, p50 {ms(percentile(every, 50))} ms "
                  f"(index answers p50 {ms(percentile(by_index, 50)) if by_index else '-'} ms, "
                  f"scans p50 {ms(percentile(by_scan, 50)) if by_scan else '-'} ms)", flush=True)
        if kind == next(iter(kinds)):  # where the time of an index answer goes, warm
            print(f"parts    ef {expansion:>3}: {path_parts(index, tail_check, queries)}", flush=True)


def path_parts(index: HnswIndex, tail_check: TailCheck, queries: np.ndarray) -> str:
    """p50 of the store path's two fixed costs per query, timed alone: the graph search and the tail check."""
    count = candidates_for(K)
    searching, checking = [], []
    for query in queries:
        started = time.perf_counter()
        index.candidates(query, count)
        searched = time.perf_counter()
        tail_check.far_above_bulk(query, 0.5)
        searching.append(searched - started)
        checking.append(time.perf_counter() - searched)
    return (f"index search ({count} candidates) p50 {ms(percentile(searching, 50))} ms, "
            f"tail check p50 {ms(percentile(checking, 50))} ms (the rest of a search: exact re-score and ordering)")


def step_scan(args: argparse.Namespace) -> None:
    """Batched exact scans of compact copies of the library, against numpy float32 (see the docstring)."""
    import torch  # only this step needs it

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    library = library_file(args.data_dir, args.images)
    queries = query_vectors(args.images, max(SCAN_BATCHES))
    truth_ids, truth_scores = exact_top_k_scores(library, queries, K)
    # id -> exact score of each link an image would pick (its top K at or above the threshold)
    linkable = [{int(i): float(score) for i, score in zip(ids, scores, strict=True) if score >= LINK_THRESHOLD}
                for ids, scores in zip(truth_ids, truth_scores, strict=True)]
    print(f"scan     {args.images:,} images; {max(SCAN_BATCHES)} queries, {sum(map(len, linkable))} links at or "
          f"above {LINK_THRESHOLD} among their exact top {K}, {sum(1 for ids in linkable if ids)} queries with any; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    methods = {name: make(library) for name, make in SCAN_METHODS.items() if name in args.methods}
    for name, (approximate, copy_mib) in methods.items():
        for batch in SCAN_BATCHES:
            seconds, found_ids, worst_error = [], [], 0.0
            for _ in range(SCAN_REPEATS):
                started = time.perf_counter()
                found_ids = []
                for start in range(0, len(queries), batch):
                    block = queries[start : start + batch]
                    scores, candidates = approximate(block)
                    found_ids.extend(rescored_top_k(library, block, candidates))
                seconds.append((time.perf_counter() - started) / len(queries))
            for start in range(0, len(queries), batch):  # untimed: how far the approximate scores were off
                block = queries[start : start + batch]
                scores, candidates = approximate(block)
                for row, query in enumerate(block):
                    exact_scores = np.asarray(library[candidates[row]]) @ query
                    worst_error = max(worst_error, float(np.abs(scores[row] - exact_scores).max()))
            missed = sum(missed_links(wanted, found) for wanted, found in zip(linkable, found_ids, strict=True))
            print(f"scan     {args.images:,}: {name:<22} batch {batch:>3}: {ms(statistics.median(seconds)):>7} ms "
                  f"per image; links missed {missed}; largest score error {worst_error:.4f}; copy {copy_mib:,.0f} MiB; "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)


def exact_top_k_scores(library: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Numpy's exact top k (ids, scores) of each query over the float32 library, read in chunks."""
    ids = exact_top_k(library, queries, k)
    return ids, np.stack([np.asarray(library[row]) @ query for query, row in zip(queries, ids, strict=True)])


def rescored_top_k(library: np.ndarray, queries: np.ndarray, candidates: np.ndarray) -> list[dict[int, float]]:
    """Each query's exact top K among its candidates (float32 rows): id -> score."""
    found = []
    for query, rows in zip(queries, candidates, strict=True):
        rows = np.sort(rows)
        scores = np.asarray(library[rows]) @ query
        best = np.lexsort((rows, -scores))[:K]
        found.append(dict(zip(rows[best].tolist(), scores[best].tolist(), strict=True)))
    return found


def missed_links(wanted: dict[int, float], found: dict[int, float]) -> int:
    """Wanted links not found, but for ties: one scoring within SCORE_EPSILON of the lowest found
    (the exact truth and the re-score sum in different orders, and the 10th place may be a tie)."""
    lowest = min(found.values()) if len(found) == K else -np.inf
    return sum(1 for i, score in wanted.items() if i not in found and score > lowest + SCORE_EPSILON)


def in_chunks(library: np.ndarray, convert: Callable[[np.ndarray], object]) -> list[object]:
    return [convert(np.asarray(library[start : start + SCAN_CHUNK])) for start in range(0, len(library), SCAN_CHUNK)]


def numpy_float32(library: np.ndarray) -> tuple[Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], float]:
    matrix = np.ascontiguousarray(library)  # in memory, as the store's mapped vectors are once paged in

    def approximate(queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = np.ascontiguousarray((matrix @ np.ascontiguousarray(queries.T)).T)  # as vectors.SlotVectors does
        top = np.argpartition(-scores, SCAN_CANDIDATES - 1, axis=1)[:, :SCAN_CANDIDATES]
        return np.take_along_axis(scores, top, 1), top

    return approximate, matrix.nbytes / 2**20


def torch_bfloat16(library: np.ndarray) -> tuple[Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], float]:
    import torch

    copy = torch.cat(in_chunks(library, lambda rows: torch.from_numpy(np.array(rows)).to(torch.bfloat16)))

    def approximate(queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = torch.from_numpy(queries).to(torch.bfloat16) @ copy.T  # (queries, images), accumulated in fp32
        top = torch.topk(scores.float(), SCAN_CANDIDATES, dim=1)
        return top.values.numpy(), top.indices.numpy()

    return approximate, copy.numel() * 2 / 2**20


def per_row_int8(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows scaled to use -127..127 each (cosine ranks are unchanged by a per-row scale): (int8, scale)."""
    scale = np.abs(rows).max(axis=1, keepdims=True) / 127
    return np.rint(rows / scale).astype(np.int8), scale.astype(np.float32).ravel()


def torch_int8(library: np.ndarray) -> tuple[Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], float]:
    import torch

    parts = in_chunks(library, per_row_int8)
    transposed = torch.from_numpy(np.ascontiguousarray(np.concatenate([q for q, _ in parts]).T))  # (dim, images)
    row_scale = torch.from_numpy(np.concatenate([s for _, s in parts]))

    def approximate(queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        quantised, query_scale = per_row_int8(queries)
        products = torch._int_mm(torch.from_numpy(quantised), transposed)  # int32 (queries, images)
        scores = products.float() * row_scale * torch.from_numpy(query_scale)[:, None]
        top = torch.topk(scores, SCAN_CANDIDATES, dim=1)
        return top.values.numpy(), top.indices.numpy()

    return approximate, transposed.numel() / 2**20


def fbgemm_int8(library: np.ndarray) -> tuple[Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], float]:
    import warnings

    import torch

    with warnings.catch_warnings():  # torch.ao quantisation warns it is deprecated
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        linear = torch.nn.Linear(library.shape[1], len(library), bias=False)
        with torch.no_grad():
            for start in range(0, len(library), SCAN_CHUNK):
                rows = np.array(library[start : start + SCAN_CHUNK])
                linear.weight[start : start + len(rows)] = torch.from_numpy(rows)
        model = quantize_dynamic(torch.nn.Sequential(linear), {torch.nn.Linear: per_channel_dynamic_qconfig})
        del linear

    def approximate(queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            scores = model(torch.from_numpy(queries))  # u8 queries x s8 library, dequantised to fp32
        top = torch.topk(scores, SCAN_CANDIDATES, dim=1)
        return top.values.numpy(), top.indices.numpy()

    return approximate, len(library) * library.shape[1] / 2**20


SCAN_METHODS = {
    "numpy-float32": numpy_float32,
    "torch-bfloat16": torch_bfloat16,
    "torch-int8": torch_int8,
    "fbgemm-int8": fbgemm_int8,
}


def step_clean(args: argparse.Namespace) -> None:
    shutil.rmtree(args.data_dir, ignore_errors=True)
    print(f"removed  {args.data_dir}")


def ann_dim(library: np.ndarray) -> int:
    return int(library.shape[1])


def dir_mib(directory: Path) -> float:
    return sum(p.stat().st_size for p in directory.iterdir()) / 2**20


def ms(seconds: float) -> float:
    return round(seconds * 1e3, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["data", "build", "measure", "kinds", "scan", "clean"])
    parser.add_argument("--images", type=int, default=IMAGES)
    parser.add_argument("--budget-s", type=float, default=480, help="build: stop adding after this long")
    parser.add_argument("--expansion-search", type=int, nargs="+", default=[ann.EXPANSION_SEARCH])
    parser.add_argument("--overfetch", type=int, nargs="+", default=[ann.OVERFETCH])
    parser.add_argument("--data-dir", type=Path, default=Path("/work/ann-bench"))
    parser.add_argument("--connectivity", type=int, default=ann.CONNECTIVITY, help="graph degree M to build/measure")
    parser.add_argument("--expansion-add", type=int, default=ann.EXPANSION_ADD, help="efConstruction")
    parser.add_argument("--build-threads", type=int, default=1,
                        help="insert threads (the store builds with 1: 2 left poor graphs now and then)")
    parser.add_argument("--methods", nargs="+", default=list(SCAN_METHODS), choices=list(SCAN_METHODS),
                        help="scan: the products to measure")
    args = parser.parse_args()
    ann.CONNECTIVITY, ann.EXPANSION_ADD = args.connectivity, args.expansion_add  # read when an index is made or opened
    print_machine()
    print(f"settings connectivity {ann.CONNECTIVITY}, expansion_add {ann.EXPANSION_ADD}, dtype {ann.STORAGE_DTYPE}, "
          f"seed {LIBRARY_SEED}, load {os.getloadavg()}")
    steps = {"data": step_data, "build": step_build, "measure": step_measure, "kinds": step_kinds, "scan": step_scan,
             "clean": step_clean}
    steps[args.step](args)


if __name__ == "__main__":
    main()
