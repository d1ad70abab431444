"""Turning files into embeddings, with decoding overlapped with inference."""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
import torch

from imgwatch.embedding import nvjpeg
from imgwatch.embedding.decode import DecodeError, FileFacts, decode_for_model, read_file, unreadable_reason
from imgwatch.embedding.engines.contract import EmbeddingEngine
from imgwatch.embedding.preprocessing import Preprocessing


@dataclass(frozen=True)
class Embedded:
    facts: FileFacts
    width: int
    height: int
    vector: np.ndarray
    reused: bool = False  # the embedding of the same content, found by its hash: no decode, no model


# The stored (vector, width, height) of each of the content hashes it knows: how files skip the
# model. Asked once for all the files of a chunk (REUSE_LOOKUP_FILES), so a store answers in one query.
ReuseLookup = Callable[[Sequence[str]], "Mapping[str, tuple[np.ndarray, int, int]]"]

# With a ReuseLookup, files are read and hashed a chunk at a time before any of them is decoded,
# and their content hashes looked up together: a chunk is the read-ahead window, or this many files
# if more, so that a job of watch.batch_size's default (32) paths is looked up once. The chunk's
# file bytes are held from reading until decoding.
REUSE_LOOKUP_FILES = 32


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
class _Read:
    """A file read and hashed, not decoded yet."""

    facts: FileFacts
    data: bytes


@dataclass(frozen=True)
class _Decoded:
    """A file ready for the model, waiting for its micro-batch."""

    facts: FileFacts
    width: int
    height: int
    model_input: torch.Tensor | nvjpeg.JpegForGpu  # decoded here, or by nvJPEG with its micro-batch


def jpeg_decoders(jpeg_decoder: str) -> dict[str, bool | None]:
    """The Embedder's ``gpu_decode`` and ``share_with_cpu`` for the config's ``embedding.jpeg_decoder``."""
    return {"auto": {"gpu_decode": None, "share_with_cpu": True},
            "gpu": {"gpu_decode": None, "share_with_cpu": False},
            "cpu": {"gpu_decode": False, "share_with_cpu": False}}[jpeg_decoder]


