"""Decode cost and equivalence per photo format, and the embedding rate of a mixed folder.

    python bench/formats.py [--count 4] [--passes 5] [--e2e-passes 3] [--e2e-rounds 2] [--keep DIR]
                            [--preview half|full] [--imgwatch-run]

Makes 12-megapixel (4032x3024) photos from scikit-image's samples (bench/photos.py's make_photo:
upscaled, cropped, colour-shifted, with a little sensor-like grain so the encoders meet realistic
content), the same --count photos in each format: JPEG q92, HEIC q90 (pillow-heif: libheif + x265),
AVIF q80 (Pillow's libavif, default speed), JPEG XL q90 (libjxl), a DNG with an embedded JPEG preview
(--preview half: 2016x1512, as many cameras embed; full: 4032x3024), a DNG without one (developed
from the mosaic at half size) and a Display P3 JPEG (the ICC conversion to sRGB). Writing them takes
1-2 minutes on 2 cores (x265 is most of it); with --keep DIR the files stay there and a later run
with the same DIR reuses them (empty DIR after changing --grain or --preview).

Reports
  (1) decode cost per format of decode_for_model, what a CPU worker runs per file (files in memory,
      torch on one thread): wall ms per file, CPU ms per file (every thread of the process: libheif,
      libavif and libjxl decode on threads of their own) and files/s, the median over --passes
      passes, the formats taking turns within each pass so machine noise hits them all alike;
  (2) equivalence per format: cosine of decode_for_model's tensor with reference_input's (full-size
      decode + the torchvision Resize/CenterCrop), the lowest over the files (the project's bar:
      >= 0.9999). For the DNG without a preview reference_input develops at half size too, so the
      tensor is also compared with LibRaw's full-size demosaic, developed as raw.py develops at half
      size (camera white balance, 8 bits, the sRGB curve: gamma 2.4, 12.92; keep the two alike);
  (3) end to end in this process, as a worker runs it: Embedder over a mixed folder (JPEG, HEIC,
      AVIF, JPEG XL, DNG with preview, DNG without, equal shares) and over an all-JPEG folder of the
      same count, side by side (random weights, the engine, batch, streams and decode threads the
      worker would choose here: on a GPU, JPEGs go to nvJPEG and the rest to the CPU pool);
      each run embeds the folder --e2e-rounds times; the median img/s over --e2e-passes runs.
      With --imgwatch-run, `imgwatch run` on each folder as well (bench/e2e.py's end_to_end).
Then a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import structlog
import torch
from PIL import Image, features

from embed_rate import model_only_rate  # bench/ is on sys.path when run as a script
from imgwatch.embedding import Embedded, Embedder, inference_device, load_model, plan_inference, reference_preprocess
from imgwatch.embedding.decode import MIN_DECODED_SHORT_SIDE, decode_for_model, reference_input
from imgwatch.photos.reader import open_photo
from photos import SIZE, make_photo

REPO = Path(__file__).resolve().parent.parent
BAR = 0.9999  # the project's tensor-cosine bar for the reduced decode


@dataclass(frozen=True)
class Kind:
    key: str  # folder name
    label: str  # table row
    suffix: str
    in_mixed: bool  # one of the mixed folder's equal shares


KINDS = (
    Kind("jpeg", "JPEG q92", ".jpg", True),
    Kind("heic", "HEIC q90", ".heic", True),
    Kind("avif", "AVIF q80", ".avif", True),
    Kind("jxl", "JPEG XL q90", ".jxl", True),
    Kind("dng-preview", "DNG + JPEG preview", ".dng", True),
    Kind("dng-demosaic", "DNG, no preview", ".dng", True),
    Kind("jpeg-p3", "JPEG q92, Display P3 ICC", ".jpg", False),
)
DEMOSAIC = "dng-demosaic"


def _photo_files():  # noqa: ANN202 - the tests' module
    """tests/photo_files.py, importable from a checkout."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests import photo_files

    return photo_files


# ---------------------------------------------------------------------------------------------------------------
# The photos


