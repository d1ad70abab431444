"""Image embedding: decode files and map them to unit-length vectors (ResNet50, or a model file).

The names below load on first use: decoding and the model need torch (seconds to import),
while ``imgwatch.embedding.identity`` (hashing only) is imported alone by a query that
checks the store's model before it loads one.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from imgwatch.embedding.model_files import load_chosen_model
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
    "load_chosen_model",
    "load_model",
    "plan_inference",
    "read_file",
    "reference_preprocess",
]

# Where the names in __all__ are defined, searched in this order on first use.
_HOMES = ("imgwatch.embedding.decode", "imgwatch.embedding.embedder", "imgwatch.embedding.engines.contract",
          "imgwatch.embedding.model", "imgwatch.embedding.model_files", "imgwatch.errors")


def __getattr__(name: str) -> Any:
    if name in __all__:
        for home in _HOMES:
            module = importlib.import_module(home)
            if hasattr(module, name):
                globals()[name] = value = getattr(module, name)  # found once
                return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
