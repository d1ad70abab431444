"""Exported inference engines: the same embeddings as torch, the export cache, fallback and errors.

Real code throughout: torchvision's ResNet50 with calibrated weights (different photos score
~0.8-0.98 apart, so "the same embedding" means something), the real exporter, ONNX Runtime and
files on disk. The network is exported once per session; tests that must export again (a damaged
cache, other weights) work on a copy of the cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import structlog
import torch
from PIL import Image

from imgwatch.config import EMBEDDING_ENGINES
from imgwatch.datadir import DataDir
from imgwatch.embedding import (
    EMBEDDING_DIM,
    Embedded,
    Embedder,
    EmbeddingEngine,
    EmbeddingModel,
    EngineUnavailable,
    inference_device,
    load_model,
    reference_preprocess,
)
from imgwatch.embedding.engines.contract import EXACT_COSINE, MIXED_PRECISION_COSINE
from imgwatch.embedding.engines.onnx_cache import cache_key, cached_files, onnx_model
from imgwatch.embedding.engines.selection import EXPORTED_ENGINES, preferred_cpu_engines
from tests.helpers import PHOTO_NAMES

pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed (pip install onnxruntime onnx)")
# Through imgwatch's module, never `import openvino` first: that would start OpenVINO's telemetry.
OPENVINO_MISSING = "OpenVINO is not installed (pip install openvino)"


@pytest.fixture(scope="session")
def engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return DataDir(tmp_path_factory.mktemp("data")).engine_cache


@pytest.fixture(scope="session")
def onnxruntime_engine(calibrated_weights: Path, engine_cache: Path) -> EmbeddingEngine:
    """The calibrated network exported once and run by ONNX Runtime, one thread per call."""
    return load_model(str(calibrated_weights), device="cpu", engine="onnxruntime", cache_dir=engine_cache, threads=1)


@pytest.fixture(scope="module")
def photo_batch(photo_arrays: dict[str, np.ndarray]) -> torch.Tensor:
    return torch.stack([reference_preprocess(Image.fromarray(photo_arrays[name])) for name in PHOTO_NAMES])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


def events(logs: list[dict[str, object]]) -> list[object]:
    return [entry["event"] for entry in logs]


def copy_of(cache: Path, tmp_path: Path) -> Path:
    """A private copy of the session's cache, for tests that damage it or add to it."""
    return Path(shutil.copytree(cache, tmp_path / "engines"))


def assert_embeds_photos_like_torch(
    engine: EmbeddingEngine, torch_model: EmbeddingModel, photo_batch: torch.Tensor, bar: float
) -> None:
    """Unit float32 rows, each within cosine ``bar`` of torch's embedding of the same photo."""
    expected = torch_model.embed(photo_batch)
    got = engine.embed(photo_batch)

    assert got.shape == (len(PHOTO_NAMES), EMBEDDING_DIM) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert cosines(got, expected).min() >= bar
    # The check means something only if different photos are far apart with these weights.
    assert (expected[0] @ expected[1:].T).max() < 0.99


# -- the same embeddings -------------------------------------------------------------------------------


def test_onnxruntime_embeds_real_photos_as_torch_does(
    onnxruntime_engine: EmbeddingEngine, calibrated_model: EmbeddingModel, photo_batch: torch.Tensor
) -> None:
    assert_embeds_photos_like_torch(onnxruntime_engine, calibrated_model, photo_batch, EXACT_COSINE)


def test_any_batch_size_embeds_each_image_alone(
    onnxruntime_engine: EmbeddingEngine, photo_batch: torch.Tensor
) -> None:
    together = onnxruntime_engine.embed(photo_batch[:3])
    one_by_one = np.concatenate([onnxruntime_engine.embed(photo_batch[i : i + 1]) for i in range(3)])

    assert cosines(together, one_by_one).min() >= EXACT_COSINE  # the batch axis is dynamic
    assert onnxruntime_engine.embed(photo_batch[:0]).shape == (0, EMBEDDING_DIM)
    with pytest.raises(ValueError, match=r"\(n, 3, H, W\)"):
        onnxruntime_engine.embed(photo_batch[0])


