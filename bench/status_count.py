"""How long `imgwatch status` takes to count the images below a watched folder: the store's
count_below (one COUNT through the path index) against reading every path (file_states),
side by side on one embedded store of N images in 10 folders.

    python bench/status_count.py --images 100000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from imgwatch.store import EmbeddedGraphStore, ImageRecord

DIM = 4  # the count reads no embedding: a small one keeps the store quick to build
MODEL = "bench/count"


def build(store: EmbeddedGraphStore, images: int) -> None:
    store.ensure_model(MODEL, DIM)
    rng = np.random.default_rng(0)
    batch: list[ImageRecord] = []
    for index in range(images):
        vector = rng.standard_normal(DIM).astype("float32")
        vector /= np.linalg.norm(vector)
        batch.append(ImageRecord(f"/photos/{index % 10}/{index:07d}.jpg", f"{index:064x}", 1, 1, 1, 1, MODEL, vector))
        if len(batch) == 5000:
            store.upsert(batch)
            batch = []
    if batch:
        store.upsert(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, EmbeddedGraphStore(Path(folder) / "store.sqlite3") as store:
        build(store, args.images)
        print("| folder | images | reading every path | count_below |")
        print("|---|---|---|---|")
        for root in ("/photos", "/photos/3"):
            started = time.perf_counter()
            read = sum(1 for _ in store.file_states(under=root))
            reading = time.perf_counter() - started
            started = time.perf_counter()
            counted = store.count_below(root)
            counting = time.perf_counter() - started
            assert read == counted
            print(f"| {root} | {counted:,} | {reading * 1000:.0f} ms | {counting * 1000:.1f} ms |")


if __name__ == "__main__":
    main()
