"""Write N distinct ~12-megapixel JPEGs (4032x3024, like a phone camera) for benchmarks.

Usage: python bench/photos.py OUTDIR --count N [--copies K]

Each file starts from one of scikit-image's bundled photos; a per-index random
crop, mirror, colour balance and sensor-like grain make every file distinct
(and give the JPEG realistic high-frequency content, hence realistic size).
Photos are made on every core. --copies K writes each photo K times, the copies
differing only in a JPEG comment: distinct files (distinct content hashes, so each
is decoded and embedded) for rate benchmarks that need thousands, without K times
the minutes of making them.
"""

from __future__ import annotations

import argparse
import functools
import os
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

SIZE = (4032, 3024)
SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "immunohistochemistry")


def make_photo(index: int, grain: float) -> Image.Image:
    rng = np.random.default_rng(index)
    source = Image.fromarray(getattr(skimage.data, SOURCES[index % len(SOURCES)])()).convert("RGB")
    # Random 4:3 crop covering 60-100% of the source width (or height).
    width, height = source.size
    fraction = rng.uniform(0.6, 1.0)
    crop_w = min(width, round(height * fraction * 4 / 3))
    crop_h = round(crop_w * 3 / 4)
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    image = source.crop((left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = image.resize(SIZE, Image.Resampling.BICUBIC)
    pixels = np.asarray(image, dtype=np.float32) * rng.uniform(0.8, 1.2, size=3)
    if grain > 0:
        # One grain plane shared by the channels: cheap, and looks like luminance noise.
        pixels += rng.normal(0.0, grain, size=(SIZE[1], SIZE[0], 1)).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--grain", type=float, default=4.0, help="std-dev of added noise, 0 for none")
    parser.add_argument("--copies", type=int, default=1, help="files per photo (copies differ in a JPEG comment)")
    args = parser.parse_args()

    args.outdir.mkdir(parents=True, exist_ok=True)
    write = functools.partial(write_photo, args.outdir, grain=args.grain, quality=args.quality, copies=args.copies)
    with Pool(os.cpu_count()) as pool:
        sizes = [size for written in pool.map(write, range(args.count)) for size in written]
    print(f"wrote {len(sizes)} JPEGs {SIZE[0]}x{SIZE[1]} to {args.outdir} "
          f"(average {sum(sizes) / max(len(sizes), 1) / 1e6:.1f} MB)")


def write_photo(outdir: Path, index: int, grain: float, quality: int, copies: int) -> list[int]:
    """Write photo ``index`` and its copies; returns their sizes in bytes."""
    path = outdir / f"photo-{index:04d}.jpg"
    make_photo(index, grain).save(path, "JPEG", quality=quality)
    data = path.read_bytes()
    for copy in range(1, copies):
        comment = f"copy {copy}".encode()
        # A COM segment right after the start-of-image marker: same pixels, different bytes.
        segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
        (outdir / f"photo-{index:04d}-copy{copy}.jpg").write_bytes(data[:2] + segment + data[2:])
    return [len(data)] + [len(data) + 4 + len(f"copy {copy}") for copy in range(1, copies)]


if __name__ == "__main__":
    main()