def test_an_engine_has_the_torch_models_identity_and_runs_on_the_cpu(
    onnxruntime_engine: EmbeddingEngine, calibrated_model: EmbeddingModel
) -> None:
    # One vector space: a store filled by an ONNX Runtime worker answers a torch search.
    assert onnxruntime_engine.identity == calibrated_model.identity
    assert (onnxruntime_engine.name, onnxruntime_engine.dim) == (calibrated_model.name, calibrated_model.dim)
    assert onnxruntime_engine.device == torch.device("cpu")
    assert (onnxruntime_engine.engine, calibrated_model.engine) == ("onnxruntime", "torch")
    assert onnxruntime_engine._session.get_session_options().intra_op_num_threads == 1  # type: ignore[attr-defined]


def test_embedder_streams_share_one_engine(
    onnxruntime_engine: EmbeddingEngine, calibrated_model: EmbeddingModel, tmp_path: Path,
    write_photo: Callable[..., Path],
) -> None:
    paths = [str(write_photo(tmp_path / f"{name}.png", name)) for name in PHOTO_NAMES]
    with Embedder(onnxruntime_engine, batch_size=2, streams=2) as embedder:  # type: ignore[arg-type]
        results = list(embedder.embed_files(paths))
    with Embedder(calibrated_model, batch_size=8) as embedder:
        expected = {r.facts.path: r.vector for r in embedder.embed_files(paths) if isinstance(r, Embedded)}

    assert all(isinstance(r, Embedded) for r in results) and len(results) == len(paths)
    assert min(float(r.vector @ expected[r.facts.path]) for r in results if isinstance(r, Embedded)) >= EXACT_COSINE


# -- the export cache ---------------------------------------------------------------------------------


def test_a_second_load_reads_the_cache_instead_of_exporting(
    onnxruntime_engine: EmbeddingEngine, calibrated_weights: Path, engine_cache: Path, photo_batch: torch.Tensor
) -> None:
    (cached,) = cached_files(engine_cache, onnxruntime_engine.name, onnxruntime_engine.weights_id)
    written = cached.stat().st_mtime_ns
    with structlog.testing.capture_logs() as logs:
        again = load_model(str(calibrated_weights), device="cpu", engine="onnxruntime", cache_dir=engine_cache)

    assert "engine_exported" not in events(logs) and "engine_cache_loaded" in events(logs)
    assert cached.stat().st_mtime_ns == written and cached_files(engine_cache, again.name, again.weights_id) == [cached]
    assert cosines(again.embed(photo_batch[:2]), onnxruntime_engine.embed(photo_batch[:2])).min() >= EXACT_COSINE
    # The cache is as private as the rest of the data dir, and no temporary file is left behind.
    assert stat.S_IMODE(engine_cache.stat().st_mode) == 0o700
    assert stat.S_IMODE(cached.stat().st_mode) & 0o077 == 0
    assert sorted(p.name for p in engine_cache.iterdir()) == [cached.name]


def test_a_damaged_cache_file_is_exported_again(
    onnxruntime_engine: EmbeddingEngine, calibrated_weights: Path, engine_cache: Path,
    tmp_path: Path, photo_batch: torch.Tensor,
) -> None:
    cache = copy_of(engine_cache, tmp_path)
    (cached,) = cached_files(cache, onnxruntime_engine.name, onnxruntime_engine.weights_id)
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0x40  # a weight changed on disk: the file still parses, the checksum says no
    cached.write_bytes(bytes(data))

    with structlog.testing.capture_logs() as logs:
        engine = load_model(str(calibrated_weights), device="cpu", engine="onnxruntime", cache_dir=cache)

    assert events(logs).count("engine_cache_corrupt") == 1 and "engine_exported" in events(logs)
    (fresh,) = cached_files(cache, engine.name, engine.weights_id)
    assert hashlib.sha256(fresh.read_bytes()).hexdigest().startswith(fresh.stem.rsplit("-", 1)[1])
    assert cosines(engine.embed(photo_batch[:2]), onnxruntime_engine.embed(photo_batch[:2])).min() >= EXACT_COSINE


