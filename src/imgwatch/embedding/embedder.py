"""Turning files into embeddings, with decoding overlapped with inference."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import torch

from imgwatch.embedding.decode import DecodeError, FileFacts, decode_for_model, read_file
from imgwatch.embedding.model import EmbeddingModel


@dataclass(frozen=True)
class Embedded:
    facts: FileFacts
    width: int
    height: int
    vector: np.ndarray


@dataclass(frozen=True)
class Unchanged:
    """The content hash equals the known one, so the file was not decoded."""

    facts: FileFacts


@dataclass(frozen=True)
class Failed:
    path: str
    reason: str


@dataclass(frozen=True)
class Missing:
    path: str


EmbedResult = Embedded | Unchanged | Failed | Missing


@dataclass(frozen=True)
class _Decoded:
    """A file ready for the model, waiting for its micro-batch."""

    facts: FileFacts
    width: int
    height: int
    tensor: torch.Tensor


class Embedder:
    """Embeds files in micro-batches while a thread pool reads and decodes ahead."""

    def __init__(self, model: EmbeddingModel, batch_size: int = 16, decode_threads: int = 2) -> None:
        if batch_size < 1 or decode_threads < 1:
            raise ValueError("batch_size and decode_threads must be at least 1")
        self.model = model
        self.batch_size = batch_size
        self._pool = ThreadPoolExecutor(max_workers=decode_threads, thread_name_prefix="imgwatch-decode")

    @property
    def identity(self) -> str:
        return self.model.identity

    @property
    def dim(self) -> int:
        return self.model.dim

    def embed_files(
        self, paths: Sequence[str], known_sha256: Mapping[str, str] | None = None
    ) -> Iterator[EmbedResult]:
        """Yield exactly one result per path; per-file problems become Failed/Missing.

        Results come in path order, except that Embedded ones are held back
        until their micro-batch has run. Reads and decodes for up to two
        batches ahead run in the pool while the model works on the current one.
        """
        known = known_sha256 or {}
        window = 2 * self.batch_size
        remaining = iter(paths)
        in_flight: deque[Future[EmbedResult | _Decoded]] = deque()
        waiting: list[_Decoded] = []

        def top_up() -> None:
            while len(in_flight) < window:
                path = next(remaining, None)
                if path is None:
                    return
                in_flight.append(self._pool.submit(_prepare, path, known.get(path)))

        try:
            top_up()
            while in_flight:
                # Consuming futures in submission order keeps the output deterministic.
                outcome = in_flight.popleft().result()
                top_up()
                if isinstance(outcome, _Decoded):
                    waiting.append(outcome)
                    if len(waiting) == self.batch_size:
                        yield from self._run_batch(waiting)
                        waiting = []
                else:
                    yield outcome
            yield from self._run_batch(waiting)
        finally:
            # The caller may stop iterating early; don't keep decoding for nobody.
            for future in in_flight:
                future.cancel()

    def embed_file(self, path: str) -> Embedded:
        """Embed one image (e.g. a query). Raises DecodeError or FileNotFoundError."""
        facts, data = read_file(path)
        tensor, width, height = decode_for_model(data, path)
        vector = self.model.embed(tensor.unsqueeze(0))[0]
        return Embedded(facts=facts, width=width, height=height, vector=vector)

    def _run_batch(self, decoded: list[_Decoded]) -> Iterator[Embedded]:
        if not decoded:
            return
        vectors = self.model.embed(torch.stack([item.tensor for item in decoded]))
        for item, vector in zip(decoded, vectors, strict=True):
            # copy: each result owns its row rather than pinning the whole batch array
            yield Embedded(facts=item.facts, width=item.width, height=item.height, vector=vector.copy())

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Embedder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _prepare(path: str, known_sha256: str | None) -> EmbedResult | _Decoded:
    """Runs in the pool: read, hash and decode one file, never raising."""
    try:
        facts, data = read_file(path)
    except (FileNotFoundError, NotADirectoryError):
        return Missing(path)
    except OSError as exc:
        return Failed(path, f"cannot read {path}: {exc.strerror or exc}")
    if known_sha256 is not None and known_sha256 == facts.sha256:
        return Unchanged(facts)
    try:
        tensor, width, height = decode_for_model(data, path)
    except DecodeError as exc:
        return Failed(path, str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug on one file must not sink the batch
        return Failed(path, f"unexpected error decoding {path}: {type(exc).__name__}: {exc}")
    return _Decoded(facts, width, height, tensor)
