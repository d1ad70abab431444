"""Image embedding: decode files and map them to unit-length ResNet50 vectors."""

from imgwatch.embedding.decode import (
    DecodeError,
    FileFacts,
    decode_for_model,
    read_file,
    reference_preprocess,
)
from imgwatch.embedding.embedder import (
    Embedded,
    Embedder,
    EmbedResult,
    Failed,
    Missing,
    Unchanged,
)
from imgwatch.embedding.engines.contract import EmbeddingEngine
from imgwatch.embedding.model import (
    EMBEDDING_DIM,
    MODEL_NAME,
    DeviceUnavailable,
    EmbeddingModel,
    InferencePlan,
    WeightsUnavailable,
    inference_device,
    load_model,
    plan_inference,
)
from imgwatch.errors import EngineUnavailable

__all__ = [
    "EMBEDDING_DIM",
    "MODEL_NAME",
    "DecodeError",
    "DeviceUnavailable",
    "EmbedResult",
    "Embedded",
    "Embedder",
    "EmbeddingEngine",
    "EmbeddingModel",
    "EngineUnavailable",
    "Failed",
    "InferencePlan",
    "FileFacts",
    "Missing",
    "Unchanged",
    "WeightsUnavailable",
    "decode_for_model",
    "inference_device",
    "load_model",
    "plan_inference",
    "read_file",
    "reference_preprocess",
]