def test_a_partial_cache_file_is_removed_and_a_whole_one_used(
    onnxruntime_engine: EmbeddingEngine, engine_cache: Path, tmp_path: Path, calibrated_model: EmbeddingModel
) -> None:
    cache = copy_of(engine_cache, tmp_path)
    (whole,) = cached_files(cache, onnxruntime_engine.name, onnxruntime_engine.weights_id)
    # What a copy cut short (or a writer that bypassed the rename) leaves; its name sorts first.
    partial = whole.with_name(whole.name.replace(whole.stem.rsplit("-", 1)[1], "0" * 16))
    partial.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])

    with structlog.testing.capture_logs() as logs:
        model = onnx_model(calibrated_model.network, calibrated_model.name, calibrated_model.weights_id, cache)

    assert events(logs) == ["engine_cache_corrupt", "engine_cache_loaded"]  # no export: the whole one serves
    assert model == whole.read_bytes() and not partial.exists()


def test_other_weights_get_their_own_cache_file(
    onnxruntime_engine: EmbeddingEngine, engine_cache: Path, tmp_path: Path, random_model: EmbeddingModel
) -> None:
    cache = copy_of(engine_cache, tmp_path)
    (calibrated,) = cached_files(cache, onnxruntime_engine.name, onnxruntime_engine.weights_id)

    onnx_model(random_model.network, random_model.name, random_model.weights_id, cache)

    (random_file,) = cached_files(cache, random_model.name, random_model.weights_id)
    assert random_model.weights_id != onnxruntime_engine.weights_id and random_file != calibrated
    assert sorted(cache.iterdir()) == sorted([calibrated, random_file])
    assert cache_key("resnet50", "file-aaaaaaaaaaaa") != cache_key("resnet50", "file-bbbbbbbbbbbb")
    assert torch.__version__.replace("+", "_") in cache_key("resnet50", "IMAGENET1K_V2")  # new torch, new export


# -- choosing the engine, falling back, refusing -------------------------------------------------------


def unloadable_cache(onnxruntime_engine: EmbeddingEngine, tmp_path: Path) -> Path:
    """A cache whose files match their checksums but are no models: no runtime can load them."""
    cache = tmp_path / "engines"
    cache.mkdir()
    garbage = b"not an ONNX model"
    name, weights_id = onnxruntime_engine.name, onnxruntime_engine.weights_id
    for exported in (name, f"{name}.float32-part", f"{name}.bfloat16-part"):  # ONNX Runtime's, OpenVINO's
        key = cache_key(exported, weights_id)
        (cache / f"{key}-{hashlib.sha256(garbage).hexdigest()[:16]}.onnx").write_bytes(garbage)
    return cache


def test_auto_falls_back_to_torch_with_a_warning_when_the_engine_cannot_load(
    onnxruntime_engine: EmbeddingEngine, calibrated_weights: Path, tmp_path: Path
) -> None:
    cache = unloadable_cache(onnxruntime_engine, tmp_path)
    with structlog.testing.capture_logs() as logs:
        model = load_model(str(calibrated_weights), device="cpu", engine="auto", cache_dir=cache)

    assert isinstance(model, EmbeddingModel) and model.engine == "torch"
    warnings = [entry for entry in logs if entry["event"] == "engine_fallback"]
    # Each engine auto tries is one warning naming the next; the last falls back to torch.
    tried = preferred_cpu_engines()
    assert [(w["engine"], w["fallback"]) for w in warnings] == list(zip(tried, [*tried[1:], "torch"], strict=True))
    assert all(w["log_level"] == "warning" and "could not load" in str(w["reason"]) for w in warnings)
    assert 'embedding.engine = "torch"' in str(warnings[-1]["detail"])


