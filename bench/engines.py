"""Which engine embeds fastest on this CPU, and is it exact? Every engine side by side in one run.

Usage: python bench/engines.py [--batches 6] [--rounds 3] [--batch 8]

Each configuration embeds the same ready (3, 224, 224) tensors, `--rounds` times `--batches`
micro-batches of `--batch`, with as many caller threads as it has streams (as the Embedder's
streams call the model); rounds interleave the configurations, the median is reported in
images/s (and every round). Then each engine embeds scikit-image's real photos and is compared
with torch: the lowest embedding cosine, and the highest |difference| of a unit-vector component.
The weights are seeded random ones with BatchNorm statistics recalibrated on those photos
(tests.helpers.write_calibrated_weights), so different photos score ~0.8-0.98 apart and a
cosine of 0.9999 means the same embedding.

Configurations:
  torch eager        EmbeddingModel as a worker runs it (plan_inference: streams x threads)
  onnxruntime        OnnxRuntimeEngine (what embedding.engine = "auto" runs), shared session,
                     N threads per call x M concurrent callers
  onnxruntime raw    two sessions of one thread, one per caller (the alternative to sharing one)
  openvino           if installed: f32 precision (the CPU's default may be bf16), THROUGHPUT hint
                     with one infer request per stream, and LATENCY with one request; bf16
                     throughout (what OpenVINO does by default on an AMX CPU: fast, not exact)
  openvino mixed     OpenVinoEngine (embedding.engine = "openvino"): f32 up to layer3, bf16 after
"""

from __future__ import annotations

import argparse
import os
import platform
import queue
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import structlog
import torch

from imgwatch.embedding import load_model, plan_inference, reference_preprocess
from imgwatch.embedding.engines.onnx_cache import INPUT_NAME, onnx_model
from imgwatch.embedding.engines.onnxruntime_engine import OnnxRuntimeEngine

REPO = Path(__file__).resolve().parents[1]
# scikit-image's sample photos, as in the tests (tests/helpers.py PHOTO_NAMES)
PHOTO_NAMES = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
               "retina", "camera"]

