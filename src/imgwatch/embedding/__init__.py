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
    EmbeddingModel,
    WeightsUnavailable,
    load_model,
)

__all__ = [
    "EMBEDDING_DIM",
    "MODEL_NAME",
    "DecodeError",
    "EmbedResult",
    "Embedded",
    "Embedder",
    "EmbeddingModel",
    "Failed",
    "FileFacts",
    "Missing",
    "Unchanged",
    "WeightsUnavailable",
    "decode_for_model",
    "load_model",
    "read_file",
    "reference_preprocess",
]
