"""Small random-initialised models saved as model files, for the tests of embedding.model: a few
convolutions and global pooling, so that they run in milliseconds on any input size."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

TINY_DIM = 64


class TinyNet(torch.nn.Module):
    """Two strided convolutions and a global average: (n, 3, H, W) -> (n, dim)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(16, dim, 3, stride=2),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images).mean(dim=(2, 3))


def tiny_net(dim: int = TINY_DIM, seed: int = 0) -> TinyNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyNet(dim).eval()


def write_torchscript(path: Path, dim: int = TINY_DIM, seed: int = 0) -> Path:
    """A TorchScript file as torch.jit.script(...).save writes it (SSCD's files are such)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _script(tiny_net(dim, seed)).save(str(path))
    return path


def _script(network: torch.nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():  # torch deprecates TorchScript; SSCD and others publish it
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.script(network)


def write_onnx(path: Path, dim: int = TINY_DIM, seed: int = 0, size: int = 224, dynamic_batch: bool = True) -> Path:
    """An ONNX file exported as docs/models.md's recipe does (its own input and output names)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {"pixel_values": {0: "batch"}, "embedding": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():  # the TorchScript-based exporter announces its deprecation
        warnings.simplefilter("ignore")
        torch.onnx.export(tiny_net(dim, seed), (torch.zeros(1, 3, size, size),), str(path), dynamo=False,
                          input_names=["pixel_values"], output_names=["embedding"], dynamic_axes=axes)
    return path


class Unexportable(TinyNet):
    """TinyNet plus nothing (zero times a histogram): an operator the ONNX exporter does not know."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images).mean(dim=(2, 3)) + 0 * torch.histc(images, bins=self.dim)


def write_unexportable_torchscript(path: Path, dim: int = TINY_DIM) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        _script(Unexportable(dim).eval()).save(str(path))
    return path