def test_auto_falls_back_to_torch_when_the_package_is_missing(
    calibrated_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What `import onnxruntime` / `import openvino` do on a machine without them.
    for package in ("onnxruntime", "openvino"):
        monkeypatch.setitem(sys.modules, package, None)
        monkeypatch.delitem(sys.modules, f"imgwatch.embedding.engines.{package}_engine", raising=False)
    assert preferred_cpu_engines() == ["onnxruntime"]
    with structlog.testing.capture_logs() as logs:
        model = load_model(str(calibrated_weights), device="cpu", engine="auto", cache_dir=tmp_path / "engines")

    assert model.engine == "torch"
    (warning,) = [entry for entry in logs if entry["event"] == "engine_fallback"]
    assert "not installed" in str(warning["reason"]) and "pip install onnxruntime" in str(warning["detail"])
    assert not (tmp_path / "engines").exists()  # nothing exported for an engine that cannot run

    with pytest.raises(EngineUnavailable, match=r"embedding.engine = 'onnxruntime' cannot be used.*pip install"):
        load_model(str(calibrated_weights), device="cpu", engine="onnxruntime", cache_dir=tmp_path / "engines")


def test_an_explicit_engine_that_cannot_load_is_an_error(
    onnxruntime_engine: EmbeddingEngine, calibrated_weights: Path, tmp_path: Path
) -> None:
    cache = unloadable_cache(onnxruntime_engine, tmp_path)
    with pytest.raises(EngineUnavailable, match=r"'onnxruntime' cannot be used: onnxruntime could not load"):
        load_model(str(calibrated_weights), device="cpu", engine="onnxruntime", cache_dir=cache)


def test_engine_names_and_devices() -> None:
    assert set(EMBEDDING_ENGINES) == {"auto", "torch", *EXPORTED_ENGINES}  # config and code agree
    assert inference_device("auto", "onnxruntime") == torch.device("cpu")
    assert inference_device("cpu", "auto") == torch.device("cpu")
    with pytest.raises(EngineUnavailable, match=r"runs on the CPU.*'cuda'"):
        load_model("random", device="cuda", engine="onnxruntime")
    with pytest.raises(EngineUnavailable, match=r"unknown embedding engine 'tensorrt'"):
        load_model("random", device="cpu", engine="tensorrt")
    assert isinstance(load_model("random", device="cpu"), EmbeddingModel)  # torch unless asked


# -- OpenVINO, float32 then bfloat16 ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def openvino_engine(calibrated_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> EmbeddingEngine:
    """The calibrated network exported in two parts and run by OpenVINO, one thread per call."""
    pytest.importorskip("imgwatch.embedding.engines.openvino_engine", reason=OPENVINO_MISSING)
    cache = DataDir(tmp_path_factory.mktemp("openvino-data")).engine_cache
    return load_model(str(calibrated_weights), device="cpu", engine="openvino", cache_dir=cache, threads=1)


def test_openvino_embeds_real_photos_within_the_mixed_precision_bar(
    openvino_engine: EmbeddingEngine, calibrated_model: EmbeddingModel, photo_batch: torch.Tensor
) -> None:
    from imgwatch.embedding.engines.openvino_engine import native_bfloat16

    assert openvino_engine.bfloat16 == native_bfloat16()  # type: ignore[attr-defined]
    assert openvino_engine.precision == ("float32+bfloat16" if native_bfloat16() else "float32")  # type: ignore[attr-defined]
    bar = MIXED_PRECISION_COSINE if native_bfloat16() else EXACT_COSINE
    assert openvino_engine.min_cosine == bar  # type: ignore[attr-defined]
    assert_embeds_photos_like_torch(openvino_engine, calibrated_model, photo_batch, bar)


def test_bfloat16_throughout_would_miss_the_bar(
    openvino_engine: EmbeddingEngine, calibrated_model: EmbeddingModel, photo_batch: torch.Tensor
) -> None:
    """Why the network is split: the same runtime in bfloat16 from the first layer moves embeddings too far."""
    import openvino

    from imgwatch.embedding.engines.openvino_engine import native_bfloat16

    if not native_bfloat16():
        pytest.skip("this CPU has no native bfloat16: OpenVINO runs float32 throughout")
    whole = onnx_model(calibrated_model.network, calibrated_model.name, calibrated_model.weights_id, None)
    core = openvino.Core()
    compiled = core.compile_model(core.read_model(BytesIO(whole)), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "bf16"})
    features = np.array(compiled.create_infer_request().infer({0: photo_batch.numpy()})[0])
    everywhere = features / np.linalg.norm(features, axis=1, keepdims=True)

    assert cosines(everywhere, calibrated_model.embed(photo_batch)).min() < MIXED_PRECISION_COSINE


