"""ONNX Runtime on the CPU: 1.6-1.8x torch eager for ResNet50 on a 2-core VM (bench/engines.py); and the
reference for an ONNX model file (run as written, without graph optimisations)."""

from __future__ import annotations

import numpy as np
import onnxruntime

from imgwatch.embedding.engines.contract import ExportedEngine
from imgwatch.embedding.preprocessing import IMAGENET, Preprocessing

ENGINE_NAME = "onnxruntime"


class OnnxRuntimeEngine(ExportedEngine):
    """One inference session, shared by every stream.

    ``threads`` is each call's intra-op thread count (0: ONNX Runtime's default, every core).
    Concurrent ``embed`` calls run side by side on their callers' threads, which is how the
    Embedder's streams run: one session with one thread per call embeds as fast as two
    sessions and keeps one copy of the weights. ``optimised`` False runs the graph as written (no
    fusing or constant folding): an ONNX model file's reference, which the optimised engine must match.
    """

    engine = ENGINE_NAME

    def __init__(self, model: bytes, name: str, weights_id: str, dim: int, threads: int = 0,
                 preprocessing: Preprocessing = IMAGENET, optimised: bool = True) -> None:
        super().__init__(name, weights_id, dim, preprocessing)
        options = onnxruntime.SessionOptions()
        if not optimised:
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1  # ResNet50 is one chain of layers: nothing to run beside it
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only: its warnings are not the user's business
        self._session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        # An exported network's input is onnx_cache.INPUT_NAME; a model file's is whatever its author named it.
        self._input = self._session.get_inputs()[0].name
        self._output = self._session.get_outputs()[0].name

    def _features(self, images: np.ndarray) -> np.ndarray:
        (features,) = self._session.run([self._output], {self._input: images})
        return features
