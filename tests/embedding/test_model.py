"""load_model and EmbeddingModel with real ResNet50 code and seeded random weights."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import structlog
import torch
from PIL import Image
from torchvision.models import resnet18, resnet50

from imgwatch.embedding import (
    EMBEDDING_DIM,
    MODEL_NAME,
    EmbeddingModel,
    WeightsUnavailable,
    load_model,
    plan_inference,
    reference_preprocess,
)
from imgwatch.embedding.model import (
    CPU_BATCH_SIZE,
    CPU_DECODE_THREADS,
    CUDA_BATCH_SIZE,
    CUDA_STREAMS,
)
from imgwatch.errors import DeviceUnavailable


@pytest.fixture(scope="module")
def photo_batch() -> torch.Tensor:
    names = ("astronaut", "coffee", "chelsea")
    images = [Image.fromarray(getattr(skimage.data, name)()) for name in names]
    return torch.stack([reference_preprocess(image) for image in images])


@pytest.fixture(scope="module")
def seeded_torchvision_state() -> dict[str, torch.Tensor]:
    """What a torchvision-style checkpoint of the seed-0 model looks like (fc included)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return resnet50(weights=None).state_dict()


def test_embed_returns_unit_float32_rows(random_model: EmbeddingModel, photo_batch: torch.Tensor) -> None:
    vectors = random_model.embed(photo_batch)

    assert vectors.shape == (3, EMBEDDING_DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert random_model.embed(photo_batch[:0]).shape == (0, EMBEDDING_DIM)


def test_random_model_identity_and_device(random_model: EmbeddingModel) -> None:
    assert random_model.name == MODEL_NAME == "resnet50"
    assert random_model.dim == EMBEDDING_DIM
    assert random_model.weights_id == "random-seed0"
    assert random_model.identity == "resnet50/random-seed0"
    assert random_model.device == torch.device("cpu")


def test_random_weights_are_deterministic_per_seed(
    random_model: EmbeddingModel, photo_batch: torch.Tensor
) -> None:
    same_seed = load_model("random", device="cpu", seed=0)
    other_seed = load_model("random", device="cpu", seed=1)

    expected = random_model.embed(photo_batch)
    np.testing.assert_array_equal(same_seed.embed(photo_batch), expected)
    assert not np.allclose(other_seed.embed(photo_batch), expected, atol=1e-4)
    assert other_seed.identity == "resnet50/random-seed1"


def test_random_weights_log_a_loud_warning() -> None:
    with structlog.testing.capture_logs() as logs:
        load_model("random", device="cpu", seed=3)

    warnings = [entry for entry in logs if entry["event"] == "random_weights"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert "meaningless" in warnings[0]["detail"]


def test_state_dict_file_with_classifier_loads(
    tmp_path: Path,
    seeded_torchvision_state: dict[str, torch.Tensor],
    random_model: EmbeddingModel,
    photo_batch: torch.Tensor,
) -> None:
    path = tmp_path / "resnet50.pth"
    torch.save(seeded_torchvision_state, path)

    model = load_model(str(path), device="cpu")

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert model.identity == f"resnet50/file-{digest[:12]}"
    np.testing.assert_array_equal(model.embed(photo_batch), random_model.embed(photo_batch))


def test_wrapped_prefixed_state_dict_without_classifier_loads(
    tmp_path: Path,
    seeded_torchvision_state: dict[str, torch.Tensor],
    random_model: EmbeddingModel,
    photo_batch: torch.Tensor,
) -> None:
    # The shape a DataParallel training checkpoint has, minus the classifier head.
    headless = {
        f"module.{key}": value
        for key, value in seeded_torchvision_state.items()
        if not key.startswith("fc.")
    }
    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": headless, "epoch": 12}, path)

    model = load_model(str(path), device="cpu")

    assert model.identity.startswith("resnet50/file-")
    np.testing.assert_array_equal(model.embed(photo_batch), random_model.embed(photo_batch))


def test_missing_weights_file_is_weights_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "resnet50.pth"

    with pytest.raises(WeightsUnavailable, match="nowhere/resnet50.pth"):
        load_model(str(path), device="cpu")


def test_garbage_weights_file_is_weights_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"<html>404 Not Found</html>" * 50)

    with pytest.raises(WeightsUnavailable) as caught:
        load_model(str(path), device="cpu")

    assert str(path) in str(caught.value)


def test_other_architecture_is_weights_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18(weights=None).state_dict(), path)

    with pytest.raises(WeightsUnavailable) as caught:
        load_model(str(path), device="cpu")

    message = str(caught.value)
    assert str(path) in message
    assert "missing keys" in message and "wrong shapes" in message


def test_imagenet_without_network_is_weights_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Empty cache, and all HTTPS through a closed local port: fails fast even on a connected host.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    for variable in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    for variable in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(variable, raising=False)
    outcome: list[BaseException] = []

    def attempt() -> None:
        try:
            load_model("imagenet", device="cpu")
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            outcome.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout=120)

    assert not worker.is_alive(), "loading imagenet weights hung instead of failing"
    assert len(outcome) == 1 and isinstance(outcome[0], WeightsUnavailable)
    message = str(outcome[0])
    assert "IMAGENET1K_V2" in message
    assert "https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in message
    assert "--weights PATH" in message and "IMGWATCH_EMBEDDING_WEIGHTS" in message


def test_unknown_or_unavailable_device_is_a_clear_error() -> None:
    with pytest.raises(DeviceUnavailable, match="unknown device"):
        load_model("random", device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailable, match="CUDA is not available"):
            load_model("random", device="cuda")


def test_cpu_inference_plan_runs_one_single_threaded_stream_per_core() -> None:
    import os

    cores = len(os.sched_getaffinity(0))
    before = torch.get_num_threads()
    try:
        plan = plan_inference(torch.device("cpu"))
        assert (plan.batch_size, plan.streams, plan.threads) == (CPU_BATCH_SIZE, cores, 1)
        assert torch.get_num_threads() == 1
        shared = plan_inference(torch.device("cpu"), processes=cores)  # a core per worker process
        assert (shared.streams, shared.threads) == (1, 1)
        explicit = plan_inference(torch.device("cpu"), batch_size=4, streams=1, threads=2, decode_threads=5)
        assert (explicit.batch_size, explicit.streams, explicit.threads, explicit.decode_threads) == (4, 1, 2, 5)
        assert torch.get_num_threads() == 2
        assert plan.decode_threads == CPU_DECODE_THREADS  # beside one stream per core
    finally:
        torch.set_num_threads(before)


def test_cuda_inference_plan_gives_the_decode_pool_every_core_of_the_worker() -> None:
    """Planning touches no GPU, so this runs everywhere."""
    import os

    cores = len(os.sched_getaffinity(0))
    before = torch.get_num_threads()
    try:
        plan = plan_inference(torch.device("cuda"))
        assert (plan.batch_size, plan.streams, plan.decode_threads) == (CUDA_BATCH_SIZE, CUDA_STREAMS, cores)
        two_workers = plan_inference(torch.device("cuda"), processes=2)
        assert two_workers.decode_threads == max(1, cores // 2)
    finally:
        torch.set_num_threads(before)


def test_load_model_runs_torch_unless_another_engine_is_asked_for(random_model: EmbeddingModel) -> None:
    assert random_model.engine == "torch" and isinstance(random_model, EmbeddingModel)
    assert random_model.network is not None  # tests and helpers reach the torch network
