"""The models `imgwatch eval` compares: the ONE place that turns a model setting into a loaded
engine, the same way the workers and a search load theirs (weights, device, engine)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from imgwatch.embedding.identity import query_weights

if TYPE_CHECKING:
    from imgwatch.config import Config
    from imgwatch.embedding import EmbeddingEngine, InferencePlan

WHERE = "run `imgwatch eval` again"


@dataclass(frozen=True)
class EvalModel:
    setting: str  # as given to --model, or the store's model
    engine: EmbeddingEngine
    plan: InferencePlan  # batches, streams and threads, as a worker plans them
    in_store_space: bool  # its vectors are the store's: searched with the store's index

    @property
    def identity(self) -> str:
        return self.engine.identity


def load_eval_model(config: Config, setting: str | None, recorded: tuple[str, tuple[str, str] | None] | None
                    ) -> EvalModel:
    """The model for ``setting`` (what embedding.weights takes: imagenet, random or a weights file;
    None: the model the store's workers embed with, or the configured one without a store) on the
    configured device and engine. ``recorded``: the store's model identity and weights file, None
    without a store. Refusals (a store weights file that moved, configured weights of another model)
    come before anything loads."""
    from imgwatch.embedding import inference_device, load_model, plan_inference  # torch: once the checks pass

    embedding = config.embedding
    if setting is None:
        recorded_model, recorded_file = recorded if recorded is not None else (None, None)
        chosen = query_weights(config, recorded_model, recorded_file, WHERE)
        weights, seed, label = chosen.weights, chosen.seed, "the store's model" if recorded else embedding.weights
    else:
        weights = setting if setting in ("imagenet", "random") else os.path.abspath(os.path.expanduser(setting))
        seed, label = embedding.seed, setting
    plan = plan_inference(inference_device(embedding.device, embedding.engine), embedding.batch_size,
                          embedding.streams, embedding.threads, decode_threads=embedding.decode_threads)
    engine = load_model(weights, embedding.device, seed, embedding.engine, config.data_dir.engine_cache,
                        threads=plan.threads)
    return EvalModel(label, engine, plan, recorded is not None and engine.identity == recorded[0])
