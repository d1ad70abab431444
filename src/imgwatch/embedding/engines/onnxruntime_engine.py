"""ONNX Runtime on the CPU: 1.6-1.8x torch eager for ResNet50 on a 2-core VM (bench/engines.py)."""

from __future__ import annotations

import numpy as np
import onnxruntime

from imgwatch.embedding.engines.contract import ExportedEngine
from imgwatch.embedding.engines.onnx_cache import INPUT_NAME

ENGINE_NAME = "onnxruntime"


class OnnxRuntimeEngine(ExportedEngine):
    """One inference session, shared by every stream.

    ``threads`` is each call's intra-op thread count (0: ONNX Runtime's default, every core).
    Concurrent ``embed`` calls run side by side on their callers' threads, which is how the
    Embedder's streams run: one session with one thread per call embeds as fast as two
    sessions and keeps one copy of the weights.
    """

    engine = ENGINE_NAME

    def __init__(self, model: bytes, name: str, weights_id: str, dim: int, threads: int = 0) -> None:
        super().__init__(name, weights_id, dim)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1  # ResNet50 is one chain of layers: nothing to run beside it
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only: its warnings are not the user's business
        self._session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def _features(self, images: np.ndarray) -> np.ndarray:
        (features,) = self._session.run(None, {INPUT_NAME: images})
        return features
