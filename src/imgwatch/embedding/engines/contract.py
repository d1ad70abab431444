"""What every inference engine offers the Embedder: the surface of torch's EmbeddingModel."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from imgwatch.embedding.preprocessing import IMAGENET, Preprocessing

# An engine counts as exact when each embedding has at least this cosine with torch's.
EXACT_COSINE = 0.9999
# The bar for an engine that computes part of the network in lower precision: a resized
# copy of a photo scores ~0.99-0.999 with it, different photos 0.8-0.98 with a trained model.
MIXED_PRECISION_COSINE = 0.999


class EmbeddingEngine(Protocol):
    """Images in, unit vectors out (2048-d for ResNet50): EmbeddingModel (torch) and every exported engine."""

    name: str  # the network, "resnet50", or a model file's kind: part of the identity
    weights_id: str
    dim: int
    preprocessing: Preprocessing  # what its input must be: every decode path reads it from here
    device: torch.device
    engine: str  # what runs it: "torch", "onnxruntime"; not part of the identity

    @property
    def identity(self) -> str: ...

    def embed(self, batch: torch.Tensor) -> np.ndarray: ...


class EngineFailure(Exception):
    """An engine could not be built (package missing, export or loading failed); ``str`` says why."""


def check_batch(batch: torch.Tensor) -> None:
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(f"expected a (n, 3, H, W) batch, got shape {tuple(batch.shape)}")


def unit_rows(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in float32, as torch.nn.functional.normalize does (same eps)."""
    features = features.astype(np.float32, copy=False)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, np.float32(1e-12))


class ExportedEngine:
    """What the exported engines share; each overrides one hook, :meth:`_features`."""

    engine = ""
    precision = "float32"
    min_cosine = EXACT_COSINE  # selection's load-time check holds the engine to this

    def __init__(self, name: str, weights_id: str, dim: int, preprocessing: Preprocessing = IMAGENET) -> None:
        self.name = name
        self.weights_id = weights_id
        self.dim = dim
        self.preprocessing = preprocessing
        self.device = torch.device("cpu")

    @property
    def identity(self) -> str:
        # The reference's vector space: selection's load-time check proves the engine computes it.
        return f"{self.name}/{self.weights_id}"

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        """(n, 3, size, size) normalised images -> (n, dim) float32 rows of unit length."""
        check_batch(batch)
        if batch.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return unit_rows(self.features(batch.detach().cpu().numpy()))

    def features(self, images: np.ndarray) -> np.ndarray:
        """The network's raw (n, dim) outputs for a float32 (n, 3, H, W) array: what a reference answers."""
        return self._features(np.ascontiguousarray(images, dtype=np.float32))

    def _features(self, images: np.ndarray) -> np.ndarray:
        """The network's (n, dim) outputs for a contiguous float32 (n, 3, H, W) array."""
        raise NotImplementedError
