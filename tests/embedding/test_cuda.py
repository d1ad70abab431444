"""The CUDA path (pinned memory, fp16 autocast) against the fp32 CPU reference, on a real GPU.

Skipped where torch sees no GPU (CI never has one); run on a GPU host with
``pytest tests/embedding/test_cuda.py``. With calibrated weights different photos score
0.8-0.98, so ">= 0.99 for the same photo" can fail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imgwatch.embedding import Embedded, Embedder, EmbeddingModel, load_model, reference_preprocess

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)")

SAME_PHOTO_MIN_COSINE = 0.99


@pytest.fixture(scope="module")
def cuda_model(calibrated_weights: Path) -> EmbeddingModel:
    return load_model(str(calibrated_weights), device="cuda")


def test_fp16_gpu_embeddings_match_the_fp32_cpu_reference(
    cuda_model: EmbeddingModel, calibrated_model: EmbeddingModel, photo_arrays: dict[str, np.ndarray]
) -> None:
    batch = torch.stack([reference_preprocess(Image.fromarray(array)) for array in photo_arrays.values()])
    on_gpu, on_cpu = cuda_model.embed(batch), calibrated_model.embed(batch)
    same = np.einsum("ij,ij->i", on_gpu, on_cpu)
    assert same.min() >= SAME_PHOTO_MIN_COSINE, dict(zip(photo_arrays, same.round(4), strict=True))
    others = (on_gpu @ on_cpu.T)[~np.eye(len(batch), dtype=bool)]
    assert others.max() < SAME_PHOTO_MIN_COSINE  # the comparison above could have failed


def test_files_embedded_on_the_gpu_match_the_cpu(
    cuda_model: EmbeddingModel, calibrated_model: EmbeddingModel, photo_arrays: dict[str, np.ndarray],
    tmp_path: Path,
) -> None:
    paths = []
    for name, array in photo_arrays.items():
        path = tmp_path / f"{name}.jpg"
        Image.fromarray(array).save(path, quality=92)
        paths.append(str(path))
    with Embedder(cuda_model, batch_size=4) as on_gpu, Embedder(calibrated_model, batch_size=4) as on_cpu:
        gpu = {r.facts.path: r.vector for r in on_gpu.embed_files(paths) if isinstance(r, Embedded)}
        cpu = {r.facts.path: r.vector for r in on_cpu.embed_files(paths) if isinstance(r, Embedded)}
    assert set(gpu) == set(cpu) == set(paths)
    for path in paths:
        assert float(gpu[path] @ cpu[path]) >= SAME_PHOTO_MIN_COSINE, path
