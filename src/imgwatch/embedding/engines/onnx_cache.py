"""The network exported to ONNX once per weights, kept in a cache folder for every later process.

A cached file is named ``<key>-<sha256 prefix>.onnx``: the key says what was exported (network,
weights identity, torch version, exporter, opset), the digest lets a reader reject a damaged
file without trusting anything else. Files are written to a temporary name and renamed into
place, so two processes exporting at once each leave a whole file and a reader never sees half.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
import warnings
from pathlib import Path

import structlog
import torch

from imgwatch.embedding.engines.contract import EngineFailure
from imgwatch.embedding.preprocessing import IMAGENET

OPSET = 17
# torch.onnx.export(dynamo=False): needs only the onnx package (the dynamo exporter also needs
# onnxscript) and exports ResNet50 in about a second.
EXPORTER = "torchscript"
INPUT_NAME = "images"
OUTPUT_NAME = "features"
IMAGE_SHAPE = IMAGENET.input_shape  # one ResNet50 input: a normalised RGB crop (a model file's may differ)
_DIGEST_CHARS = 16
_PARTIAL_PREFIX = ".export-"
_STALE_PARTIAL_SECONDS = 3600.0  # a temporary file this old belongs to an export that died
_log = structlog.get_logger("imgwatch.embedding")


def cache_key(network_name: str, weights_id: str) -> str:
    """What the file holds; any change here (new torch, new weights) means a new file."""
    raw = f"{network_name}-{weights_id}-torch{torch.__version__}-{EXPORTER}-opset{OPSET}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", raw)


def onnx_model(
    network: torch.nn.Module, network_name: str, weights_id: str, cache_dir: Path | None,
    input_shape: tuple[int, ...] = IMAGE_SHAPE,
) -> bytes:
    """The ONNX bytes of ``network``: a valid cached copy, else a fresh export (cached when possible).

    ``network_name`` must differ for every part of a network exported on its own;
    ``input_shape`` is one input without the batch axis. ``cache_dir`` None: export
    without caching (tests, one-off commands without a data dir).
    Raises EngineFailure when the export fails.
    """
    key = cache_key(network_name, weights_id)
    if cache_dir is not None:
        cached = _read_cached(cache_dir, key)
        if cached is not None:
            return cached
    return _export(network, key, weights_id, cache_dir, input_shape)


def cached_files(cache_dir: Path, network_name: str, weights_id: str) -> list[Path]:
    """The cache files for these weights (valid or not), for tests and diagnostics."""
    return sorted(cache_dir.glob(f"{cache_key(network_name, weights_id)}-*.onnx"))


def _read_cached(cache_dir: Path, key: str) -> bytes | None:
    for path in sorted(cache_dir.glob(f"{key}-*.onnx")):
        started = time.perf_counter()
        try:
            data = path.read_bytes()
        except OSError as exc:
            _log.warning("engine_cache_unreadable", path=str(path), error=exc.strerror or str(exc))
            continue
        if _digest(data) == path.stem.rsplit("-", 1)[-1]:
            _log.info("engine_cache_loaded", path=str(path), seconds=round(time.perf_counter() - started, 3))
            return data
        _log.warning("engine_cache_corrupt", path=str(path),
                     detail="the file does not match its checksum; it is removed and exported again")
        _remove(path)
    return None


def _export(
    network: torch.nn.Module, key: str, weights_id: str, cache_dir: Path | None, input_shape: tuple[int, ...]
) -> bytes:
    started = time.perf_counter()
    folder = _usable_folder(cache_dir)
    path: Path | None = None
    if folder is None:
        with tempfile.TemporaryDirectory(prefix="imgwatch-export-") as scratch:
            data = _export_file(network, Path(scratch) / "model.onnx", input_shape)
    else:
        handle, name = tempfile.mkstemp(prefix=_PARTIAL_PREFIX, suffix=".onnx", dir=folder)
        os.close(handle)
        try:
            data = _export_file(network, Path(name), input_shape)
            path = folder / f"{key}-{_digest(data)}.onnx"
            os.replace(name, path)  # atomic: readers see no file or a whole one
        finally:
            _remove(Path(name))
            _remove_stale_partials(folder)
    _log.info("engine_exported", weights=weights_id, path=str(path) if path else None,
              seconds=round(time.perf_counter() - started, 2))
    return data


def _export_file(network: torch.nn.Module, target: Path, input_shape: tuple[int, ...]) -> bytes:
    try:
        example = torch.zeros(1, *input_shape)
        with warnings.catch_warnings():  # the TorchScript exporter announces its deprecation
            warnings.simplefilter("ignore")
            torch.onnx.export(
                network.eval(), (example,), str(target), dynamo=False, opset_version=OPSET,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
        with open(target, "rb") as exported:
            data = exported.read()
            os.fsync(exported.fileno())  # the rename that follows must never publish unwritten blocks
    except Exception as exc:  # noqa: BLE001 - a missing onnx package, an exporter bug: all mean no engine
        raise EngineFailure(f"exporting the network to ONNX failed ({type(exc).__name__}: {exc})") from exc
    return data


def _usable_folder(cache_dir: Path | None) -> Path | None:
    """The cache folder, created private; None (with a warning) when it cannot be written."""
    if cache_dir is None:
        return None
    try:
        cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not os.access(cache_dir, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as exc:
        _log.warning("engine_cache_unwritable", path=str(cache_dir), error=exc.strerror or str(exc),
                     detail="the engine is exported again by every process; make the folder writable")
        return None
    return cache_dir


def _remove_stale_partials(folder: Path) -> None:
    cutoff = time.time() - _STALE_PARTIAL_SECONDS
    for path in folder.glob(f"{_PARTIAL_PREFIX}*"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:
            pass


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:_DIGEST_CHARS]


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass  # already gone (renamed into place, or another process cleaned it)
