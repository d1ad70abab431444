"""How long listing the duplicates of a large library takes, on the embedded store and on the
Neo4j backend against the tests' stand-in server (tests/store/neo4j_stand_in.py), side by side.

    flock /tmp/imgwatch-bench.lock env PYTHONPATH=src:. .venv/bin/python bench/duplicates_scale.py \\
        --images 200000 --stand-in-images 200000

The library is built through the store contract: ``upsert`` of every image (synthetic unit
vectors, ``--dim``), then ``import_links`` of the links the linking rule would make (every pair
within a planted cluster scoring at least links.threshold, by the stored vectors' cosine, plus
two links per other image at a score drawn below 0.95, so that the links table is library-sized).
``link`` itself is not used: linking 200k images costs ~1.2 ms each through the HNSW index, and
what the duplicates read is the links table, however it was filled. Planted clusters
(``PLAN``): exact copies (one content hash; some a symbolic link), near copies of an original
(cosine 0.955-0.995 to it, fewer pixels), bursts (six shots, 0.965 to each other) and chains
A-B-C (A-B and B-C ~0.977, A-C 0.91: two groups or a pair, never one of three). Some bursts
carry a "not duplicates" decision, some near copies a "keep" one.

Every path is a real small JPEG (8x8, with an EXIF capture time) under a temporary folder, so
the keeper rule stats the files and reads capture times as it does for a person. Each listing
runs in a fresh process (spawn), twice: the first call, then a second with the file system's
caches warm; the peak memory is the process's peak RSS above what it held before the calls.
``--profile`` prints the first call's cProfile of one listing.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import functools
import io
import multiprocessing
import os
import pstats
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imgwatch.duplicates import DEFAULT_THRESHOLD, DuplicateGroup, find_duplicates, find_exact_copies
from imgwatch.keeper import DATETIME_ORIGINAL, EXIF_IFD
from imgwatch.store import EmbeddedGraphStore, GraphStore, ImageRecord, Link
from imgwatch.use_cases import duplicates_to_show
from store_scale import cpu_name  # bench/ is on sys.path when run as a script

MODEL = "bench/duplicates"
LINKS_THRESHOLD = 0.8  # links.threshold's default: the links stored reach down to it
BATCH = 2000
# Planted clusters per 200,000 images (scaled with --images): ~7.5 % of the photos in them.
PLAN = {"exact": 1500, "near": 2500, "burst": 400, "chain": 500}
BURST_SHOTS, BURST_COSINE = 6, 0.965
CHAIN_ENDS_COSINE = 0.91


@dataclass(frozen=True)
class Photo:
    path: str
    sha256: str
    vector: np.ndarray
    width: int
    height: int
    size: int
    mtime_ns: int
    taken: str  # EXIF DateTimeOriginal
    link_to: str | None = None  # a symbolic link to this path


@dataclass
class Library:
    """The planted clusters (each a list of photo indexes), and the decisions to record."""

    root: Path
    images: int
    dim: int
    clusters: list[tuple[str, list[int]]]
    photos: dict[int, Photo]  # the clustered ones; the others are made on the way

    def photo(self, index: int, rng: np.random.Generator) -> Photo:
        """An original at ``index``: a photo of its own, a new random vector."""
        return unrelated_photo(self, index, unit(rng.standard_normal(self.dim, dtype=np.float32)))

    def path(self, index: int, mark: str, folder: str = "") -> str:
        return str(self.root / (folder or f"{index // 1000:04d}") / f"IMG_{index:07d}{mark}.jpg")

    def in_clusters(self) -> int:
        return sum(len(members) for _, members in self.clusters)


def unit(vector: np.ndarray) -> np.ndarray:
    normalised: np.ndarray = (vector / np.linalg.norm(vector)).astype(np.float32)
    return normalised


def exif_time(seconds: int) -> str:
    return time.strftime("%Y:%m:%d %H:%M:%S", time.gmtime(1_500_000_000 + seconds))


def plan_library(root: Path, images: int, dim: int, seed: int = 1) -> Library:
    """The clusters at the start of the index range, scaled to ``images``; the rest are unrelated."""
    rng = np.random.default_rng(seed)
    library = Library(root, images, dim, [], {})
    scale = images / 200_000
    index = 0

    def add(kind: str, photos: list[Photo]) -> None:
        nonlocal index
        members = list(range(index, index + len(photos)))
        library.photos.update(zip(members, photos, strict=True))
        library.clusters.append((kind, members))
        index += len(photos)

    def noise() -> np.ndarray:
        return unit(rng.standard_normal(dim, dtype=np.float32))

    for _ in range(round(PLAN["exact"] * scale)):
        base, copies = library.photo(index, rng), int(rng.integers(2, 4))
        photos = [base] + [Photo(library.path(index + n, " copy", "dropped"), base.sha256, base.vector, base.width,
                                 base.height, base.size, base.mtime_ns + n * 10**9, base.taken)
                           for n in range(1, copies)]
        if copies == 3 and rng.random() < 0.3:  # the third is a symbolic link to the original
            photos[2] = dataclasses.replace(base, path=library.path(index + 2, " link", "links"), link_to=base.path)
        add("exact", photos)
    for _ in range(round(PLAN["near"] * scale)):
        base, copies = library.photo(index, rng), int(rng.integers(1, 4))
        photos = [base]
        for n in range(1, copies + 1):
            cosine = float(rng.uniform(0.955, 0.995))
            photos.append(Photo(library.path(index + n, "-small", "exports"), f"{index + n:064x}",
                                unit(cosine * base.vector + np.sqrt(1 - cosine**2) * noise()), 2048, 1536,
                                400_000 + n, base.mtime_ns + 86_400 * 10**9, base.taken))
        add("near", photos)
    for _ in range(round(PLAN["burst"] * scale)):
        centre, shots = noise(), []
        for n in range(BURST_SHOTS):
            vector = unit(np.sqrt(BURST_COSINE) * centre + np.sqrt(1 - BURST_COSINE) * noise())
            shots.append(Photo(library.path(index + n, ""), f"{index + n:064x}", vector, 4032, 3024,
                               2_000_000 + n, 1_600_000_000 * 10**9 + (index + n) * 10**9, exif_time(index + n)))
        add("burst", shots)
    for _ in range(round(PLAN["chain"] * scale)):
        a = noise()
        c = unit(CHAIN_ENDS_COSINE * a + np.sqrt(1 - CHAIN_ENDS_COSINE**2) * noise())
        chain = [Photo(library.path(index + n, ""), f"{index + n:064x}", vector, 3000, 2000, 1_500_000 + n,
                       1_600_000_000 * 10**9 + (index + n) * 10**9, exif_time(index + n))
                 for n, vector in enumerate((a, unit(a + c), c))]
        add("chain", chain)
    return library


# -- building ------------------------------------------------------------------------------------


def record_batches(library: Library, seed: int = 2) -> Iterator[list[ImageRecord]]:
    """Every image as an ImageRecord, BATCH at a time; the unclustered ones' vectors drawn per batch."""
    rng = np.random.default_rng(seed)
    for start in range(0, library.images, BATCH):
        indexes = range(start, min(start + BATCH, library.images))
        drawn = rng.standard_normal((len(indexes), library.dim), dtype=np.float32)
        drawn /= np.linalg.norm(drawn, axis=1, keepdims=True)
        batch = []
        for row, index in enumerate(indexes):
            photo = library.photos.get(index) or unrelated_photo(library, index, drawn[row])
            batch.append(ImageRecord(photo.path, photo.sha256, photo.size, photo.mtime_ns, photo.width, photo.height,
                                     MODEL, photo.vector))
        yield batch


