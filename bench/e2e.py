"""End-to-end throughput of `imgwatch run` against the model-only rate, on one machine.

    python bench/e2e.py PHOTO_DIR [--weights random] [--workers 1]

PHOTO_DIR holds the photos (make 12-megapixel JPEGs with `python bench/photos.py DIR --count 96`).
The model-only rate is measured first, in this process: ResNet50 forward passes on
pre-decoded tensors at the worker's batch size. Then `imgwatch run` starts on a fresh data
dir; the clock runs from its worker's `worker_ready` log line (the model is loaded) until
the store holds every photo, so start-up and model loading are not counted against the
pipeline. Reported: both rates and their ratio (target on CPU: >= 0.85).
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

import torch

from embed_rate import model_only_rate  # bench/ is on sys.path when run as a script
from imgwatch.datadir import EMBEDDED_DB_NAME
from imgwatch.embedding import load_model, plan_inference
from imgwatch.store import EmbeddedGraphStore


def end_to_end_rate(photo_dir: Path, weights: str, workers: int) -> tuple[float, int, float]:
    count = sum(1 for p in photo_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    with tempfile.TemporaryDirectory(prefix="imgwatch-bench-") as data_dir:
        env = dict(os.environ, IMGWATCH_GENERAL_DATA_DIR=data_dir, IMGWATCH_EMBEDDING_WEIGHTS=weights,
                   IMGWATCH_GENERAL_LOG_FORMAT="json", XDG_CONFIG_HOME=os.path.join(data_dir, "xdg"))
        log_path = Path(data_dir) / "run.log"
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "imgwatch", "run", str(photo_dir), "--workers", str(workers)],
                env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            ready_at = None
            while ready_at is None:
                if process.poll() is not None:
                    raise SystemExit(f"imgwatch run exited early:\n{log_path.read_text()}")
                if '"worker_ready"' in log_path.read_text():
                    ready_at = time.perf_counter()
                time.sleep(0.05)
            with EmbeddedGraphStore(Path(data_dir) / EMBEDDED_DB_NAME) as store:
                while store.stats().images < count:
                    if process.poll() is not None:
                        raise SystemExit(f"imgwatch run exited early:\n{log_path.read_text()}")
                    time.sleep(0.05)
            elapsed = time.perf_counter() - ready_at
        finally:
            process.send_signal(2)
            process.wait(timeout=120)
        jobs = [json.loads(line) for line in log_path.read_text().splitlines() if '"job_done"' in line]
        job_seconds = sum(j["seconds"] for j in jobs)
    return count / elapsed, count, job_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo_dir", type=Path)
    parser.add_argument("--weights", default="random")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch", type=int, default=0,
                        help="micro-batch size, 0: automatic (sets IMGWATCH_EMBEDDING_BATCH_SIZE for the run too)")
    parser.add_argument("--streams", type=int, default=0, help="inference streams (0: automatic)")
    args = parser.parse_args()
    os.environ["IMGWATCH_EMBEDDING_BATCH_SIZE"] = str(args.batch)
    os.environ["IMGWATCH_EMBEDDING_STREAMS"] = str(args.streams)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else ""))
    model = load_model(args.weights, "auto")
    plan = plan_inference(model.device, args.batch, args.streams)
    model_rate = model_only_rate(model, plan, batches=12 if device == "cpu" else 50)
    print(f"model only:  {model_rate:7.2f} images/s (batch {plan.batch_size}, {plan.streams} stream(s) "
          f"x {plan.threads} thread(s))")
    rate, count, job_seconds = end_to_end_rate(args.photo_dir, args.weights, args.workers)
    print(f"end to end:  {rate:7.2f} images/s ({count} photos, {args.workers} worker(s), "
          f"{job_seconds:.1f} s inside jobs)")
    print(f"ratio:       {rate / model_rate:7.2%} of the model-only rate")


if __name__ == "__main__":
    main()
