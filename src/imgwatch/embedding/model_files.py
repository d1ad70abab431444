"""Loading any model setting (:func:`load_chosen_model`: ResNet50 with its weights, or a model file), and
model files in embedding.model: TorchScript (torch.jit.load) or ONNX, fed by the preprocessing their
[embedding.preprocess] declares, and refused at load unless they give the declared dimension.

A TorchScript file runs in torch (the reference, and the engine on a GPU) or, on a CPU, exported
to ONNX like ResNet50 (engines/onnx_cache.py): if the export fails, "auto" falls back to torch with
one warning. An ONNX file has no torch form: ONNX Runtime (or OpenVINO) runs it as it is, checked
against ONNX Runtime running it without graph optimisations (engines/selection.py).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from imgwatch.embedding.engines.contract import EmbeddingEngine
from imgwatch.embedding.engines.selection import build_engine, build_file_engine
from imgwatch.embedding.identity import MODEL_NAME, ChosenModel, configured_model, model_file_identity, model_file_kind
from imgwatch.embedding.model import EmbeddingModel, engines_for, first_engine_that_loads, inference_device, load_model
from imgwatch.errors import EngineUnavailable, ModelFileUnavailable

if TYPE_CHECKING:
    from imgwatch.config import Config

_CHECK_BATCH = 2  # images in the load-time check: a file exported for batches of one only is refused there


def load_chosen_model(config: Config, chosen: ChosenModel | None = None, threads: int = 0) -> EmbeddingEngine:
    """The model ``chosen`` (default: the one ``config`` sets, identity.configured_model) on ``config``'s
    device and engine, exported engines cached in its data dir: ResNet50 with its weights, or a model
    file with its declared preprocessing and dimension (checked here). The one loader of a model
    setting: workers, queries and evaluation call it after choosing (identity.choose_weights).
    ``threads``: intra-op threads per embed call for an exported engine (0: all cores).
    """
    chosen = chosen or configured_model(config)
    embedding, cache_dir = config.embedding, config.data_dir.engine_cache
    if chosen.model == MODEL_NAME:
        return load_model(chosen.weights, embedding.device, chosen.seed, embedding.engine, cache_dir, threads)
    return load_model_file(chosen, embedding.device, embedding.engine, cache_dir, threads)


def load_model_file(chosen: ChosenModel, device: str, engine: str, cache_dir: Path | None,
                    threads: int = 0) -> EmbeddingEngine:
    """The model file ``chosen.model`` on ``engine`` (see load_chosen_model)."""
    path, preprocessing = chosen.model, chosen.preprocessing
    try:
        blob = Path(path).read_bytes()
    except OSError as exc:
        raise ModelFileUnavailable(f"cannot read the model file {path} (embedding.model): {exc.strerror or exc}; "
                                   "fix the path, or set embedding.model = \"resnet50\"") from None
    kind = model_file_kind(path)
    # The identity of the bytes read, not of those hashed before: the store checks it once more.
    name, weights_id = model_file_identity(str(kind), hashlib.sha256(blob).hexdigest(), preprocessing).split("/", 1)
    if kind == "onnx":
        if engine == "torch":
            raise EngineUnavailable(f"embedding.engine = 'torch' cannot run the ONNX model file {path}: set "
                                    'embedding.engine = "auto", "onnxruntime" or "openvino", or use a TorchScript file')
        if device == "cuda" or device.startswith("cuda:"):
            raise EngineUnavailable(f"the ONNX model file {path} runs on the CPU (ONNX Runtime or OpenVINO), but "
                                    f"embedding.device = {device!r}: set it to \"auto\" or \"cpu\", or use a "
                                    "TorchScript file on the GPU")
        _check_output(_onnx_reference(blob, path), chosen)
        candidates = ["onnxruntime"] if engine == "auto" else engines_for(engine, torch.device("cpu"))
        return first_engine_that_loads(
            engine, candidates,
            lambda wanted: build_file_engine(wanted, blob, name, weights_id, chosen.dim, threads, preprocessing),
            None)
    network = _torchscript(blob, path)
    target = inference_device(device, engine)

    def run(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return network(torch.from_numpy(images)).numpy()

    _check_output(run, chosen)
    # OpenVINO leads "auto" for ResNet50 only for its bfloat16 part; a model file runs whole in float32.
    candidates = ["onnxruntime", "torch"] if engine == "auto" and target.type == "cpu" else engines_for(engine, target)
    return first_engine_that_loads(
        engine, candidates,
        lambda wanted: build_engine(wanted, network, name, weights_id, chosen.dim, cache_dir, threads, preprocessing),
        lambda: EmbeddingModel(network, weights_id, target, name, chosen.dim, preprocessing))


def _torchscript(blob: bytes, path: str) -> torch.jit.ScriptModule:
    try:
        with warnings.catch_warnings():  # torch deprecates TorchScript; the files people have are TorchScript
            warnings.simplefilter("ignore", FutureWarning)
            network = torch.jit.load(io.BytesIO(blob), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any failure means the same: not a TorchScript file
        raise ModelFileUnavailable(
            f"the model file {path} is not TorchScript that torch.jit.load reads ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); save the model with torch.jit.script or "
            "torch.jit.trace (a ResNet50 state_dict goes in embedding.weights instead)"
        ) from None
    return network.eval()


def _onnx_reference(blob: bytes, path: str) -> Callable[[np.ndarray], np.ndarray]:
    """ONNX Runtime running the file as written: what the dimension check asks."""
    try:
        from imgwatch.embedding.engines.onnxruntime_engine import OnnxRuntimeEngine
    except ImportError as exc:
        raise EngineUnavailable(f"the ONNX model file {path} needs ONNX Runtime ({exc}): "
                                "pip install onnxruntime onnx, or use a TorchScript file") from None
    try:
        session = OnnxRuntimeEngine(blob, "onnx", "check", 0, threads=1, optimised=False)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's own errors, whatever their type
        raise ModelFileUnavailable(f"the model file {path} is not an ONNX model that ONNX Runtime loads "
                                   f"({type(exc).__name__}: {exc})") from None
    return session.features


def _check_output(run: Callable[[np.ndarray], np.ndarray], chosen: ChosenModel) -> None:
    """Refuse, in one line naming the file and the setting, a model whose output is not (batch, dim)."""
    shape = (_CHECK_BATCH, *chosen.preprocessing.input_shape)
    try:
        output = np.asarray(run(np.zeros(shape, dtype=np.float32)))
    except Exception as exc:  # noqa: BLE001 - whatever the model raises, its input is the likely cause
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileUnavailable(
            f"the model file {chosen.model} fails on a batch of {_CHECK_BATCH} inputs of {shape[1:]} ({first_line}): "
            "check embedding.preprocess.size, and that the file takes a batch of any size"
        ) from None
    if output.ndim != 2 or output.shape[0] != _CHECK_BATCH:
        raise ModelFileUnavailable(
            f"the model file {chosen.model} gives outputs of shape {tuple(output.shape)} for {_CHECK_BATCH} images, "
            "not one vector per image: export the model with its embedding as the output"
        )
    if output.shape[1] != chosen.dim:
        raise ModelFileUnavailable(
            f"the model file {chosen.model} gives {output.shape[1]}-dimensional embeddings, but "
            f"embedding.preprocess.dim = {chosen.dim}: set embedding.preprocess.dim = {output.shape[1]}"
        )
