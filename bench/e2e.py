"""End-to-end throughput of `imgwatch run` against the model-only rate, on one machine.

    python bench/e2e.py PHOTO_DIR [--weights random] [--workers 1] [--repeat 1] [--engine auto|torch|onnxruntime]

PHOTO_DIR holds the photos (make 12-megapixel JPEGs with `python bench/photos.py DIR --count 96`).
The model-only rate is measured first, in this process: ResNet50 forward passes on
pre-decoded tensors at the worker's batch size; then the decode-only rate: the worker's decode
path alone on the photos already in memory (nvJPEG micro-batches on CUDA, the decode threads on a
CPU). Then `imgwatch run` starts on a fresh data dir; the clock runs from its worker's
`worker_ready` log line (the model is loaded) until the store holds every photo, so start-up and
model loading are not counted against the pipeline. Reported: the three rates, end to end as a
share of the slower of the other two (target: >= 0.85), and the engine the worker ran (from its
`worker_ready` line; --engine sets IMGWATCH_EMBEDDING_ENGINE, default: the config's).
With --repeat N each worker count runs N times, the counts taking turns, and the median of
each is reported too: a backlog of a few seconds' work moves by several points from run to run.
bench/compare.py runs the same end-to-end measurement beside the naive seed-style pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from embed_rate import decode_only_rate, model_only_rate  # bench/ is on sys.path when run as a script
from imgwatch.datadir import EMBEDDED_DB_NAME
from imgwatch.embedding import inference_device, load_model, plan_inference
from imgwatch.store import EmbeddedGraphStore

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class EndToEnd:
    images: int
    seconds: float  # from worker_ready (or the photos landing) until the store holds every photo
    job_seconds: float  # the sum of the workers' job durations (job_done lines)
    embed_seconds: float  # of which reading, decoding and the model
    store_seconds: float  # of which the store's upserts and links
    worker_ready: dict[str, object]  # the first worker_ready log line: engine, batch size, streams...

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds


def end_to_end(photo_dir: Path, weights: str, workers: int, engine: str | None = None,
               land_photos: bool = False, jpeg_decoder: str | None = None) -> EndToEnd:
    """`imgwatch run` on a fresh data dir, timed until the store holds every photo of PHOTO_DIR.

    By default it runs on PHOTO_DIR itself and the clock starts at the worker's
    `worker_ready` line (reconcile finds the photos). With ``land_photos`` it watches an
    empty folder instead and the clock starts when the photos are renamed into it, all at
    once, after `worker_ready`: the watcher, the settle delay and the queue are timed too.
    """
    photos = sorted(p for p in photo_dir.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    count = len(photos)
    with tempfile.TemporaryDirectory(prefix="imgwatch-bench-") as data_dir:
        env = dict(os.environ, IMGWATCH_GENERAL_DATA_DIR=data_dir, IMGWATCH_EMBEDDING_WEIGHTS=weights,
                   IMGWATCH_GENERAL_LOG_FORMAT="json", XDG_CONFIG_HOME=os.path.join(data_dir, "xdg"))
        if engine:
            env["IMGWATCH_EMBEDDING_ENGINE"] = engine
        if jpeg_decoder:
            env["IMGWATCH_EMBEDDING_JPEG_DECODER"] = jpeg_decoder
        watched, staged = photo_dir, []
        if land_photos:
            watched, staging = Path(data_dir) / "photos", Path(data_dir) / "staging"
            watched.mkdir()
            staging.mkdir()
            for photo in photos:  # same file system as the watched folder, so a rename lands it whole
                shutil.copyfile(photo, staging / photo.name)
                staged.append(staging / photo.name)
        log_path = Path(data_dir) / "run.log"
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "imgwatch", "run", str(watched), "--workers", str(workers)],
                env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            started_at = None
            while started_at is None:
                if process.poll() is not None:
                    raise SystemExit(f"imgwatch run exited early:\n{log_path.read_text()}")
                if '"worker_ready"' in log_path.read_text():
                    started_at = time.perf_counter()
                time.sleep(0.05)
            for photo in staged:
                photo.rename(watched / photo.name)
            with EmbeddedGraphStore(Path(data_dir) / EMBEDDED_DB_NAME) as store:
                while store.stats().images < count:
                    if process.poll() is not None:
                        raise SystemExit(f"imgwatch run exited early:\n{log_path.read_text()}")
                    time.sleep(0.05)
            elapsed = time.perf_counter() - started_at
        finally:
            process.send_signal(2)
            process.wait(timeout=120)
        lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
        done = [line for line in lines if line.get("event") == "job_done"]
        job_seconds, embed_seconds, store_seconds = (sum(line[key] for line in done)
                                                     for key in ("seconds", "embed_seconds", "store_seconds"))
        ready = next(line for line in lines if line.get("event") == "worker_ready")
    return EndToEnd(count, elapsed, job_seconds, embed_seconds, store_seconds, ready)


def describe_worker(ready: dict[str, object]) -> str:
    return (f"engine {ready.get('engine', '?')}, model {ready.get('model')}, device {ready.get('device')}, "
            f"batch {ready.get('batch_size')}, {ready.get('streams')} stream(s) x {ready.get('threads')} thread(s), "
            f"{ready.get('decode_threads')} decode threads, gpu_decode {ready.get('gpu_decode')}, "
            f"jpeg_decoder {ready.get('jpeg_decoder')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo_dir", type=Path)
    parser.add_argument("--weights", default="random")
    parser.add_argument("--workers", type=int, nargs="+", default=[1],
                        help="worker processes; several values: one run each, side by side")
    parser.add_argument("--batch", type=int, default=0,
                        help="micro-batch size, 0: automatic (sets IMGWATCH_EMBEDDING_BATCH_SIZE for the run too)")
    parser.add_argument("--streams", type=int, default=0, help="inference streams (0: automatic)")
    parser.add_argument("--engine", default=None,
                        help="embedding.engine for the run (auto, torch, onnxruntime; default: the config's)")
    parser.add_argument("--jpeg-decoder", nargs="+", default=["auto"], choices=["auto", "gpu", "cpu"],
                        help="embedding.jpeg_decoder for the runs; several: side by side, and with all three "
                             "the shared run as a share of the sum of nvJPEG alone and the cores alone (issue 26)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per worker count, the counts taking turns; the median of each is reported")
    args = parser.parse_args()
    os.environ["IMGWATCH_EMBEDDING_BATCH_SIZE"] = str(args.batch)
    os.environ["IMGWATCH_EMBEDDING_STREAMS"] = str(args.streams)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else ""))
    # The engine the run's worker loads: the run reads no user config (its XDG_CONFIG_HOME is its own).
    engine = args.engine or "auto"
    plan = plan_inference(inference_device("auto", engine), args.batch, args.streams)
    with tempfile.TemporaryDirectory(prefix="imgwatch-bench-engine-") as engine_cache:
        model = load_model(args.weights, "auto", engine=engine, cache_dir=Path(engine_cache), threads=plan.threads)
        model_rate = model_only_rate(model, plan, batches=12 if device == "cpu" else 50)
    print(f"model only:  {model_rate:7.2f} images/s (engine {model.engine}, batch {plan.batch_size}, "
          f"{plan.streams} stream(s) x {plan.threads} thread(s))")
    photos = [str(path) for path in sorted(args.photo_dir.iterdir()) if path.suffix.lower() in PHOTO_SUFFIXES]
    decode_rate, decode_path = decode_only_rate(photos, plan, model.device)
    print(f"decode only: {decode_rate:7.2f} images/s ({decode_path})")
    bound = min(model_rate, decode_rate)
    limit = f"{'decode' if decode_rate < model_rate else 'model'}: {bound:.2f} images/s"
    rates: dict[tuple[int, str], list[float]] = {(w, d): [] for w in args.workers for d in args.jpeg_decoder}
    for _ in range(args.repeat):
        for workers, decoder in rates:
            run = end_to_end(args.photo_dir, args.weights, workers, args.engine, jpeg_decoder=decoder)
            rates[workers, decoder].append(run.images_per_second)
            print(f"end to end:  {run.images_per_second:7.2f} images/s ({run.images} photos, {workers} worker(s), "
                  f"{run.job_seconds:.1f} s inside jobs: {run.embed_seconds:.1f} s embedding, "
                  f"{run.store_seconds:.1f} s store; {describe_worker(run.worker_ready)})")
            print(f"ratio:       {run.images_per_second / bound:7.2%} of the slower of model only and decode only "
                  f"({limit})")
    if args.repeat > 1:
        for (workers, decoder), values in rates.items():
            median = statistics.median(values)
            print(f"median:      {median:7.2f} images/s = {median / bound:.2%} with {workers} worker(s), jpeg_decoder "
                  f"{decoder} (runs: {', '.join(f'{value / bound:.1%}' for value in values)}; {limit})")
    if {"auto", "gpu", "cpu"} <= set(args.jpeg_decoder):
        for workers in args.workers:
            shared, gpu, cpu = (statistics.median(rates[workers, d]) for d in ("auto", "gpu", "cpu"))
            print(f"decoders:    {workers} worker(s): both {shared:.1f} images/s = {shared / (gpu + cpu):.1%} of "
                  f"nvJPEG alone {gpu:.1f} + the cores alone {cpu:.1f} (goal: >= 1,000 images/s and >= 90 %)")

if __name__ == "__main__":
    main()