def unrelated_photo(library: Library, index: int, vector: np.ndarray) -> Photo:
    return Photo(library.path(index, ""), f"{index:064x}", vector, 4032, 3024, 2_000_000 + index,
                 1_600_000_000 * 10**9 + index * 10**9, exif_time(index))


def planted_links(library: Library) -> Iterator[Link]:
    """Every pair within a cluster at cosine >= LINKS_THRESHOLD, scored by the stored vectors."""
    for _, members in library.clusters:
        photos = [library.photos[index] for index in members]
        vectors = np.stack([photo.vector for photo in photos])
        cosines = vectors @ vectors.T
        for i in range(len(photos)):
            for j in range(i + 1, len(photos)):
                if cosines[i, j] >= LINKS_THRESHOLD:
                    yield Link.between(photos[i].path, photos[j].path, float(cosines[i, j]))


def background_links(library: Library, seed: int = 3) -> Iterator[Link]:
    """Two links per unclustered image, to images further on, below the duplicates' threshold."""
    rng = np.random.default_rng(seed)
    first, count = library.in_clusters(), library.images - library.in_clusters()
    for offset in range(count):
        for step in (1, 13):
            other = first + (offset + step) % count
            yield Link.between(library.path(first + offset, ""), library.path(other, ""),
                               float(rng.uniform(LINKS_THRESHOLD, 0.949)))


