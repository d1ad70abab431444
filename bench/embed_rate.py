"""How fast are files embedded, and how much of the model's speed survives decoding?

Usage: python bench/embed_rate.py DIR [--batch 0] [--streams 0] [--threads 2] [--device auto]

Reports
  (0) decode cost per 12 MP image, single thread: decode_for_model vs the full reference decode
  (1) model-only rate: EmbeddingModel.embed on tensors, threaded as a worker threads it
  (2) embedder rate: Embedder.embed_files (read + hash + decode overlapped with inference),
      without the queue and the store (bench/e2e.py measures the whole pipeline)
  (3) the ratio (2)/(1): 1.0 means decoding is completely hidden behind the model
Random weights are used (the speed is the same as with real ones).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import structlog
import torch
from PIL import Image

from imgwatch.embedding import (
    Embedded,
    Embedder,
    EmbeddingModel,
    InferencePlan,
    decode_for_model,
    load_model,
    nvjpeg,
    plan_inference,
    read_file,
    reference_preprocess,
)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--batch", type=int, default=0, help="images per forward pass (0: automatic)")
    parser.add_argument("--streams", type=int, default=0, help="inference streams (0: automatic)")
    parser.add_argument("--threads", type=int, default=2, help="decode threads")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--decode-samples", type=int, default=8)
    args = parser.parse_args()

    paths = sorted(str(p) for p in args.directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SystemExit(f"no images in {args.directory}; create some with bench/photos.py")

    # The random-weights warning is expected here; keep the report readable.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    model = load_model("random", device=args.device)
    measure_decode_cost(paths[: args.decode_samples])
    plan = plan_inference(model.device, args.batch, args.streams)
    print_machine(model, plan, args, len(paths))
    model_rate = model_only_rate(model, plan, batches=12 if model.device.type == "cpu" else 50)
    print(f"(1) model only: {model_rate:.2f} images/s")
    pipeline_rate = measure_pipeline(model, plan, paths, args.threads)
    print(f"(3) ratio end-to-end / model-only: {pipeline_rate / model_rate:.2f}")


def print_machine(model: EmbeddingModel, plan: InferencePlan, args: argparse.Namespace, count: int) -> None:
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    print(f"torch {torch.__version__}, device {model.device}", end="")
    if model.device.type == "cuda":
        print(f" ({torch.cuda.get_device_name(model.device)})", end="")
    print(f"\nfiles: {count} in {args.directory}, batch {plan.batch_size}, {plan.streams} stream(s) x "
          f"{plan.threads} thread(s), decode threads {args.threads}")


def measure_decode_cost(paths: list[str]) -> None:
    blobs = [read_file(path)[1] for path in paths]  # exclude disk I/O: this times decoding only
    sizes = {Image.open(io.BytesIO(blob)).size for blob in blobs}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fast_ms = _median_ms(blobs, lambda blob: decode_for_model(blob, "<bench>"))
        full_ms = _median_ms(blobs, lambda blob: reference_preprocess(Image.open(io.BytesIO(blob))))
    finally:
        torch.set_num_threads(threads)
    print(f"(0) decode, 1 thread, {len(blobs)} images {sorted(sizes)}: "
          f"decode_for_model {fast_ms:.1f} ms/image, reference {full_ms:.1f} ms/image "
          f"({full_ms / fast_ms:.1f}x)")


def _median_ms(blobs: list[bytes], decode: Callable[[bytes], object]) -> float:
    decode(blobs[0])  # warm-up: first-call imports and allocations
    timings = []
    for blob in blobs:
        started = time.perf_counter()
        decode(blob)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000


def model_only_rate(model: EmbeddingModel, plan: InferencePlan, batches: int) -> float:
    """Images/s of the model alone on pre-made tensors, with the worker's batches and streams."""
    batch = torch.randn(plan.batch_size, 3, 224, 224)
    with ThreadPoolExecutor(plan.streams) as pool:
        list(pool.map(model.embed, [batch] * plan.streams))  # warm-up: allocator, cuDNN autotuning
        started = time.perf_counter()
        list(pool.map(model.embed, [batch] * batches))
    return plan.batch_size * batches / (time.perf_counter() - started)


def decode_only_rate(paths: list[str], plan: InferencePlan, device: torch.device) -> tuple[float, str]:
    """Images/s of the worker's decode path alone, on files already in memory, and its name.

    On CUDA with nvJPEG: micro-batches of plan.batch_size through nvjpeg.model_inputs (decode,
    upright, resize, crop, normalise on the GPU; the pool's header checks are not counted). Otherwise
    decode_for_model on plan.decode_threads threads.
    """
    blobs = [read_file(path)[1] for path in paths]
    if device.type == "cuda" and nvjpeg.available(device):
        jpegs = [nvjpeg.inspect_jpeg(blob, path) or reference_preprocess(Image.open(io.BytesIO(blob)))
                 for blob, path in zip(blobs, paths, strict=True)]
        nvjpeg.model_inputs(jpegs[: plan.batch_size], device)  # warm-up: nvJPEG's buffers
        torch.cuda.synchronize(device)
        started = time.perf_counter()
        for start in range(0, len(jpegs), plan.batch_size):
            nvjpeg.model_inputs(jpegs[start:start + plan.batch_size], device)
        torch.cuda.synchronize(device)
        return len(jpegs) / (time.perf_counter() - started), f"nvJPEG, batches of {plan.batch_size}"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(plan.decode_threads) as pool:
            started = time.perf_counter()
            list(pool.map(lambda blob: decode_for_model(blob, "<bench>"), blobs))
            elapsed = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    return len(blobs) / elapsed, f"decode_for_model on {plan.decode_threads} CPU threads"


def measure_pipeline(model: EmbeddingModel, plan: InferencePlan, paths: list[str], threads: int) -> float:
    with Embedder(model, batch_size=plan.batch_size, decode_threads=threads, streams=plan.streams) as embedder:
        started = time.perf_counter()
        results = list(embedder.embed_files(paths))
        elapsed = time.perf_counter() - started
    embedded = sum(isinstance(result, Embedded) for result in results)
    rate = embedded / elapsed
    print(f"(2) read+decode+embed: {rate:.2f} images/s ({embedded}/{len(paths)} embedded in {elapsed:.2f} s)")
    return rate


if __name__ == "__main__":
    main()
