"""Build an exported engine by name, and prove it computes what its reference computes before using it.

The reference is torch running the network (ResNet50, or a TorchScript model file); for an ONNX
model file, which has no torch form, it is ONNX Runtime running the file as written, without graph
optimisations, so that the engine's optimised graph (or OpenVINO's compiled one) is checked against it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import structlog
import torch

from imgwatch.embedding.engines.contract import EmbeddingEngine, EngineFailure, ExportedEngine, unit_rows
from imgwatch.embedding.engines.onnx_cache import onnx_model
from imgwatch.embedding.preprocessing import IMAGENET, Preprocessing

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
    cache_dir: Path | None, threads: int = 0, preprocessing: Preprocessing = IMAGENET,
) -> EmbeddingEngine:
    """``engine`` running ``network`` (on the CPU, in eval mode: ResNet50 or a TorchScript model file,
    exported to ONNX), checked against torch; EngineFailure says why it cannot."""
    started = time.perf_counter()
    built = _built(engine, lambda: _load(engine, network, name, weights_id, dim, cache_dir, threads, preprocessing))

    def torch_reference(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return network.eval()(torch.from_numpy(images)).numpy()

    return _checked(built, torch_reference, "torch", threads, started)


def build_file_engine(
    engine: str, model: bytes, name: str, weights_id: str, dim: int, threads: int = 0,
    preprocessing: Preprocessing = IMAGENET,
) -> EmbeddingEngine:
    """``engine`` running the ONNX model file ``model`` as it is (OpenVINO: whole, in float32), checked
    against ONNX Runtime running it without graph optimisations; EngineFailure says why it cannot."""
    started = time.perf_counter()

    def load() -> ExportedEngine:
        if engine == "onnxruntime":
            from imgwatch.embedding.engines.onnxruntime_engine import OnnxRuntimeEngine

            return OnnxRuntimeEngine(model, name, weights_id, dim, threads, preprocessing)
        from imgwatch.embedding.engines.openvino_engine import OpenVinoEngine

        return OpenVinoEngine(model, None, name, weights_id, dim, threads, preprocessing)

    built = _built(engine, load)
    from imgwatch.embedding.engines.onnxruntime_engine import OnnxRuntimeEngine  # the reference: onnxruntime is needed

    reference = _built("onnxruntime", lambda: OnnxRuntimeEngine(model, name, weights_id, dim, threads, preprocessing,
                                                                optimised=False))
    return _checked(built, reference.features, "onnxruntime without graph optimisations", threads, started)


def _built(engine: str, load: Callable[[], ExportedEngine]) -> ExportedEngine:
    """What ``load`` builds, its failures as EngineFailure."""
    if engine not in EXPORTED_ENGINES:
        raise EngineFailure(f"unknown engine {engine!r}; expected one of {', '.join(EXPORTED_ENGINES)}")
    try:
        return load()
    except ImportError as exc:
        raise EngineFailure(f"the {engine} package is not installed ({exc})") from exc
    except EngineFailure:
        raise
    except Exception as exc:  # noqa: BLE001 - the runtime's own errors, whatever their type
        raise EngineFailure(f"{engine} could not load the model ({type(exc).__name__}: {exc})") from exc


def _checked(built: ExportedEngine, reference: Callable[[np.ndarray], np.ndarray], reference_name: str,
             threads: int, started: float) -> ExportedEngine:
    """``built``, once it agrees with ``reference`` on probe images (EngineFailure otherwise)."""
    cosine = _agreement_with_reference(built, reference)
    if not cosine >= built.min_cosine:  # "not >=": a NaN embedding fails too
        raise EngineFailure(f"{built.engine} disagrees with {reference_name} "
                            f"(embedding cosine {cosine:.6f} < {built.min_cosine})")
    _log.info("engine_ready", engine=built.engine, model=built.identity, threads=threads or "default",
              precision=built.precision, reference=reference_name, cosine_vs_reference=round(cosine, 7),
              seconds=round(time.perf_counter() - started, 2))
    return built


def _load(
    engine: str, network: torch.nn.Module, name: str, weights_id: str, dim: int, cache_dir: Path | None,
    threads: int, preprocessing: Preprocessing,
) -> ExportedEngine:
    """The engine object; the exported files come from (or go to) the cache."""
    input_shape = preprocessing.input_shape
    if engine == "onnxruntime":
        from imgwatch.embedding.engines.onnxruntime_engine import OnnxRuntimeEngine

        exported = onnx_model(network, name, weights_id, cache_dir, input_shape)
        return OnnxRuntimeEngine(exported, name, weights_id, dim, threads, preprocessing)
    from imgwatch.embedding.engines.openvino_engine import OpenVinoEngine, split_network

    if isinstance(network, torch.jit.ScriptModule):  # a model file: its parts are not known, so it runs whole
        whole = onnx_model(network, name, weights_id, cache_dir, input_shape)
        return OpenVinoEngine(whole, None, name, weights_id, dim, threads, preprocessing)
    first, second = split_network(network)
    with torch.inference_mode():
        middle_shape = tuple(first(torch.zeros(1, *input_shape)).shape[1:])
    return OpenVinoEngine(
        onnx_model(first, f"{name}.float32-part", weights_id, cache_dir, input_shape),
        onnx_model(second, f"{name}.bfloat16-part", weights_id, cache_dir, input_shape=middle_shape),
        name, weights_id, dim, threads, preprocessing,
    )


def _agreement_with_reference(engine: ExportedEngine, reference: Callable[[np.ndarray], np.ndarray]) -> float:
    """The lowest cosine between the engine's and the reference's embeddings of two probe images.

    Catches what a checksum cannot: an exporter or runtime that computes something else.
    """
    generator = torch.Generator().manual_seed(_PROBE_SEED)
    probe = torch.randn(2, *engine.preprocessing.input_shape, generator=generator)
    try:
        expected = unit_rows(reference(probe.numpy()))
        got = engine.embed(probe)
        return float(np.min(np.sum(expected * got, axis=1)))
    except Exception as exc:  # noqa: BLE001 - a runtime that loads but cannot run is no engine
        raise EngineFailure(f"{engine.engine} failed on a probe batch ({type(exc).__name__}: {exc})") from exc
