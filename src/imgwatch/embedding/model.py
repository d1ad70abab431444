"""The ResNet50 feature extractor: loading weights and embedding tensors; the engine choice every model shares."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, overload
from urllib.parse import urlsplit

import numpy as np
import structlog
import torch
from torchvision.models import ResNet50_Weights, resnet50

from imgwatch.embedding.engines.contract import EmbeddingEngine, EngineFailure
from imgwatch.embedding.engines.selection import EXPORTED_ENGINES, build_engine, preferred_cpu_engines
from imgwatch.embedding.identity import EMBEDDING_DIM, MODEL_NAME, PRETRAINED_ID, file_weights_id, random_weights_id
from imgwatch.embedding.preprocessing import IMAGENET, Preprocessing
from imgwatch.errors import DeviceUnavailable, EngineUnavailable, WeightsUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable

_PRETRAINED = ResNet50_Weights[PRETRAINED_ID]
_WRAPPER_KEYS = ("state_dict", "model")
_log = structlog.get_logger("imgwatch.embedding")
DOWNLOAD_TIMEOUT_SECONDS = 60  # a stalled connection: the weights' download fails with WeightsUnavailable


class EmbeddingModel:
    """A network in torch eager: images in, unit vectors out. ResNet50 with its classifier removed
    (2048-d), or a TorchScript model file (its ``name`` is then "torchscript", its ``dim`` declared)."""

    engine = "torch"

    def __init__(self, network: torch.nn.Module, weights_id: str, device: torch.device, name: str = MODEL_NAME,
                 dim: int = EMBEDDING_DIM, preprocessing: Preprocessing = IMAGENET) -> None:
        self.name = name
        self.weights_id = weights_id
        self.dim = dim
        self.preprocessing = preprocessing
        self.device = device
        self._on_cuda = device.type == "cuda"
        if self._on_cuda:
            # channels_last lets cuDNN pick tensor-core convolution kernels.
            network = network.to(memory_format=torch.channels_last)
        self.network = network.to(device).eval()

    @property
    def identity(self) -> str:
        """Names the vector space: embeddings from different identities must not be compared."""
        return f"{self.name}/{self.weights_id}"

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        """(n, 3, size, size) normalised images -> (n, dim) float32 rows of unit length."""
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected a (n, 3, H, W) batch, got shape {tuple(batch.shape)}")
        if batch.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            if self._on_cuda:
                # Pinned host memory makes the copy asynchronous; fp16 autocast
                # roughly doubles throughput with no visible effect on rankings.
                if not batch.is_cuda:  # already there when nvJPEG decoded it
                    batch = batch.pin_memory()
                staged = batch.to(self.device, non_blocking=True, memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=torch.float16):
                    features = self.network(staged)
            else:
                features = self.network(batch.to(self.device))
            # Normalise in float32: fp16 sums of squares lose precision.
            unit = torch.nn.functional.normalize(features.float(), dim=1)
            return unit.cpu().numpy()


@overload
def load_model(
    weights: str = ..., device: str = ..., seed: int = ..., engine: Literal["torch"] = ...,
    cache_dir: Path | None = ..., threads: int = ...,
) -> EmbeddingModel: ...


@overload
def load_model(
    weights: str = ..., device: str = ..., seed: int = ..., engine: str = ...,
    cache_dir: Path | None = ..., threads: int = ...,
) -> EmbeddingEngine: ...


def load_model(
    weights: str = "imagenet", device: str = "auto", seed: int = 0, engine: str = "torch",
    cache_dir: Path | None = None, threads: int = 0,
) -> EmbeddingEngine:
    """Build the embedding model.

    ``weights`` is "imagenet" (torchvision's IMAGENET1K_V2, downloaded and
    cached under TORCH_HOME), "random" (seeded init, for tests only) or the
    path of a local state_dict file.

    ``engine`` runs it: "torch" (eager), "onnxruntime" (the same network exported to
    ONNX, on the CPU; the export is kept in ``cache_dir``), "openvino" (exported in two
    parts, the second run in bfloat16 where the CPU has it natively) or "auto": on a CPU
    the fastest exported engine that loads (see preferred_cpu_engines), each failure a
    warning, torch last; torch on CUDA.
    ``threads``: intra-op threads per embed call for an exported engine (0: all cores).
    """
    target = inference_device(device, engine)
    candidates = engines_for(engine, target)
    if weights == "imagenet":
        network, weights_id = _pretrained_network(), PRETRAINED_ID
    elif weights == "random":
        network, weights_id = _random_network(seed), random_weights_id(seed)
    else:
        network, weights_id = _network_from_file(weights)
    return first_engine_that_loads(
        engine, candidates,
        lambda wanted: build_engine(wanted, network, MODEL_NAME, weights_id, EMBEDDING_DIM, cache_dir, threads),
        lambda: EmbeddingModel(network, weights_id, target))


def first_engine_that_loads(
    engine: str, candidates: list[str], build: Callable[[str], EmbeddingEngine],
    in_torch: Callable[[], EmbeddingEngine] | None,
) -> EmbeddingEngine:
    """The first of ``candidates`` that ``build`` makes, each failure a warning under "auto" (the
    configured ``engine``), else EngineUnavailable; "torch" (``in_torch``) always loads."""
    for position, wanted in enumerate(candidates):
        if wanted == "torch" and in_torch is not None:
            return in_torch()
        try:
            return build(wanted)
        except EngineFailure as exc:
            advice = (f"install it (pip install {EXPORTED_ENGINES[wanted]}) or set embedding.engine "
                      '= "torch" (IMGWATCH_EMBEDDING_ENGINE=torch)' if in_torch is not None else
                      f"install it (pip install {EXPORTED_ENGINES[wanted]}), or use a TorchScript model file")
            if engine != "auto" or position + 1 == len(candidates):
                raise EngineUnavailable(f"embedding.engine = {engine!r} cannot be used: {exc}; {advice}") from exc
            fallback = candidates[position + 1]
            _log.warning("engine_fallback", engine=wanted, fallback=fallback, reason=str(exc),
                         detail=f"embedding runs on {fallback}" + (", slower on a CPU" if fallback == "torch" else "")
                         + f"; {advice}")
    raise EngineUnavailable(f"no engine to run the model: embedding.engine = {engine!r}")  # candidates is never empty


def inference_device(device: str, engine: str = "torch") -> torch.device:
    """Where ``engine`` runs for the configured ``device``: exported engines run on the CPU."""
    if engine in EXPORTED_ENGINES:
        if device == "cuda" or device.startswith("cuda:"):
            raise EngineUnavailable(
                f"embedding.engine = {engine!r} runs on the CPU, but embedding.device = {device!r}; "
                'set embedding.engine = "auto" or "torch" to use the GPU'
            )
        resolve_device(device)  # still refuses a device that does not exist
        return torch.device("cpu")
    return resolve_device(device)


def engines_for(engine: str, target: torch.device) -> list[str]:
    """The engines to try in order; "auto" ends with torch, which always loads."""
    if engine == "auto":
        return ["torch"] if target.type == "cuda" else [*preferred_cpu_engines(), "torch"]
    if engine == "torch" or engine in EXPORTED_ENGINES:
        return [engine]
    raise EngineUnavailable(
        f"unknown embedding engine {engine!r}; expected 'auto', 'torch' or {', '.join(map(repr, EXPORTED_ENGINES))}"
    )


@dataclass(frozen=True)
class InferencePlan:
    """How a worker process spreads inference over its share of the machine."""

    batch_size: int  # images per forward pass
    streams: int  # micro-batches in flight at once, one thread each
    threads: int  # torch intra-op threads for each stream
    decode_threads: int  # the Embedder's pool: reading, hashing, decoding (headers only for nvJPEG)


# Measured on a 2-core VM (bench/RESULTS.md): CPU throughput peaks at 8 images per
# pass (19.0 images/s against 14.3 at 16, whose activations spill out of cache).
CPU_BATCH_SIZE = 8
CUDA_BATCH_SIZE = 64
# Two inference threads ("streams") on CUDA, both on torch's default CUDA stream: while one
# waits in nvJPEG's decode call, the other queues its resize and model work (H100, one worker,
# 2,048 12 MP JPEGs: 327 images/s against 200-247 with one).
CUDA_STREAMS = 2
# On a CPU, two decode threads beside the model's streams keep it fed (bench/RESULTS.md).
CPU_DECODE_THREADS = 2


def plan_inference(
    device: torch.device, batch_size: int = 0, streams: int = 0, threads: int = 0, processes: int = 1,
    decode_threads: int = 0,
) -> InferencePlan:
    """Fill in automatic (0) settings and apply the thread count to torch.

    On CUDA two streams feed the GPU. On a CPU each core of this process's share
    runs its own single-threaded stream: on a 2-core VM two streams of one thread
    embed 14.0 images/s against 12.4 for one stream of two threads, and decoding
    threads no longer stall the model's per-layer barriers. On CUDA the cores are the
    decode pool's (reading, hashing; nvJPEG decodes on the GPU).
    """
    cores = max(1, len(os.sched_getaffinity(0)) // max(1, processes))
    if device.type == "cuda":
        plan = InferencePlan(batch_size or CUDA_BATCH_SIZE, streams or CUDA_STREAMS, threads or torch.get_num_threads(),
                             decode_threads or cores)
    else:
        streams = streams or cores
        plan = InferencePlan(batch_size or CPU_BATCH_SIZE, streams, threads or max(1, cores // streams),
                             decode_threads or CPU_DECODE_THREADS)
    torch.set_num_threads(plan.threads)
    return plan


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceUnavailable(
                f"device {device!r} requested but CUDA is not available "
                "(no GPU, or torch was built without CUDA); use device 'cpu' or 'auto'"
            )
        return torch.device(device)
    raise DeviceUnavailable(f"unknown device {device!r}; expected 'auto', 'cpu' or 'cuda'")


def _headless_resnet50() -> torch.nn.Module:
    network = resnet50(weights=None)
    network.fc = torch.nn.Identity()  # the 2048-d pooled features are the embedding
    return network


def _pretrained_network() -> torch.nn.Module:
    try:
        download_once(_PRETRAINED.url)
        state = _PRETRAINED.get_state_dict(progress=False)  # from torch's cache, where it now is
    except Exception as exc:  # noqa: BLE001 - network, disk and unpickling errors all mean the same
        raise WeightsUnavailable(
            f"could not download {PRETRAINED_ID} weights ({type(exc).__name__}: {exc}); "
            f"on an air-gapped host download {_PRETRAINED.url} elsewhere and set "
            'weights = "/path/to/file.pth" (or IMGWATCH_EMBEDDING_WEIGHTS / --weights PATH), '
            f"or copy it into {torch.hub.get_dir()}/checkpoints/"
        ) from exc
    network = _headless_resnet50()
    network.load_state_dict(_without_classifier(state))
    return network


def download_once(url: str) -> Path:
    """The weights file at ``url`` in torch's cache (where torchvision looks), downloaded if not there.

    torch.hub's own download prints "Downloading: ..." to stdout, which lands in the middle of the
    progress bar `imgwatch run` draws on a terminal; the log says it instead (a log line clears the bar's).
    """
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlsplit(url).path)
    if cached.exists():
        return cached
    _log.info("weights_download", url=url, to=str(cached))
    cached.parent.mkdir(parents=True, exist_ok=True)
    # Into a temporary file renamed when complete: an interrupted download leaves no half file to load.
    with tempfile.NamedTemporaryFile(dir=cached.parent, prefix=cached.name, suffix=".part", delete=False) as part:
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
                shutil.copyfileobj(response, part)
        except BaseException:
            os.unlink(part.name)
            raise
    os.replace(part.name, cached)
    return cached


def _random_network(seed: int) -> torch.nn.Module:
    _log.warning(
        "random_weights",
        seed=seed,
        detail="ResNet50 has random weights: similarity scores are meaningless for real photos; "
        "use this only for tests and benchmarks",
    )
    # fork_rng keeps the caller's global RNG untouched while making init reproducible.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _headless_resnet50()


def _network_from_file(path: str) -> tuple[torch.nn.Module, str]:
    try:
        with open(path, "rb") as handle:
            blob = handle.read()
    except OSError as exc:
        raise WeightsUnavailable(
            f"cannot read weights file {path}: {exc.strerror or exc}; "
            f"download {_PRETRAINED.url} and point weights at it"
        ) from exc
    try:
        loaded = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise WeightsUnavailable(
            f"weights file {path} is not a readable PyTorch state_dict ({type(exc).__name__}: {exc}); "
            f"re-download {_PRETRAINED.url}"
        ) from exc
    network = _headless_resnet50()
    state = _without_classifier(_unwrap(loaded, path))
    _check_compatible(state, network.state_dict(), path)
    network.load_state_dict(state)
    return network, file_weights_id(hashlib.sha256(blob).hexdigest())


def _unwrap(loaded: object, path: str) -> dict[str, torch.Tensor]:
    """Accept bare state_dicts, training checkpoints and DataParallel prefixes."""
    for key in _WRAPPER_KEYS:
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
            break
    if not isinstance(loaded, Mapping):
        raise WeightsUnavailable(
            f"weights file {path} holds a {type(loaded).__name__}, not a state_dict of tensors"
        )
    state: dict[str, torch.Tensor] = {}
    for key, value in loaded.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise WeightsUnavailable(f"weights file {path} has a non-tensor entry {key!r}; expected a state_dict")
        state[key.removeprefix("module.")] = value
    return state


def _without_classifier(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value for key, value in state.items() if not key.startswith("fc.")}


def _check_compatible(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], path: str
) -> None:
    # BatchNorm recreates num_batches_tracked when absent (older checkpoints lack it).
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} wrong shapes (e.g. {'; '.join(wrong_shape[:3])})")
    if problems:
        raise WeightsUnavailable(
            f"weights file {path} is not a torchvision ResNet50 state_dict: {', '.join(problems)}"
        )