def write_photo_set(job: tuple[Path, int, float, str]) -> None:
    """Photo ``index`` in every format, into ``root/<kind>/photo-NNN<suffix>``; files already there are kept."""
    root, index, grain, preview_size = job
    files = _photo_files()
    targets = {kind.key: root / kind.key / f"photo-{index:03d}{kind.suffix}" for kind in KINDS}
    if all(path.exists() for path in targets.values()):
        return
    image = make_photo(index, grain)
    preview = image if preview_size == "full" else image.resize((SIZE[0] // 2, SIZE[1] // 2), Image.Resampling.LANCZOS)
    p3 = files.display_p3_profile()
    writers: dict[str, Callable[[Path], object]] = {
        "jpeg": lambda path: files.write_jpeg(image, path, quality=92),
        "heic": lambda path: files.write_heic(image, path, quality=90),
        "avif": lambda path: files.write_avif(image, path, quality=80),
        "jxl": lambda path: files.write_jxl(image, path, quality=90),
        "dng-preview": lambda path: files.write_dng(image, path, preview=preview),
        "dng-demosaic": lambda path: files.write_dng(image, path),
        "jpeg-p3": lambda path: files.write_jpeg(files.to_profile(image, p3), path, quality=92, icc_profile=p3),
    }
    for key, path in targets.items():
        if path.exists():
            continue
        partial = path.with_name(f".partial-{path.name}")  # renamed into place once complete
        writers[key](partial)
        partial.rename(path)


def make_photos(root: Path, count: int, grain: float, preview_size: str) -> dict[str, list[Path]]:
    for kind in KINDS:
        (root / kind.key).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    jobs = [(root, index, grain, preview_size) for index in range(count)]
    with Pool(min(count, os.cpu_count() or 1)) as pool:
        pool.map(write_photo_set, jobs, chunksize=1)
    print(f"photos: {count} per format in {root} ({time.perf_counter() - started:.0f} s to make)", flush=True)
    return {kind.key: [root / kind.key / f"photo-{index:03d}{kind.suffix}" for index in range(count)]
            for kind in KINDS}


def make_folders(root: Path, files: dict[str, list[Path]]) -> tuple[list[Path], list[Path]]:
    """root/mixed (links to the mixed kinds' files) and root/jpeg-only (as many JPEGs: copies of the JPEGs that
    differ in a JPEG comment, so each is its own content)."""
    mixed_dir, jpeg_dir = root / "mixed", root / "jpeg-only"
    for folder in (mixed_dir, jpeg_dir):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
    mixed = []
    for kind in KINDS:
        if kind.in_mixed:
            for path in files[kind.key]:
                mixed.append(_link(path, mixed_dir / f"{kind.key}-{path.name}"))
    shares = sum(kind.in_mixed for kind in KINDS)
    jpegs = []
    for path in files["jpeg"]:
        data = path.read_bytes()
        for copy in range(shares):
            comment = f"imgwatch bench copy {copy}".encode()
            segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment  # COM right after SOI
            target = jpeg_dir / f"{path.stem}-copy{copy}.jpg"
            target.write_bytes(data[:2] + segment + data[2:])
            jpegs.append(target)
    return sorted(mixed), sorted(jpegs)


def _link(source: Path, target: Path) -> Path:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    return target


# ---------------------------------------------------------------------------------------------------------------
# (1) decode cost


@dataclass(frozen=True)
class Cost:
    wall_ms: float
    cpu_ms: float

    @property
    def files_per_second(self) -> float:
        return 1000.0 / self.wall_ms


def decode_costs(blobs: dict[str, list[tuple[str, bytes]]], passes: int) -> dict[str, Cost]:
    """Median over passes of each kind's mean ms per file; the kinds take turns, in a rotated order each pass."""
    keys = list(blobs)
    wall: dict[str, list[float]] = {key: [] for key in keys}
    cpu: dict[str, list[float]] = {key: [] for key in keys}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for key in keys:  # warm-up: first-call imports, plugin registration, allocations
            decode_for_model(blobs[key][0][1], blobs[key][0][0])
        for number in range(passes):
            shift = number % len(keys)
            for key in keys[shift:] + keys[:shift]:
                files = blobs[key]
                wall_started, cpu_started = time.perf_counter(), time.process_time()
                for path, data in files:
                    decode_for_model(data, path)
                wall[key].append((time.perf_counter() - wall_started) * 1000 / len(files))
                cpu[key].append((time.process_time() - cpu_started) * 1000 / len(files))
            print(f"  decode pass {number + 1}/{passes}: "
                  + ", ".join(f"{key} {wall[key][-1]:.0f}" for key in keys) + " ms/file", flush=True)
    finally:
        torch.set_num_threads(threads)
    return {key: Cost(statistics.median(wall[key]), statistics.median(cpu[key])) for key in keys}


def decode_path(path: str, data: bytes) -> str:
    """How the worker decodes this file: its source and what size the reduced decode has."""
    photo = open_photo(data, path, min_short_side=MIN_DECODED_SHORT_SIDE)
    width, height = photo.image.size
    return f"{photo.format}, {photo.source}, 1/{photo.reduced_by} -> {width}x{height}"


# ---------------------------------------------------------------------------------------------------------------
# (2) equivalence


def cosine(first: torch.Tensor, second: torch.Tensor) -> float:
    a, b = first.double().flatten(), second.double().flatten()
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


def full_demosaic_input(data: bytes) -> torch.Tensor:
    """The reference recipe on LibRaw's full-size demosaic (AHD), developed with the settings raw.py uses for
    its half-size one: camera white balance, 8 bits, sRGB primaries and the sRGB curve."""
    import rawpy

    with rawpy.imread(io.BytesIO(data)) as raw:
        rgb = raw.postprocess(half_size=False, use_camera_wb=True, output_bps=8, gamma=(2.4, 12.92))
    return reference_preprocess(Image.fromarray(np.ascontiguousarray(rgb), "RGB"))


def equivalence(blobs: dict[str, list[tuple[str, bytes]]]) -> dict[str, dict[str, float]]:
    """Per kind, the lowest cosine over its files of decode_for_model's tensor with each reference."""
    results: dict[str, dict[str, float]] = {}
    for key, files in blobs.items():
        lowest: dict[str, float] = {}
        for path, data in files:
            fast = decode_for_model(data, path)[0]
            references = {"reference_input": reference_input(data, path)}
            if key == DEMOSAIC:
                references["full-size demosaic"] = full_demosaic_input(data)
            for name, reference in references.items():
                lowest[name] = min(lowest.get(name, 1.0), cosine(fast, reference))
        results[key] = lowest
        print(f"  equivalence {key}: " + ", ".join(f"{name} {value:.6f}" for name, value in lowest.items()),
              flush=True)
    return results


# ---------------------------------------------------------------------------------------------------------------
# (3) end to end


@dataclass(frozen=True)
class Rates:
    model_only: float
    mixed: list[float]
    jpeg: list[float]
    worker: str
    files: int  # in each folder


def embedder_rates(mixed: list[Path], jpegs: list[Path], passes: int, rounds: int) -> Rates:
    """Embedder.embed_files over each folder (``rounds`` times per run), the folders taking turns."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # the random-weights warning
    plan = plan_inference(inference_device("auto", "auto"))
    with tempfile.TemporaryDirectory(prefix="imgwatch-bench-engine-") as engine_cache:
        model = load_model("random", "auto", engine="auto", cache_dir=Path(engine_cache), threads=plan.threads)
        model_rate = model_only_rate(model, plan, batches=12 if model.device.type == "cpu" else 50)
        folders = {"mixed": [str(path) for path in mixed] * rounds, "jpeg": [str(path) for path in jpegs] * rounds}
        rates: dict[str, list[float]] = {name: [] for name in folders}
        with Embedder(model, batch_size=plan.batch_size, decode_threads=plan.decode_threads,
                      streams=plan.streams) as embedder:
            worker = (f"engine {model.engine}, device {model.device}, batch {plan.batch_size}, {plan.streams} "
                      f"stream(s) x {plan.threads} thread(s), {plan.decode_threads} decode threads, "
                      f"gpu_decode {embedder.gpu_decode}")
            print(f"  worker: {worker}; model only {model_rate:.1f} img/s", flush=True)
            list(embedder.embed_files(folders["jpeg"]))  # warm-up, at the timed runs' micro-batch size
            for number in range(passes):
                order = list(folders) if number % 2 == 0 else list(reversed(folders))
                for name in order:
                    paths = folders[name]
                    started = time.perf_counter()
                    results = list(embedder.embed_files(paths))
                    elapsed = time.perf_counter() - started
                    embedded = sum(isinstance(result, Embedded) for result in results)
                    if embedded != len(paths):
                        failed = [result for result in results if not isinstance(result, Embedded)]
                        print(f"  {name}: {len(paths) - embedded} not embedded, e.g. {failed[0]}")
                    rates[name].append(embedded / elapsed)
                    print(f"  e2e pass {number + 1}/{passes} {name}: {embedded / elapsed:.2f} img/s "
                          f"({embedded} in {elapsed:.1f} s)", flush=True)
    return Rates(model_rate, rates["mixed"], rates["jpeg"], worker, len(mixed))


def imgwatch_run_rates(root: Path) -> dict[str, float]:
    """`imgwatch run` on each folder (bench/e2e.py's end_to_end, with every format counted)."""
    import e2e

    e2e.PHOTO_SUFFIXES = tuple({kind.suffix for kind in KINDS})  # end_to_end counts only these
    rates = {}
    for name in ("mixed", "jpeg-only"):
        try:
            run = e2e.end_to_end(root / name, "random", workers=1)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the in-process figures above still stand
            print(f"  imgwatch run {name} failed: {type(exc).__name__}: {exc}", flush=True)
            continue
        rates[name] = run.images_per_second
        print(f"  imgwatch run {name}: {run.images_per_second:.2f} img/s ({run.images} photos; "
              f"{e2e.describe_worker(run.worker_ready)})", flush=True)
    return rates


# ---------------------------------------------------------------------------------------------------------------
# Report


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu}, {os.cpu_count()} CPUs{gpu}; Python {platform.python_version()}, torch {torch.__version__}"


def libraries() -> str:
    import pillow_heif
    import rawpy

    heif = pillow_heif.libheif_info()
    return (f"Pillow {Image.__version__} (libjpeg-turbo {features.version('libjpeg_turbo')}, "
            f"libavif {features.version('avif')}), pillow-heif {pillow_heif.__version__} "
            f"(libheif {heif['libheif']}, {', '.join(heif['decoders'])}), "
            f"pillow-jxl-plugin {importlib.metadata.version('pillow-jxl-plugin')}, "
            f"rawpy {rawpy.__version__} (LibRaw {'.'.join(map(str, rawpy.libraw_version))})")


def report(files: dict[str, list[Path]], paths: dict[str, str], costs: dict[str, Cost],
           cosines: dict[str, dict[str, float]], rates: Rates, run_rates: dict[str, float] | None) -> None:
    jpeg_ms = costs["jpeg"].wall_ms
    print("\n| format | file MB | worker's decode | ms/file (wall) | CPU ms/file | files/s | vs JPEG "
          "| tensor cosine, lowest |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |")
    for kind in KINDS:
        size = statistics.mean(path.stat().st_size for path in files[kind.key]) / 1e6
        cost = costs[kind.key]
        agreement = "; ".join(f"{value:.5f}{'' if value >= BAR else ' (under 0.9999)'} vs {name}"
                              for name, value in cosines[kind.key].items())
        print(f"| {kind.label} | {size:.1f} | {paths[kind.key]} | {cost.wall_ms:.0f} | {cost.cpu_ms:.0f} "
              f"| {cost.files_per_second:.1f} | {cost.wall_ms / jpeg_ms:.1f}x | {agreement} |")
    mixed, jpeg = statistics.median(rates.mixed), statistics.median(rates.jpeg)
    shares = ", ".join(kind.label for kind in KINDS if kind.in_mixed)
    print(f"\nEnd to end in-process (Embedder; {rates.worker}; model only {rates.model_only:.1f} img/s):\n")
    print("| folder | files | img/s (median) | runs |")
    print("| --- | ---: | ---: | --- |")
    print(f"| mixed ({shares}) | {rates.files} | {mixed:.2f} | "
          f"{', '.join(f'{rate:.2f}' for rate in rates.mixed)} |")
    print(f"| all JPEG q92 | {rates.files} | {jpeg:.2f} | "
          f"{', '.join(f'{rate:.2f}' for rate in rates.jpeg)} |")
    print(f"\nmixed / all-JPEG: {mixed / jpeg:.2f}")
    if run_rates:
        print("`imgwatch run`, 1 worker: " + ", ".join(f"{name} {rate:.2f} img/s" for name, rate in run_rates.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=4, help="photos per format")
    parser.add_argument("--passes", type=int, default=5, help="decode passes (the median is reported)")
    parser.add_argument("--e2e-passes", type=int, default=3, help="end-to-end runs per folder")
    parser.add_argument("--e2e-rounds", type=int, default=2, help="times each end-to-end run embeds its folder")
    parser.add_argument("--grain", type=float, default=2.0, help="std-dev of the added sensor-like noise")
    parser.add_argument("--preview", choices=("half", "full"), default="half",
                        help="the DNG preview's size: 2016x1512 or 4032x3024")
    parser.add_argument("--keep", type=Path, default=None, help="make (or reuse) the photos here and keep them")
    parser.add_argument("--imgwatch-run", action="store_true",
                        help="also time `imgwatch run` (1 worker) on the mixed and all-JPEG folders")
    args = parser.parse_args()

    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}")
    print(f"libraries: {libraries()}", flush=True)
    root = args.keep or Path(tempfile.mkdtemp(prefix="imgwatch-formats-"))
    try:
        files = make_photos(root, args.count, args.grain, args.preview)
        mixed, jpegs = make_folders(root, files)
        blobs = {key: [(str(path), path.read_bytes()) for path in paths] for key, paths in files.items()}
        paths = {key: decode_path(*blobs[key][0]) for key in blobs}
        print(f"(1) decode_for_model, torch on 1 thread, {args.passes} passes:", flush=True)
        costs = decode_costs(blobs, args.passes)
        print("(2) equivalence with the full-size decode:", flush=True)
        cosines = equivalence(blobs)
        del blobs
        print(f"(3) end to end: {len(mixed)} mixed files vs {len(jpegs)} JPEGs, x{args.e2e_rounds} per run:",
              flush=True)
        rates = embedder_rates(mixed, jpegs, args.e2e_passes, args.e2e_rounds)
        run_rates = imgwatch_run_rates(root) if args.imgwatch_run else None
        report(files, paths, costs, cosines, rates, run_rates)
        print(f"load average at the end: {' '.join(f'{load:.2f}' for load in os.getloadavg())} (1, 5, 15 min)")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
