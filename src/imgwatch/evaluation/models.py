"""The models `imgwatch eval` compares: the ONE place that turns a model setting into a loaded
engine, chosen and loaded as the workers and a search choose and load theirs
(identity.choose_weights, then load_chosen_model on the configured device and engine)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from imgwatch.embedding.identity import (
    MODEL_KEY,
    MODEL_NAME,
    WEIGHTS_KEY,
    configured_model,
    model_file_kind,
    query_weights,
)
from imgwatch.errors import ConfigError

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
    """The model for ``setting`` (see :func:`config_for`) or, for None, the model the store's workers
    embed with (without a store: the configured one), on the configured device and engine.
    ``recorded``: the store's model identity and weights or model file, None without a store.
    Refusals (a store file that moved, configured weights of another model than the store's) come
    before anything loads."""
    from imgwatch.embedding import inference_device, load_chosen_model, plan_inference  # torch: after the checks

    if setting is None:
        recorded_model, recorded_file = recorded if recorded is not None else (None, None)
        chosen = query_weights(config, recorded_model, recorded_file, WHERE)
        configured = config.embedding.model if config.embedding.model != MODEL_NAME else config.embedding.weights
        label = STORE_MODEL if recorded is not None else configured
    else:
        chosen = configured_model(config_for(config, setting))
        label = setting
    embedding = config.embedding
    plan = plan_inference(inference_device(embedding.device, embedding.engine), embedding.batch_size,
                          embedding.streams, embedding.threads, decode_threads=embedding.decode_threads)
    engine = load_chosen_model(config, chosen, threads=plan.threads)
    return EvalModel(label, engine, plan, recorded is not None and engine.identity == recorded[0])


def config_for(config: Config, setting: str) -> Config:
    """``config`` set to the model ``--model setting`` names; device, engine and threads stay its own.

    - imagenet, random or a weights file: ResNet50 with those weights, as `--weights` sets them;
    - a config file (``*.toml``): the model its [embedding] section sets, checked as any config is:
      a model file's preprocessing and dim can only be declared there, beside embedding.model.
    """
    if setting.lower().endswith(".toml"):
        from imgwatch.config import load_config

        described = load_config(setting, environ={}).embedding
        embedding = dataclasses.replace(config.embedding, model=described.model, weights=described.weights,
                                        seed=described.seed, preprocess=described.preprocess)
        named = {key: f"--model {setting}" for key in (MODEL_KEY, WEIGHTS_KEY)}
        return dataclasses.replace(config, embedding=embedding, sources={**config.sources, **named})
    if setting.lower().endswith((".onnx", ".torchscript")) and model_file_kind(setting) is not None:
        raise ConfigError(f"--model {setting}: a model file needs its preprocessing and dim, which a config file "
                          "declares: write one with [embedding] model = \"...\" and [embedding.preprocess] "
                          "(docs/models.md) and pass --model THAT.toml")
    embedding = dataclasses.replace(config.embedding, model=MODEL_NAME, weights=setting)
    return dataclasses.replace(config, embedding=embedding, sources={**config.sources, WEIGHTS_KEY: "--model"})