def chunked(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def record_decisions(store: GraphStore, library: Library) -> int:
    """'not duplicates' on every other burst, 'keep' (a copy, not the original) on every fifth
    near-copy cluster and every tenth exact-copy one; how many."""
    recorded = 0
    seen = {"burst": 0, "near": 0, "exact": 0}
    for kind, members in library.clusters:
        if kind not in seen:
            continue
        seen[kind] += 1
        hashes = list(dict.fromkeys(library.photos[index].sha256 for index in members))
        if kind == "burst" and seen[kind] % 2 == 0:
            store.record_decision("not_duplicates", hashes)
        elif kind == "near" and seen[kind] % 5 == 0 and len(hashes) > 1:
            store.record_decision("keep", [hashes[1], hashes[0], *hashes[2:]])
        elif kind == "exact" and seen[kind] % 10 == 0:
            store.record_decision("keep", hashes)
        else:
            continue
        recorded += 1
    return recorded


def build(store: GraphStore, library: Library, after_batch: Callable[[], None] = lambda: None) -> dict[str, float]:
    """The library in ``store``: upserts (``after_batch`` after each), links, decisions; seconds each."""
    seconds: dict[str, float] = {}
    store.ensure_model(MODEL, library.dim)
    started = time.perf_counter()
    for batch in record_batches(library):
        store.upsert(batch)
        after_batch()
    seconds["upsert"] = time.perf_counter() - started
    started = time.perf_counter()
    links = 0
    for chunk in chunked(iter([*planted_links(library), *background_links(library)]), 20_000):
        links += store.import_links(chunk)
    seconds["import_links"] = time.perf_counter() - started
    started = time.perf_counter()
    seconds["decisions"] = record_decisions(store, library)
    seconds["record_decision"] = time.perf_counter() - started
    seconds["links"] = links
    return seconds


def write_files(library: Library) -> None:
    """A small real JPEG at every path (a clustered photo's with its capture time), or a symbolic link."""
    plain = tiny_jpeg(exif_time(0))
    for index in range(library.images):
        photo = library.photos.get(index)
        path = Path(photo.path if photo is not None else library.path(index, ""))
        path.parent.mkdir(parents=True, exist_ok=True)
        if photo is not None and photo.link_to is not None:
            path.symlink_to(photo.link_to)
        else:
            path.write_bytes(tiny_jpeg(photo.taken) if photo is not None else plain)


def tiny_jpeg(taken: str) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] = taken
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 120, 150)).save(out, format="JPEG", exif=exif)
    return out.getvalue()


# -- measuring -----------------------------------------------------------------------------------


LISTINGS: dict[str, Callable[[GraphStore], tuple[list[DuplicateGroup], int]]] = {
    "find_exact_copies": lambda store: (find_exact_copies(store), 0),
    f"find_duplicates {DEFAULT_THRESHOLD}": lambda store: (find_duplicates(store, DEFAULT_THRESHOLD), 0),
    "duplicates_to_show exact": lambda store: duplicates_to_show(
        store, exact=True, threshold=DEFAULT_THRESHOLD, links_threshold=LINKS_THRESHOLD),
    f"duplicates_to_show {DEFAULT_THRESHOLD}": lambda store: duplicates_to_show(
        store, exact=False, threshold=DEFAULT_THRESHOLD, links_threshold=LINKS_THRESHOLD),
}


