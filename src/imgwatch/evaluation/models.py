"""The models `imgwatch eval` compares: the ONE place that turns a model setting into a loaded
engine, chosen and loaded as the workers and a search choose and load theirs
(identity.choose_weights, then load_chosen_model on the configured device and engine)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from imgwatch.embedding.identity import MODEL_NAME, WEIGHTS_KEY, configured_model, query_weights

if TYPE_CHECKING:
    from imgwatch.config import Config
    from imgwatch.embedding import EmbeddingEngine, InferencePlan

WHERE = "run `imgwatch eval` again"
STORE_MODEL = "the store's model"


@dataclass(frozen=True)
class EvalModel:
    setting: str  # as given to --model, or STORE_MODEL
    engine: EmbeddingEngine
    plan: InferencePlan  # batches, streams and threads, as a worker plans them
    in_store_space: bool  # its vectors are the store's: searched with the store's index

    @property
    def identity(self) -> str:
        return self.engine.identity


def load_eval_model(config: Config, setting: str | None, recorded: tuple[str, tuple[str, str] | None] | None
                    ) -> EvalModel:
    """The model for ``setting`` (for now what embedding.weights takes: imagenet, random or a ResNet50
    weights file) or, for None, the model the store's workers embed with (without a store: the
    configured one), on the configured device and engine. ``recorded``: the store's model identity
    and weights or model file, None without a store. Refusals (a store file that moved, configured
    weights of another model than the store's) come before anything loads."""
    from imgwatch.embedding import inference_device, load_chosen_model, plan_inference  # torch: after the checks

    if setting is None:
        recorded_model, recorded_file = recorded if recorded is not None else (None, None)
        chosen = query_weights(config, recorded_model, recorded_file, WHERE)
        configured = config.embedding.model if config.embedding.model != MODEL_NAME else config.embedding.weights
        label = STORE_MODEL if recorded is not None else configured
    else:
        chosen = configured_model(_with_weights(config, setting))
        label = setting
    embedding = config.embedding
    plan = plan_inference(inference_device(embedding.device, embedding.engine), embedding.batch_size,
                          embedding.streams, embedding.threads, decode_threads=embedding.decode_threads)
    engine = load_chosen_model(config, chosen, threads=plan.threads)
    return EvalModel(label, engine, plan, recorded is not None and engine.identity == recorded[0])


def _with_weights(config: Config, weights: str) -> Config:
    """``config`` with ResNet50 and ``weights`` set, as `--weights` would set them."""
    embedding = dataclasses.replace(config.embedding, model=MODEL_NAME, weights=weights)
    return dataclasses.replace(config, embedding=embedding, sources={**config.sources, WEIGHTS_KEY: "--model"})
