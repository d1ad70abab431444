"""Build an exported engine by name, and prove it computes what torch computes before using it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import structlog
import torch

from imgwatch.embedding.engines.contract import EmbeddingEngine, EngineFailure, ExportedEngine, unit_rows
from imgwatch.embedding.engines.onnx_cache import IMAGE_SHAPE, onnx_model

# The exported engines, with the packages each needs (for the message when one is missing).
EXPORTED_ENGINES = {"onnxruntime": "onnxruntime onnx", "openvino": "openvino onnx"}
_PROBE_SEED = 1234
_log = structlog.get_logger("imgwatch.embedding")


def preferred_cpu_engines() -> list[str]:
    """The exported engines that ``engine = "auto"`` tries on a CPU, fastest first.

    OpenVINO leads only where the CPU computes bfloat16 natively: there its mixed precision
    is ~1.6x ONNX Runtime; elsewhere it would run float32 at ONNX Runtime's speed.
    """
    try:
        from imgwatch.embedding.engines.openvino_engine import native_bfloat16
    except ImportError:
        return ["onnxruntime"]
    return ["openvino", "onnxruntime"] if native_bfloat16() else ["onnxruntime"]


def build_engine(
    engine: str, network: torch.nn.Module, name: str, weights_id: str, dim: int,
    cache_dir: Path | None, threads: int = 0,
) -> EmbeddingEngine:
    """``engine`` running ``network`` (on the CPU, in eval mode); EngineFailure says why it cannot."""
    if engine not in EXPORTED_ENGINES:
        raise EngineFailure(f"unknown engine {engine!r}; expected one of {', '.join(EXPORTED_ENGINES)}")
    started = time.perf_counter()
    try:
        built = _load(engine, network, name, weights_id, dim, cache_dir, threads)
    except ImportError as exc:
        raise EngineFailure(f"the {engine} package is not installed ({exc})") from exc
    except EngineFailure:
        raise
    except Exception as exc:  # noqa: BLE001 - the runtime's own errors, whatever their type
        raise EngineFailure(f"{engine} could not load the exported model ({type(exc).__name__}: {exc})") from exc
    cosine = _agreement_with_torch(built, network)
    if not cosine >= built.min_cosine:  # "not >=": a NaN embedding fails too
        raise EngineFailure(f"{engine} disagrees with torch (embedding cosine {cosine:.6f} < {built.min_cosine})")
    _log.info("engine_ready", engine=engine, weights=weights_id, threads=threads or "default",
              precision=built.precision, cosine_vs_torch=round(cosine, 7),
              seconds=round(time.perf_counter() - started, 2))
    return built


def _load(
    engine: str, network: torch.nn.Module, name: str, weights_id: str, dim: int, cache_dir: Path | None,
    threads: int,
) -> ExportedEngine:
    """The engine object; the exported files come from (or go to) the cache."""
    if engine == "onnxruntime":
        from imgwatch.embedding.engines.onnxruntime_engine import OnnxRuntimeEngine

        return OnnxRuntimeEngine(onnx_model(network, name, weights_id, cache_dir), name, weights_id, dim, threads)
    from imgwatch.embedding.engines.openvino_engine import OpenVinoEngine, split_network

    first, second = split_network(network)
    with torch.inference_mode():
        middle_shape = tuple(first(torch.zeros(1, *IMAGE_SHAPE)).shape[1:])
    return OpenVinoEngine(
        onnx_model(first, f"{name}.float32-part", weights_id, cache_dir),
        onnx_model(second, f"{name}.bfloat16-part", weights_id, cache_dir, input_shape=middle_shape),
        name, weights_id, dim, threads,
    )


def _agreement_with_torch(engine: EmbeddingEngine, network: torch.nn.Module) -> float:
    """The lowest cosine between the engine's and torch's embeddings of two probe images.

    Catches what a checksum cannot: an exporter or runtime that computes something else.
    """
    generator = torch.Generator().manual_seed(_PROBE_SEED)
    probe = torch.randn(2, 3, 224, 224, generator=generator)
    with torch.inference_mode():
        expected = unit_rows(network.eval()(probe).numpy())
    try:
        got = engine.embed(probe)
    except Exception as exc:  # noqa: BLE001 - a runtime that loads but cannot run is no engine
        raise EngineFailure(f"{engine.engine} failed on a probe batch ({type(exc).__name__}: {exc})") from exc
    return float(np.min(np.sum(expected * got, axis=1)))