def rss_mib(field: str) -> float:
    """VmRSS or VmHWM (the peak since the last reset) of this process, in MiB."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def measure(open_store: Callable[[], GraphStore], name: str, profile: bool, results: Any) -> None:
    """In a forked process: the listing twice (seconds each), its groups, its reads of stored vectors
    (embeddings_by_hash calls, each a round trip to a Neo4j server) and its peak RSS above the start."""
    store = open_store()
    vector_reads = []
    read_vectors = store.embeddings_by_hash

    def counted(*args: Any) -> Any:
        vector_reads.append(1)
        return read_vectors(*args)

    store.embeddings_by_hash = counted  # type: ignore[method-assign]
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # the peak RSS starts again from the current RSS
    before = rss_mib("VmRSS")
    seconds = []
    for attempt in range(2):
        profiler = cProfile.Profile() if profile and attempt == 0 else None
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        groups, hidden = LISTINGS[name](store)
        if profiler is not None:
            profiler.disable()
        seconds.append(time.perf_counter() - started)
        if profiler is not None:
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(30)
            print(text.getvalue(), flush=True)
    results.put((seconds, len(groups), sum(len(group.images) for group in groups), hidden, len(vector_reads) // 2,
                 rss_mib("VmHWM") - before))


def measure_all(label: str, open_store: Callable[[], GraphStore], profile: str | None) -> None:
    context = multiprocessing.get_context("fork")  # the stand-in's data lives in this process's memory
    for name in LISTINGS:
        results = context.Queue()
        child = context.Process(target=measure, args=(open_store, name, profile == name, results))
        child.start()
        seconds, groups, images, hidden, vector_reads, peak = results.get(timeout=3600)
        child.join()
        print(f"| {label} | {name} | {seconds[0]:.2f} | {seconds[1]:.2f} | {groups:,} | {images:,} | {hidden:,} "
              f"| {vector_reads:,} | {peak:,.0f} |", flush=True)


def stand_in_store() -> tuple[GraphStore, Callable[[], None]]:
    """The Neo4j backend on the tests' stand-in server, and what to run after each upsert: the
    stand-in keeps every embedding it was sent (as Python floats) for the tests to look at; at
    200k x 2048 that would be ~13 GiB, so the bench empties that record."""
    from tests.store.neo4j_stand_in import fake_store  # the repository root is on PYTHONPATH

    store, server = fake_store()
    return store, server.sent.clear


def same(store: GraphStore) -> GraphStore:
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--stand-in-images", type=int, default=200_000, help="0: no stand-in run")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--folder", type=Path, help="where the store and the files go (default: a temporary folder)")
    parser.add_argument("--profile", choices=list(LISTINGS), help="print the first call's cProfile of this listing")
    args = parser.parse_args()
    print(f"machine {cpu_name()}, {len(os.sched_getaffinity(0))} cores; load {os.getloadavg()}")
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        runs = [("embedded", args.images), ("neo4j stand-in", args.stand_in_images)]
        for label, images in [(label, images) for label, images in runs if images]:
            library = plan_library(Path(folder) / f"photos-{images}", images, args.dim)
            started = time.perf_counter()
            if not Path(library.root).exists():
                write_files(library)
            print(f"{label}: {images:,} images at dim {args.dim}, {library.in_clusters():,} in planted clusters "
                  f"({100 * library.in_clusters() / images:.1f} %); files written in "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
            if label == "embedded":
                db_path = Path(folder) / "store.sqlite3"
                with EmbeddedGraphStore(db_path) as store:
                    built = build(store, library)
                opener: Callable[[], GraphStore] = functools.partial(EmbeddedGraphStore, db_path)
            else:
                stand_in, forget_sent = stand_in_store()
                built = build(stand_in, library, forget_sent)
                opener = functools.partial(same, stand_in)
            print(f"built: upsert {built['upsert']:.0f} s, import_links {built['links']:,.0f} links "
                  f"{built['import_links']:.0f} s, {built['decisions']:.0f} decisions {built['record_decision']:.1f} s",
                  flush=True)
            print("| store | listing | first call s | second call s | groups | images in them | decided, hidden "
                  "| vector reads | peak RSS above start MiB |")
            print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
            measure_all(f"{label} {images // 1000}k", opener, args.profile)
    print(f"load after {os.getloadavg()}")


if __name__ == "__main__":
    main()