Embed = Callable[[torch.Tensor], np.ndarray]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=6, help="micro-batches per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8, help="images per micro-batch")
    parser.add_argument("--weights", help="a ResNet50 state_dict (default: calibrated random weights)")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # keep the table readable

    photos = real_photos()
    scratch = Path(tempfile.mkdtemp(prefix="imgwatch-bench-engines-"))
    weights = args.weights or calibrated_weights(scratch / "calibrated.pth", [p for _, p in photos])
    photo_batch = torch.stack([reference_preprocess(p) for _, p in photos])
    torch_model = load_model(weights, device="cpu")
    plan = plan_inference(torch.device("cpu"), batch_size=args.batch)  # sets torch's threads as a worker does
    cores = len(os.sched_getaffinity(0))
    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores, Python {platform.python_version()}, "
          f"torch {torch.__version__}, {cpu_name()}")
    print(f"worker plan: batch {plan.batch_size}, {plan.streams} streams x {plan.threads} thread(s)")

    cache = scratch / "engines"
    started = time.perf_counter()
    model_bytes = onnx_model(torch_model.network, torch_model.name, torch_model.weights_id, cache)
    print(f"ONNX export (first use): {time.perf_counter() - started:.2f} s, {len(model_bytes) / 2**20:.0f} MiB")
    started = time.perf_counter()
    load_model(weights, device="cpu", engine="onnxruntime", cache_dir=cache, threads=1)
    print(f"load_model(engine='onnxruntime') from the cache: {time.perf_counter() - started:.2f} s "
          "(weights file, checksum, session, probe compared with torch)")

    tensors = [torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    configurations: list[tuple[str, Embed, int]] = [
        (f"torch eager, {plan.streams} streams x {plan.threads} thread", torch_model.embed, plan.streams)]
    for threads, callers in ((cores, 1), (1, cores)):
        engine = OnnxRuntimeEngine(model_bytes, torch_model.name, torch_model.weights_id, torch_model.dim, threads)
        configurations.append(
            (f"onnxruntime, 1 session, {callers} caller(s) x {threads} thread(s)", engine.embed, callers))
    configurations.append(
        (f"onnxruntime raw, {cores} sessions x 1 thread", session_per_caller(model_bytes, cores), cores))
    try:
        import imgwatch.embedding.engines.openvino_engine  # noqa: F401 - first: it keeps OpenVINO's telemetry off
    except ImportError:
        print("openvino: not installed (pip install openvino)")
    else:
        onnx_file = next(cache.glob("*.onnx"))
        configurations.append((f"openvino f32, THROUGHPUT, {cores} streams/requests",
                               openvino_embed(onnx_file, "THROUGHPUT", cores, cores), cores))
        configurations.append((f"openvino f32, LATENCY, 1 request x {cores} threads",
                               openvino_embed(onnx_file, "LATENCY", 1, cores), 1))
        configurations.append((f"openvino bf16 throughout, LATENCY, 1 request x {cores} threads",
                               openvino_embed(onnx_file, "LATENCY", 1, cores, precision="bf16"), 1))
        for threads, callers in ((cores, 1), (1, cores)):
            mixed = load_model(weights, device="cpu", engine="openvino", cache_dir=cache, threads=threads)
            configurations.append((f"openvino f32 to layer3, bf16 after, {callers} caller(s) x {threads} thread(s)",
                                   mixed.embed, callers))

    # Rounds interleave the configurations, so a neighbour's load on the VM hits them all alike.
    rates: dict[str, list[float]] = {label: [] for label, _, _ in configurations}
    for _ in range(args.rounds):
        for label, embed, callers in configurations:
            rates[label].append(images_per_second(embed, callers, tensors, args.batches))
    reference = torch_model.embed(photo_batch)
    print(f"\n{'configuration':58} {'img/s':>7} {'(rounds)':>18} {'min cosine':>11} {'max |diff|':>9}")
    for label, embed, _ in configurations:
        got = embed(photo_batch)
        cosine = float(np.min(np.sum(got * reference, axis=1)))
        spread = "/".join(f"{rate:.1f}" for rate in rates[label])
        print(f"{label:58} {statistics.median(rates[label]):7.1f} {spread:>18} {cosine:11.7f} "
              f"{float(np.max(np.abs(got - reference))):9.1e}")


def images_per_second(embed: Embed, callers: int, tensors: list[torch.Tensor], batches: int) -> float:
    with ThreadPoolExecutor(max_workers=callers) as pool:
        list(pool.map(embed, tensors[:callers]))  # warm up every caller
        started = time.perf_counter()
        list(pool.map(embed, [tensors[i % len(tensors)] for i in range(batches)]))
        return batches * len(tensors[0]) / (time.perf_counter() - started)


def session_per_caller(model_bytes: bytes, sessions: int) -> Embed:
    import onnxruntime

    free: queue.Queue[onnxruntime.InferenceSession] = queue.Queue()
    for _ in range(sessions):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        free.put(onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"]))

    def embed(batch: torch.Tensor) -> np.ndarray:
        session = free.get()
        try:
            return unit(session.run(None, {INPUT_NAME: batch.numpy()})[0])
        finally:
            free.put(session)

    return embed


def openvino_embed(onnx_file: Path, hint: str, requests: int, threads: int, precision: str = "f32") -> Embed:
    import openvino

    core = openvino.Core()
    settings = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": str(threads)}
    if hint == "THROUGHPUT":
        settings["NUM_STREAMS"] = str(requests)
    compiled = core.compile_model(core.read_model(onnx_file), "CPU", settings)
    free: queue.Queue[openvino.InferRequest] = queue.Queue()
    for _ in range(requests):
        free.put(compiled.create_infer_request())

    def embed(batch: torch.Tensor) -> np.ndarray:
        request = free.get()
        try:
            return unit(np.array(request.infer({0: batch.numpy()})[0]))
        finally:
            free.put(request)

    return embed


def calibrated_weights(path: Path, photos: list[object]) -> str:
    sys.path.insert(0, str(REPO))  # tests.helpers, from a checkout
    from tests.helpers import write_calibrated_weights

    return str(write_calibrated_weights(path, photos))


def unit(features: np.ndarray) -> np.ndarray:
    return features / np.linalg.norm(features, axis=1, keepdims=True)


def real_photos() -> list[tuple[str, object]]:
    from PIL import Image
    from skimage import data

    photos = []
    for name in PHOTO_NAMES:
        array = getattr(data, name)()
        if array.ndim == 2:
            array = np.stack([array] * 3, axis=-1)
        photos.append((name, Image.fromarray(array[..., :3])))
    return photos


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


if __name__ == "__main__":
    main()
