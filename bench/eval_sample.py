"""`imgwatch eval` on scikit-image's sample photos with calibrated weights, and how long it takes.

    .venv/bin/python bench/eval_sample.py            # the table for bench/RESULTS.md
    .venv/bin/python bench/eval_sample.py --timing 40  # seconds for 40 camera-sized photos

The weights are seeded random ResNet50 weights with BatchNorm statistics recalibrated on the
sample photos (tests.helpers.write_calibrated_weights): different photos score ~0.8-0.98 apart,
like a trained model, but they are not ImageNet's. Real weights give other numbers: run
`imgwatch eval` on your own library (embedding.weights = "imagenet", the default).

--timing N writes N distinct 4032×3024 JPEGs (q90, the sample photos enlarged and cropped
differently), the size a phone takes, and times eval on them (folder mode, no distractors: what
eval embeds for the store's own model).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from imgwatch.config import load_config
from imgwatch.evaluation.edits import EDITS
from imgwatch.evaluation.run import EvalOptions, evaluate

REPO = Path(__file__).resolve().parent.parent
CAMERA_SIZE = (4032, 3024)


def sample_photos() -> dict[str, Image.Image]:
    from skimage import data

    sys.path.insert(0, str(REPO))  # tests.helpers, from a checkout
    from tests.helpers import PHOTO_NAMES

    photos = {}
    for name in PHOTO_NAMES:
        image = getattr(data, name)()
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        photos[name] = Image.fromarray(image[..., :3])
    return photos


def calibrated(folder: Path, photos: dict[str, Image.Image]) -> Path:
    from tests.helpers import write_calibrated_weights

    return write_calibrated_weights(folder / "calibrated.pth", list(photos.values()))


def camera_sized(photos: dict[str, Image.Image], count: int, folder: Path) -> None:
    """``count`` distinct camera-sized JPEGs: each sample photo cropped at another place, enlarged."""
    rng = np.random.default_rng(0)
    originals = list(photos.values())
    for index in range(count):
        photo = originals[index % len(originals)]
        width, height = photo.size
        keep = rng.uniform(0.6, 0.9)
        left, top = rng.uniform(0, 1 - keep) * width, rng.uniform(0, 1 - keep) * height
        box = (left, top, left + keep * width, top + keep * height * 0.75)
        photo.resize(CAMERA_SIZE, Image.Resampling.BILINEAR, box=box).save(folder / f"{index:04d}.jpg", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timing", type=int, default=0, metavar="N", help="time eval on N camera-sized photos")
    parser.add_argument("--engine", default="auto")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        photos = sample_photos()
        weights = calibrated(folder, photos)
        (folder / "photos").mkdir()
        if args.timing:
            camera_sized(photos, args.timing, folder / "photos")
        else:
            for name, photo in photos.items():
                photo.save(folder / "photos" / f"{name}.png")
        config = load_config(overrides={"general.data_dir": str(folder / "data"), "embedding.weights": str(weights),
                                        "embedding.engine": args.engine, "embedding.device": "cpu"}, environ={})
        count = args.timing or len(photos)
        started = time.monotonic()
        report = evaluate(config, EvalOptions(sample=count, folder=str(folder / "photos"), distractors=0))
        seconds = time.monotonic() - started
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(report.as_text())
    images = count * (len(EDITS) + 1)
    print(f"\n{count} photos, {images} images embedded, {seconds:.1f} s in all ({images / seconds:.1f} images/s, "
          f"model and engine load included); engine {report.models[0].engine}")


if __name__ == "__main__":
    main()