class Embedder:
    """Embeds files in micro-batches while a thread pool reads and decodes ahead."""

    def __init__(
        self, model: EmbeddingEngine, batch_size: int = 16, decode_threads: int = 2, streams: int = 1,
        gpu_decode: bool | None = None, share_with_cpu: bool = True,
    ) -> None:
        """``streams``: micro-batches run through the model at once, each on its own thread.

        On a CPU, several single-threaded streams beat one multi-threaded forward
        pass: they never wait on each other at the per-layer barriers that make
        intra-op threads stall whenever a decode thread takes their core.

        ``gpu_decode``: decode JPEGs with nvJPEG on the model's GPU, a micro-batch at a time
        (the pool then only reads, hashes and checks headers); None: whenever the model runs
        on CUDA and this torchvision has nvJPEG (found out when first needed: starting nvJPEG
        takes about a second, which a one-image query never needs).
        ``share_with_cpu``: with ``gpu_decode``, the pool also decodes JPEGs (reduced, as on a
        CPU) while the GPU has a micro-batch per stream waiting (:class:`nvjpeg.Backlog`).
        """
        if batch_size < 1 or decode_threads < 1 or streams < 1:
            raise ValueError("batch_size, decode_threads and streams must be at least 1")
        self.model = model
        self.batch_size = batch_size
        self.streams = streams
        self._gpu_decode = gpu_decode
        self._share_with_cpu = share_with_cpu
        self.jpegs_to_gpu = 0  # JPEGs nvJPEG decoded, and those it could have that the pool decoded:
        self.jpegs_on_cpu = 0  # the split of the last embed_files calls (tests and the bench read it)
        self._pool = ThreadPoolExecutor(max_workers=decode_threads, thread_name_prefix="imgwatch-decode")
        self._reuse_lock = threading.Lock()
        self._inference = ThreadPoolExecutor(max_workers=streams, thread_name_prefix="imgwatch-infer")

    @property
    def gpu_decode(self) -> bool:
        """Whether embed_files decodes JPEGs with nvJPEG."""
        if self._gpu_decode is None:
            self._gpu_decode = self.model.device.type == "cuda" and nvjpeg.available(self.model.device)
        return self._gpu_decode

    @property
    def identity(self) -> str:
        return self.model.identity

    @property
    def dim(self) -> int:
        return self.model.dim

    def embed_files(
        self, paths: Sequence[str], known_sha256: Mapping[str, str] | None = None,
        reuse: ReuseLookup | None = None,
    ) -> Iterator[EmbedResult]:
        """Yield exactly one result per path; per-file problems become Failed/Missing.

        ``reuse`` is asked, in the pool (one call at a time) and once per chunk of files (see REUSE_LOOKUP_FILES),
        for the content hashes of the files read (it must not raise): what it returns comes back as a
        reused Embedded result without decoding the file or running the model.

        Results come in path order, except that Embedded ones (and files nvJPEG found
        damaged) are held back until their micro-batch has run. Reads and decodes run ahead in the pool
        (one micro-batch more than there are streams) while the model works.
        """
        known = known_sha256 or {}
        batch_size = self.micro_batch_size(len(paths))
        window = (self.streams + 1) * batch_size
        backlog = self._backlog(batch_size)
        remaining = self._prepared(paths, known, reuse, max(window, REUSE_LOOKUP_FILES), backlog)
        in_flight: deque[Future[EmbedResult | _Decoded]] = deque()
        running: deque[Future[list[Embedded | Failed]]] = deque()
        waiting: list[_Decoded] = []

        def top_up() -> None:
            while len(in_flight) < window:
                future = next(remaining, None)
                if future is None:
                    return
                in_flight.append(future)

        def finished(wait_for_free_stream: bool) -> Iterator[Embedded | Failed]:
            while running and (running[0].done() or (wait_for_free_stream and len(running) >= self.streams)):
                yield from running.popleft().result()

        try:
            top_up()
            while in_flight:
                # Consuming futures in submission order keeps the output deterministic.
                outcome = in_flight.popleft().result()
                top_up()
                if isinstance(outcome, _Decoded):
                    waiting.append(outcome)
                    if len(waiting) == batch_size:
                        yield from finished(wait_for_free_stream=True)
                        running.append(self._inference.submit(self._run_batch, waiting, backlog))
                        waiting = []
                else:
                    yield outcome
                yield from finished(wait_for_free_stream=False)
            if waiting:
                running.append(self._inference.submit(self._run_batch, waiting, backlog))
            while running:
                yield from running.popleft().result()
        finally:
            # The caller may stop iterating early; don't keep decoding for nobody.
            for future in (*in_flight, *running):
                future.cancel()
            if backlog is not None:
                self.jpegs_to_gpu, self.jpegs_on_cpu = backlog.to_gpu, backlog.on_cpu

    def _backlog(self, batch_size: int) -> nvjpeg.Backlog | None:
        """The JPEGs waiting for nvJPEG in one call; None when the pool decodes everything."""
        if not self.gpu_decode:
            return None
        return nvjpeg.Backlog(batch_size * self.streams if self._share_with_cpu else None)

    def _prepared(
        self, paths: Sequence[str], known: Mapping[str, str], reuse: ReuseLookup | None, chunk: int,
        backlog: nvjpeg.Backlog | None,
    ) -> Iterator[Future[EmbedResult | _Decoded]]:
        """Each path's preparation in the pool, in path order, submitted as the caller draws them.

        Without ``reuse`` a file is read and decoded in one task. With it, a chunk's files are read,
        their hashes looked up in one call, and only the files not found decoded; the caller is never
        kept waiting for that (the lookup runs in the pool once the chunk is read, each file's future
        completes when its own outcome is known), so a GPU's micro-batches keep coming meanwhile.
        """
        if reuse is None:
            for path in paths:
                yield self._pool.submit(_prepare, path, self.model.preprocessing, known.get(path), backlog)
            return
        for start in range(0, len(paths), chunk):
            reads = [self._pool.submit(_read, path, known.get(path)) for path in paths[start : start + chunk]]
            outcomes: list[Future[EmbedResult | _Decoded]] = [Future() for _ in reads]
            # Submitted after the reads: the pool's queue is first in, first out, so this task only waits
            # for reads already taken up by other threads.
            lookup = self._pool.submit(self._look_up, reads, reuse)
            lookup.add_done_callback(functools.partial(self._after_lookup, reads, outcomes, backlog))
            yield from outcomes

    def _look_up(self, reads: list[Future[EmbedResult | _Read]], reuse: ReuseLookup) -> Mapping[str, tuple]:
        hashes = [read.facts.sha256 for read in (future.result() for future in reads) if isinstance(read, _Read)]
        if not hashes:
            return {}
        with self._reuse_lock:  # the store behind ``reuse`` is asked from one pool thread at a time
            return reuse(hashes)

    def _after_lookup(self, reads: list[Future[EmbedResult | _Read]], outcomes: list[Future[EmbedResult | _Decoded]],
                      backlog: nvjpeg.Backlog | None, lookup: Future[Mapping[str, tuple]]) -> None:
        found = lookup.result() if not lookup.cancelled() and lookup.exception() is None else {}
        for future, outcome in zip(reads, outcomes, strict=True):
            if future.exception() is not None:  # never, as _read catches; but a future left pending hangs
                _settle(outcome, future)
                continue
            read = future.result()
            if not isinstance(read, _Read):
                _settle(outcome, read)
            elif (stored := found.get(read.facts.sha256)) is not None:
                vector, width, height = stored
                _settle(outcome, Embedded(read.facts, width, height, vector, reused=True))
            elif not outcome.cancelled():  # the caller stopped: no decode for nobody
                try:
                    decode = self._pool.submit(_decode, read, self.model.preprocessing, backlog)
                except RuntimeError:  # the pool was shut down meanwhile
                    outcome.cancel()
                    continue
                decode.add_done_callback(functools.partial(_settle, outcome))

    def micro_batch_size(self, count: int) -> int:
        """Split ``count`` images into equal micro-batches, a multiple of ``streams`` of them,
        so that no stream is left idle while another works through a big remainder."""
        batches = max(1, math.ceil(count / self.batch_size))
        batches = math.ceil(batches / self.streams) * self.streams
        return max(1, math.ceil(count / batches))

    def embed_file(self, path: str) -> Embedded:
        """Embed one image (e.g. a query). Raises DecodeError or FileNotFoundError."""
        facts, data = read_file(path)
        tensor, width, height = decode_for_model(data, path, self.model.preprocessing)
        vector = self.model.embed(tensor.unsqueeze(0))[0]
        return Embedded(facts=facts, width=width, height=height, vector=vector)

    def _run_batch(self, decoded: list[_Decoded], backlog: nvjpeg.Backlog | None) -> list[Embedded | Failed]:
        if backlog is not None:
            inputs = nvjpeg.model_inputs([item.model_input for item in decoded], self.model.device,
                                         self.model.preprocessing)
            backlog.decoded(sum(isinstance(item.model_input, nvjpeg.JpegForGpu) for item in decoded))
        else:
            inputs = [item.model_input for item in decoded]  # type: ignore[misc]  # all decoded in the pool
        failed = [Failed(item.facts.path, str(error))
                  for item, error in zip(decoded, inputs, strict=True) if isinstance(error, DecodeError)]
        ready = [(item, tensor) for item, tensor in zip(decoded, inputs, strict=True)
                 if isinstance(tensor, torch.Tensor)]
        vectors = self.model.embed(torch.stack([tensor for _, tensor in ready])) if ready else []
        # copy: each result owns its row rather than pinning the whole batch array
        return [
            *failed,
            *(Embedded(facts=item.facts, width=item.width, height=item.height, vector=vector.copy())
              for (item, _), vector in zip(ready, vectors, strict=True)),
        ]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._inference.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Embedder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _settle(outcome: Future[EmbedResult | _Decoded], result: EmbedResult | _Decoded | Future[Any]) -> None:
    """Complete a file's future with its outcome (or a finished task's result or exception), unless
    the caller cancelled it meanwhile."""
    with contextlib.suppress(InvalidStateError):
        if not isinstance(result, Future):
            outcome.set_result(result)
        elif result.cancelled():
            outcome.cancel()
        elif result.exception() is not None:
            outcome.set_exception(result.exception())
        else:
            outcome.set_result(result.result())