def test_openvino_batches_streams_and_cache(
    openvino_engine: EmbeddingEngine, calibrated_model: EmbeddingModel, calibrated_weights: Path,
    photo_batch: torch.Tensor, tmp_path: Path, write_photo: Callable[..., Path],
) -> None:
    together = openvino_engine.embed(photo_batch[:3])
    one_by_one = np.concatenate([openvino_engine.embed(photo_batch[i : i + 1]) for i in range(3)])
    assert cosines(together, one_by_one).min() >= EXACT_COSINE  # the batch axis is dynamic in both parts
    assert openvino_engine.embed(photo_batch[:0]).shape == (0, EMBEDDING_DIM)
    assert (openvino_engine.identity, openvino_engine.engine) == (calibrated_model.identity, "openvino")

    paths = [str(write_photo(tmp_path / f"{name}.png", name)) for name in PHOTO_NAMES]
    with Embedder(openvino_engine, batch_size=2, streams=2) as embedder:  # type: ignore[arg-type]
        results = [r for r in embedder.embed_files(paths) if isinstance(r, Embedded)]
    with Embedder(calibrated_model, batch_size=8) as embedder:
        expected = {r.facts.path: r.vector for r in embedder.embed_files(paths) if isinstance(r, Embedded)}
    assert len(results) == len(paths)
    assert min(float(r.vector @ expected[r.facts.path]) for r in results) >= MIXED_PRECISION_COSINE

    # Two cached parts, read (not exported) by the next process.
    cache = tmp_path / "engines"
    load_model(str(calibrated_weights), device="cpu", engine="openvino", cache_dir=cache)
    parts = sorted(p.name for p in cache.iterdir())
    assert len(parts) == 2 and all(".float32-part-" in p or ".bfloat16-part-" in p for p in parts)
    with structlog.testing.capture_logs() as logs:
        load_model(str(calibrated_weights), device="cpu", engine="openvino", cache_dir=cache)
    assert events(logs).count("engine_cache_loaded") == 2 and "engine_exported" not in events(logs)


def test_auto_prefers_openvino_only_where_bfloat16_is_native() -> None:
    pytest.importorskip("imgwatch.embedding.engines.openvino_engine", reason=OPENVINO_MISSING)
    from imgwatch.embedding.engines.openvino_engine import native_bfloat16

    expected = ["openvino", "onnxruntime"] if native_bfloat16() else ["onnxruntime"]
    assert preferred_cpu_engines() == expected


def test_loading_openvino_does_not_load_its_telemetry() -> None:
    """`import openvino` would import its converter, which reports the import to Google Analytics."""
    pytest.importorskip("imgwatch.embedding.engines.openvino_engine", reason=OPENVINO_MISSING)
    code = (
        "import sys, threading\n"
        "from imgwatch.embedding.engines.openvino_engine import native_bfloat16\n"
        "native_bfloat16()\n"
        "print(sorted(name for name, module in sys.modules.items() if module is not None"
        " and ('telemetry' in name or name.startswith('openvino.tools'))),"
        " threading.active_count())\n"
    )
    environment = {key: value for key, value in os.environ.items() if key != "CI"}  # CI=true would mute it anyway
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=environment, check=True)
    assert done.stdout.split() == ["[]", "1"], done.stdout + done.stderr
