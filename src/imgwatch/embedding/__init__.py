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
from imgwatch.embedding.model import (
    EMBEDDING_DIM,
    MODEL_NAME,
    DeviceUnavailable,
    EmbeddingModel,
    InferencePlan,
    WeightsUnavailable,
    load_model,
    plan_inference,
)

__all__ = [
    "EMBEDDING_DIM",
    "MODEL_NAME",
    "DecodeError",
    "DeviceUnavailable",
    "EmbedResult",
    "Embedded",
    "Embedder",
    "EmbeddingModel",
    "Failed",
    "InferencePlan",
    "FileFacts",
    "Missing",
    "Unchanged",
    "WeightsUnavailable",
    "decode_for_model",
    "load_model",
    "plan_inference",
    "read_file",
    "reference_preprocess",
]
