"""Model identities: which vector space a model setting gives, known before loading it;
and which model a process loads for a store.

An identity is ``resnet50/<weights id>`` for ResNet50, or ``<kind>/file-<SHA-256 prefix>-preprocess-
<preprocessing hash>`` for a model file in ``embedding.model`` (kind: torchscript or onnx); the store
records the one its workers embed with and, for a weights or model file, where that file was and its
SHA-256. The rule for every process that loads the model (workers, CLI search, the web page,
evaluation) is :func:`choose_weights`: a configured model file; else the configured weights when
``embedding.weights`` is set, otherwise the store's own. A query must embed in the store's space, so
:func:`query_weights` also refuses, before loading anything, a configured model or weights that give
another model, saying which setting gives the store's.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from imgwatch.embedding.preprocessing import IMAGENET, Preprocessing
from imgwatch.errors import ModelFileUnavailable, ModelMismatchError, WeightsUnavailable

if TYPE_CHECKING:
    from imgwatch.config import Config, PreprocessConfig

MODEL_NAME = "resnet50"
EMBEDDING_DIM = 2048  # ResNet50's pooled features
PRETRAINED_ID = "IMAGENET1K_V2"  # torchvision's ResNet50_Weights.IMAGENET1K_V2
WEIGHTS_KEY = "embedding.weights"
MODEL_KEY = "embedding.model"
# A model file's kind, by how its name ends: TorchScript (torch.jit.load) or ONNX.
MODEL_FILE_KINDS = {".pt": "torchscript", ".pth": "torchscript", ".torchscript": "torchscript", ".onnx": "onnx"}
_RANDOM_ID = re.compile(r"random-seed(\d+)")
_FILE_ID = re.compile(r"file-([0-9a-f]+)")
_MODEL_FILE_ID = re.compile(r"(\w+)/file-([0-9a-f]+)-preprocess-([0-9a-f]+)")


def model_file_kind(path: str) -> str | None:
    """torchscript or onnx, from the file name's ending; None for any other name."""
    return next((kind for ending, kind in MODEL_FILE_KINDS.items() if path.lower().endswith(ending)), None)


def model_file_identity(kind: str, sha256_hex: str, preprocessing: Preprocessing) -> str:
    """A model file's identity: its kind, its content and the preprocessing that feeds it."""
    return f"{kind}/{file_weights_id(sha256_hex)}-preprocess-{preprocessing.fingerprint}"


def preprocessing_of(preprocess: PreprocessConfig) -> Preprocessing:
    """The [embedding.preprocess] settings as the one value every decode path takes."""
    mean, std = tuple(preprocess.mean), tuple(preprocess.std)
    return Preprocessing(preprocess.policy, preprocess.resize, preprocess.size, mean, std)  # type: ignore[arg-type]


def random_weights_id(seed: int) -> str:
    return f"random-seed{seed}"


def file_weights_id(sha256_hex: str) -> str:
    return f"file-{sha256_hex[:12]}"


def weights_file(weights: str) -> tuple[str, str] | None:
    """A weights-file setting as a store records it: (absolute path, SHA-256 of its content);
    None for imagenet, random, or a file that cannot be read (loading it then says why)."""
    if weights in ("imagenet", "random"):
        return None
    path = os.path.abspath(os.path.expanduser(weights))
    try:
        return path, _sha256_of(path)
    except OSError:
        return None


def weights_identity(weights: str, seed: int = 0) -> str | None:
    """The identity ``load_model(weights, seed=seed)`` gives; None for a file that cannot be
    read (loading it then says why). A weights file is hashed, not loaded."""
    if weights == "imagenet":
        return f"{MODEL_NAME}/{PRETRAINED_ID}"
    if weights == "random":
        return f"{MODEL_NAME}/{random_weights_id(seed)}"
    file = weights_file(weights)
    return None if file is None else f"{MODEL_NAME}/{file_weights_id(file[1])}"