def _prepare(
    path: str, preprocessing: Preprocessing, known_sha256: str | None, backlog: nvjpeg.Backlog | None = None,
) -> EmbedResult | _Decoded:
    """Runs in the pool: read, hash and decode one file (unless its content is known), never raising."""
    read = _read(path, known_sha256)
    return _decode(read, preprocessing, backlog) if isinstance(read, _Read) else read


def _read(path: str, known_sha256: str | None) -> EmbedResult | _Read:
    """Runs in the pool: read and hash one file, never raising; Unchanged if its content is known."""
    try:
        facts, data = read_file(path)
    except (FileNotFoundError, NotADirectoryError):
        return Missing(path)
    except OSError as exc:
        return Failed(path, unreadable_reason(path, exc))
    except DecodeError as exc:  # not a regular file, or too big to read
        return Failed(path, str(exc))
    if known_sha256 is not None and known_sha256 == facts.sha256:
        return Unchanged(facts)
    return _Read(facts, data)


def _decode(read: _Read, preprocessing: Preprocessing, backlog: nvjpeg.Backlog | None) -> Failed | _Decoded:
    """Runs in the pool: decode a file read as the model's ``preprocessing`` says, never raising.

    With a ``backlog`` (nvJPEG in use) a JPEG the GPU can take is only checked here (its header)
    and decoded with its micro-batch, unless the GPU has enough waiting already.
    """
    facts, data, path = read.facts, read.data, read.facts.path
    try:
        for_gpu = nvjpeg.inspect_jpeg(data, path) if backlog is not None else None
        if for_gpu is not None and backlog is not None and backlog.leave_to_gpu():
            return _Decoded(facts, *for_gpu.size, for_gpu)
        tensor, width, height = decode_for_model(data, path, preprocessing)
    except DecodeError as exc:
        return Failed(path, str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug on one file must not sink the batch
        return Failed(path, f"unexpected error decoding {path}: {type(exc).__name__}: {exc}")
    return _Decoded(facts, width, height, tensor)


def _done(result: EmbedResult) -> Future[EmbedResult | _Decoded]:
    """A result known without work in the pool, as a finished future among the pool's."""
    future: Future[EmbedResult | _Decoded] = Future()
    future.set_result(result)
    return future
