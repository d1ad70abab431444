"""ONNX Runtime on the CPU: 1.6-1.8x torch eager for ResNet50 on a 2-core VM (bench/engines.py)."""

from __future__ import annotations

import numpy as np
import onnxruntime
import torch

from imgwatch.embedding.engines.contract import check_batch, unit_rows
from imgwatch.embedding.engines.onnx_cache import INPUT_NAME

ENGINE_NAME = "onnxruntime"


class OnnxRuntimeEngine:
    """One inference session, shared by every stream.

    ``threads`` is each call's intra-op thread count (0: ONNX Runtime's default, every core).
    Concurrent ``embed`` calls run side by side on their callers' threads, which is how the
    Embedder's streams run: one session with one thread per call embeds as fast as two
    sessions and keeps one copy of the weights.
    """

    engine = ENGINE_NAME

    def __init__(self, model: bytes, name: str, weights_id: str, dim: int, threads: int = 0) -> None:
        self.name = name
        self.weights_id = weights_id
        self.dim = dim
        self.device = torch.device("cpu")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1  # ResNet50 is one chain of layers: nothing to run beside it
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only: its warnings are not the user's business
        self._session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    @property
    def identity(self) -> str:
        # The same vector space as torch's: the engine computes the same embeddings.
        return f"{self.name}/{self.weights_id}"

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        """(n, 3, 224, 224) normalised images -> (n, dim) float32 rows of unit length."""
        check_batch(batch)
        if batch.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        images = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        (features,) = self._session.run(None, {INPUT_NAME: images})
        return unit_rows(features)
