"""Model files in embedding.model (TorchScript and ONNX), loaded by model.load_chosen_model and run by the
real Embedder on real photo files: unit rows of the declared dimension, the dimension checked at load,
each engine proven against the file's reference, one clear line for each file that cannot be used."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import structlog
import torch

from imgwatch.config import Config, load_config
from imgwatch.embedding import Embedded, Embedder, EngineUnavailable, load_chosen_model
from imgwatch.embedding.engines.contract import EXACT_COSINE
from imgwatch.embedding.identity import configured_model
from imgwatch.embedding.preprocessing import Preprocessing
from imgwatch.errors import ModelFileUnavailable
from tests.embedding.tiny_models import (
    TINY_DIM,
    tiny_net,
    write_onnx,
    write_torchscript,
    write_unexportable_torchscript,
)

pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed (pip install onnxruntime onnx)")

PHOTOS = ("astronaut", "coffee", "chelsea")


def model_config(tmp_path: Path, model: Path, engine: str = "auto", **preprocess: object) -> Config:
    values: dict[str, object] = {
        "general.data_dir": str(tmp_path / "data"), "embedding.model": str(model), "embedding.device": "cpu",
        "embedding.engine": engine, "embedding.preprocess.dim": TINY_DIM,
    }
    values.update({f"embedding.preprocess.{key}": value for key, value in preprocess.items()})
    return load_config(overrides=values, environ={})


@pytest.fixture
def photo_files(tmp_path: Path, write_photo: Callable[..., Path]) -> list[str]:
    return [str(write_photo(tmp_path / "photos" / f"{name}.jpg", name)) for name in PHOTOS]


def embedded(model: object, paths: list[str]) -> np.ndarray:
    with Embedder(model, batch_size=2) as embedder:  # type: ignore[arg-type]
        results = list(embedder.embed_files(paths))
    assert all(isinstance(result, Embedded) for result in results), results
    return np.stack([result.vector for result in results])  # type: ignore[union-attr]


@pytest.mark.parametrize(("kind", "engine"), [
    ("torchscript", "torch"), ("torchscript", "onnxruntime"), ("torchscript", "auto"),
    ("onnx", "onnxruntime"), ("onnx", "auto"),
])
def test_a_model_file_embeds_photos_as_unit_rows_of_its_declared_dimension(
    tmp_path: Path, photo_files: list[str], kind: str, engine: str,
) -> None:
    file = write_torchscript(tmp_path / "tiny.pt") if kind == "torchscript" else write_onnx(tmp_path / "tiny.onnx")
    config = model_config(tmp_path, file, engine)

    model = load_chosen_model(config)
    vectors = embedded(model, photo_files)

    assert model.identity == configured_model(config).identity  # known before loading, as the store checks it
    assert model.identity.startswith(f"{kind}/file-") and model.dim == TINY_DIM
    assert vectors.shape == (len(PHOTOS), TINY_DIM)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert float(vectors[0] @ vectors[1]) < 0.9999  # different photos, different vectors


def test_the_declared_preprocessing_feeds_the_model(tmp_path: Path, photo_files: list[str]) -> None:
    """A stretch to 96 × 96 with other statistics: the model sees exactly that input, through every decode."""
    file = write_torchscript(tmp_path / "tiny.pt")
    config = model_config(tmp_path, file, "torch", policy="stretch", size=96, mean=[0.5, 0.5, 0.5],
                          std=[0.25, 0.25, 0.25])
    model = load_chosen_model(config)
    assert model.preprocessing == Preprocessing("stretch", 256, 96, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))

    from PIL import Image

    from imgwatch.embedding.decode import reference_preprocess

    expected = tiny_net()(torch.stack([reference_preprocess(Image.open(path), model.preprocessing)
                                       for path in photo_files])).detach().numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.min(np.sum(embedded(model, photo_files) * expected, axis=1)) > 0.999


def test_a_model_whose_output_is_another_size_is_refused_naming_the_file_and_the_setting(tmp_path: Path) -> None:
    for file in (write_torchscript(tmp_path / "tiny.pt"), write_onnx(tmp_path / "tiny.onnx")):
        config = model_config(tmp_path, file)
        config.embedding.preprocess.dim = 512
        with pytest.raises(ModelFileUnavailable) as raised:
            load_chosen_model(config)
        assert str(raised.value) == (f"the model file {file} gives 64-dimensional embeddings, but "
                                     "embedding.preprocess.dim = 512: set embedding.preprocess.dim = 64")


def test_files_that_are_no_usable_model_are_refused_in_one_line(tmp_path: Path) -> None:
    state_dict = tmp_path / "resnet50.pth"
    torch.save(tiny_net().state_dict(), state_dict)  # weights, not a model file
    with pytest.raises(ModelFileUnavailable, match=r"is not TorchScript that torch.jit.load reads .*embedding.weights"):
        load_chosen_model(model_config(tmp_path, state_dict))

    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"not a protobuf")
    with pytest.raises(ModelFileUnavailable, match=r"is not an ONNX model that ONNX Runtime loads"):
        load_chosen_model(model_config(tmp_path, garbage))

    one_at_a_time = write_onnx(tmp_path / "batch1.onnx", dynamic_batch=False)
    with pytest.raises(ModelFileUnavailable, match=r"fails on a batch of 2 inputs .* takes a batch of any size"):
        load_chosen_model(model_config(tmp_path, one_at_a_time))

    with pytest.raises(EngineUnavailable, match=r"'torch' cannot run the ONNX model file"):
        load_chosen_model(model_config(tmp_path, write_onnx(tmp_path / "tiny.onnx"), "torch"))


def test_a_torchscript_file_the_exporter_cannot_take_runs_on_torch_after_one_warning(
    tmp_path: Path, photo_files: list[str],
) -> None:
    file = write_unexportable_torchscript(tmp_path / "histogram.pt")
    with structlog.testing.capture_logs() as logs:
        model = load_chosen_model(model_config(tmp_path, file, "auto"))
    assert model.engine == "torch"
    [fallback] = [entry for entry in logs if entry["event"] == "engine_fallback"]
    assert (fallback["engine"], fallback["fallback"]) == ("onnxruntime", "torch")
    assert "aten::histc" in fallback["reason"]
    assert embedded(model, photo_files).shape == (len(PHOTOS), TINY_DIM)
    with pytest.raises(EngineUnavailable, match=r"embedding.engine = 'onnxruntime' cannot be used: exporting"):
        load_chosen_model(model_config(tmp_path, file, "onnxruntime"))


def test_the_fast_engines_on_an_onnx_file_agree_with_its_reference(tmp_path: Path, photo_files: list[str]) -> None:
    """The reference of an ONNX file is ONNX Runtime running it as written (no graph optimisations)."""
    file = write_onnx(tmp_path / "tiny.onnx")
    from imgwatch.embedding.engines.onnxruntime_engine import OnnxRuntimeEngine

    reference = OnnxRuntimeEngine(file.read_bytes(), "onnx", "reference", TINY_DIM, optimised=False)
    expected = embedded(reference, photo_files)
    engines = ["onnxruntime"]
    try:
        import imgwatch.embedding.engines.openvino_engine  # noqa: F401 - whether OpenVINO is installed

        engines.append("openvino")
    except ImportError:
        pass
    with structlog.testing.capture_logs() as logs:
        for engine in engines:
            model = load_chosen_model(model_config(tmp_path, file, engine))
            assert model.engine == engine
            assert np.min(np.sum(embedded(model, photo_files) * expected, axis=1)) >= EXACT_COSINE
    ready = [entry for entry in logs if entry["event"] == "engine_ready"]
    assert [entry["engine"] for entry in ready] == engines
    assert {entry["reference"] for entry in ready} == {"onnxruntime without graph optimisations"}
    assert all(entry["cosine_vs_reference"] >= EXACT_COSINE for entry in ready)


def test_jpegs_decoded_in_batches_get_the_model_files_preprocessing(tmp_path: Path) -> None:
    """The nvJPEG path (torchvision runs it on the CPU too) resizes to the model file's declared input."""
    from tests.embedding.equivalence import photo, upscaled_to

    paths = []
    for name in PHOTOS:
        paths.append(str(tmp_path / f"{name}.jpg"))
        upscaled_to(photo(name), (1536, 1024)).save(paths[-1], quality=92)  # big enough for nvJPEG
    model = load_chosen_model(model_config(tmp_path, write_torchscript(tmp_path / "tiny.pt"), "torch",
                                          policy="stretch", size=96, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25]))
    with Embedder(model, batch_size=3, gpu_decode=True) as batched, Embedder(model, batch_size=3) as pool:
        assert batched.gpu_decode
        on_gpu_path = [result.vector for result in batched.embed_files(paths)]  # type: ignore[union-attr]
        decoded_in_pool = [result.vector for result in pool.embed_files(paths)]  # type: ignore[union-attr]
    # ResNet50's preprocessing instead would score 0.97-0.99 here
    assert np.min(np.sum(np.stack(on_gpu_path) * np.stack(decoded_in_pool), axis=1)) > 0.999
