"""imgwatch vs the naive seed-style pipeline, side by side on the same folder of photos.

    python bench/compare.py PHOTO_DIR [--engine auto|torch|onnxruntime|openvino] [--weights random]

PHOTO_DIR holds 12-megapixel JPEGs (make them with `python bench/photos.py DIR --count 144`).
Both read the same files, warm in the page cache (every file is read once first):

* seed-style (bench/seed_pipeline.py): per image a full decode, the article transforms and
  one unbatched ResNet50 forward pass, then all-pairs cosine links; timed from the first
  image to the last link.
* imgwatch: `imgwatch run` watching an empty folder on a fresh data dir; the photos are
  renamed into it at once after its worker reports `worker_ready`, and the clock runs until
  the store holds them all (watcher, settle delay, queue, decode, embedding, store, links).

Prints both rates in images/s and their ratio. --engine sets IMGWATCH_EMBEDDING_ENGINE for
the imgwatch run (default: the config's); the engine the worker ran is printed.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import torch

from e2e import describe_worker, end_to_end  # bench/ is on sys.path when run as a script
from seed_pipeline import build_network, photo_paths, run_seed_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photo_dir", type=Path)
    parser.add_argument("--engine", default=None, help="embedding.engine for imgwatch (default: the config's)")
    parser.add_argument("--weights", default="random", help="imgwatch's --weights (the seed uses random weights)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threshold", type=float, default=0.9, help="the seed's link threshold")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where both run the model (imgwatch: IMGWATCH_EMBEDDING_DEVICE)")
    args = parser.parse_args()
    os.environ["IMGWATCH_EMBEDDING_DEVICE"] = args.device
    paths = photo_paths(args.photo_dir)
    if not paths:
        raise SystemExit(f"no photos in {args.photo_dir}; make some with bench/photos.py")
    average_mb = sum(p.stat().st_size for p in paths) / len(paths) / 1e6
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, device {args.device}; {len(paths)} photos in {args.photo_dir} "
          f"(average {average_mb:.1f} MB)")
    for path in paths:  # warm the page cache so neither side pays for the disk
        path.read_bytes()

    seed = run_seed_pipeline(paths, build_network(device=args.device), args.threshold)
    print(f"seed-style: {seed.images_per_second:7.2f} images/s ({seed.images} photos in {seed.seconds:.1f} s, "
          f"{torch.get_num_threads()} torch threads, {seed.links} links >= {args.threshold})")
    imgwatch = end_to_end(args.photo_dir, args.weights, args.workers, args.engine, land_photos=True)
    print(f"imgwatch:   {imgwatch.images_per_second:7.2f} images/s ({imgwatch.images} photos in "
          f"{imgwatch.seconds:.1f} s from landing to stored, {args.workers} worker(s); "
          f"{describe_worker(imgwatch.worker_ready)})")
    print(f"ratio:      {imgwatch.images_per_second / seed.images_per_second:7.2f}x the seed-style rate")


if __name__ == "__main__":
    main()