def _sha256_of(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@dataclass(frozen=True)
class ChosenModel:
    """The model a process loads (model.load_chosen_model): ResNet50 with ``weights`` and ``seed``, or
    the model file ``model`` fed by ``preprocessing``; it gives ``identity`` and ``dim``-d vectors."""

    weights: str  # ResNet50's: imagenet, random, or a weights file's absolute path
    seed: int
    identity: str | None  # None: a weights file that cannot be read (loading it says why)
    file: tuple[str, str] | None  # a weights or model file's (absolute path, SHA-256): the store records it
    model: str = MODEL_NAME  # or a model file's absolute path
    preprocessing: Preprocessing = IMAGENET
    dim: int = EMBEDDING_DIM


def configured_model(config: Config) -> ChosenModel:
    """The model ``config`` sets, regardless of any store (e.g. to evaluate it): see choose_weights."""
    return choose_weights(config, None, None, "start imgwatch again")


def store_model_choice(config: Config, identity: str, recorded_file: tuple[str, str] | None,
                       where: str) -> ChosenModel:
    """The model that gives ``identity``, as the store records it (for a weights file: where it was
    and its SHA-256), whatever ``config`` sets: a worker follows the store's spaces while the model
    changes. ModelMismatchError when no setting known here gives it (e.g. a model file whose
    preprocessing only another config declares), saying how to ``where``."""
    import dataclasses

    chosen = choose_weights(config, identity, recorded_file, where)
    if chosen.identity != identity and identity.startswith(f"{MODEL_NAME}/"):  # ResNet50: the store's weights
        sources = {key: source for key, source in config.sources.items() if key not in (WEIGHTS_KEY, MODEL_KEY)}
        embedding = dataclasses.replace(config.embedding, model=MODEL_NAME)
        chosen = choose_weights(dataclasses.replace(config, embedding=embedding, sources=sources), identity,
                                recorded_file, where)
    if chosen.identity != identity:
        raise ModelMismatchError(f"this worker cannot load {identity}, the store's model: "
                                 f"{where} with {weights_setting(identity, recorded_file)}")
    return chosen


def choose_weights(config: Config, recorded_model: str | None, recorded_file: tuple[str, str] | None,
                   where: str) -> ChosenModel:
    """The model to load for a store whose workers embed with ``recorded_model`` (None:
    nothing recorded yet) and, for a weights file, recorded it at ``recorded_file`` (path, SHA-256).

    A model file in embedding.model: that file (ModelFileUnavailable when it cannot be read).
    When embedding.weights is set (config file, environment, --weights): those. Otherwise the
    store's own: its weights file, checked against its SHA-256 (WeightsUnavailable when it
    moved or changed, saying how to ``where``, e.g. "search again"), random weights of its seed,
    the ImageNet weights; or the default where the store says nothing (none recorded yet, or a
    store from before imgwatch recorded its weights file).
    """
    embedding = config.embedding
    if embedding.model != MODEL_NAME:
        return _model_file(config)
    weights_id = (recorded_model or "").removeprefix(f"{MODEL_NAME}/")
    if WEIGHTS_KEY in config.sources or recorded_model is None:
        weights, seed = embedding.weights, embedding.seed
    elif weights_id == PRETRAINED_ID:
        weights, seed = "imagenet", embedding.seed
    elif seed_of := _RANDOM_ID.fullmatch(weights_id):
        weights, seed = "random", int(seed_of[1])
    elif _FILE_ID.fullmatch(weights_id) and recorded_file is not None:
        return _recorded_file(recorded_model, recorded_file, embedding.seed, where)
    else:
        weights, seed = embedding.weights, embedding.seed
    file = weights_file(weights)  # hashed once: for the identity and for the store to record
    if file is not None:
        return ChosenModel(file[0], seed, f"{MODEL_NAME}/{file_weights_id(file[1])}", file)
    return ChosenModel(weights, seed, weights_identity(weights, seed), None)


def _model_file(config: Config) -> ChosenModel:
    """The configured model file, hashed (not loaded), with its declared preprocessing and dimension."""
    embedding = config.embedding
    path = os.path.abspath(os.path.expanduser(embedding.model))
    kind = model_file_kind(path)
    try:
        sha256 = _sha256_of(path)
    except OSError as exc:
        raise ModelFileUnavailable(
            f"cannot read the model file {path} (embedding.model, from {config.sources.get(MODEL_KEY, 'defaults')}): "
            f"{exc.strerror or exc}; fix the path, or set embedding.model = \"{MODEL_NAME}\""
        ) from None
    if kind is None:  # the configuration refuses such a name; this guards other callers
        raise ModelFileUnavailable(f"{path} is not a model file imgwatch reads: its name should end in "
                                   f"{', '.join(MODEL_FILE_KINDS)}")
    preprocessing = preprocessing_of(embedding.preprocess)
    return ChosenModel(embedding.weights, embedding.seed, model_file_identity(kind, sha256, preprocessing),
                       (path, sha256), path, preprocessing, embedding.preprocess.dim)


def _recorded_file(recorded_model: str, recorded_file: tuple[str, str], seed: int, where: str) -> ChosenModel:
    """The store's weights file, if it is still where it was and as it was."""
    path, sha256 = recorded_file
    try:
        found = _sha256_of(path)
    except FileNotFoundError:
        problem = "no longer exists"
    except OSError as exc:
        problem = f"cannot be read ({exc.strerror or exc})"
    else:
        if found == sha256:
            return ChosenModel(path, seed, recorded_model, recorded_file)
        problem = f"has changed since (its SHA-256 now starts with {found[:12]})"
    raise WeightsUnavailable(
        f"the store holds embeddings from {recorded_model}, made with the weights file {path}, which {problem}: "
        f"put the file back, or {where} with {weights_setting(recorded_model)}"
    )


def query_weights(config: Config, recorded_model: str | None, recorded_file: tuple[str, str] | None,
                  where: str) -> ChosenModel:
    """:func:`choose_weights` for a query (CLI search, the web page), which must embed in the
    store's space: ModelMismatchError, before anything loads, when configured weights give
    another model."""
    chosen = choose_weights(config, recorded_model, recorded_file, where)
    check_query_model(recorded_model, chosen.identity, where, recorded_file)
    return chosen


def weights_setting(identity: str, recorded_file: tuple[str, str] | None = None) -> str:
    """How to configure the weights or model file that give ``identity`` (for error messages); a
    weights or model file is named by ``recorded_file``, where the store recorded it, if given."""
    if model_file := _MODEL_FILE_ID.fullmatch(identity):
        kind, digest, preprocessing = model_file.groups()
        named = (f'embedding.model = "{recorded_file[0]}", the store\'s {kind} model file,' if recorded_file else
                 f"embedding.model = the {kind} model file the workers use (its SHA-256 starts with {digest}: "
                 "check with sha256sum)")
        return f"{named} and the [embedding.preprocess] the workers use (its hash: {preprocessing})"
    weights_id = identity.removeprefix(f"{MODEL_NAME}/")
    if weights_id == PRETRAINED_ID:
        return "--weights imagenet (embedding.weights = \"imagenet\")"
    if seed := _RANDOM_ID.fullmatch(weights_id):
        return f"--weights random and embedding.seed = {seed[1]}" + (" (the default)" if seed[1] == "0" else "")
    if digest := _FILE_ID.fullmatch(weights_id):
        if recorded_file is not None:
            return f"--weights {recorded_file[0]}, the store's weights file (or with no weights setting at all)"
        return (f"--weights PATH, the weights file the workers use (its SHA-256 starts with {digest[1]}: "
                "check with sha256sum)")
    return f"the weights the workers use ({identity})"


def check_query_model(recorded: str | None, identity: str | None, where: str,
                      recorded_file: tuple[str, str] | None = None) -> None:
    """Raise ModelMismatchError when a query whose model has ``identity`` (see weights_identity)
    would embed in another space than the store's ``recorded`` one; ``where`` says how to
    run the query again (e.g. "start `imgwatch web`")."""
    if recorded is None or identity is None or identity == recorded:
        return
    configured = "weights give" if identity.startswith(f"{MODEL_NAME}/") else "model gives"
    raise ModelMismatchError(
        f"the store holds embeddings from {recorded}, but the configured {configured} {identity}: "
        f"{where} with {weights_setting(recorded, recorded_file)}"
    )
