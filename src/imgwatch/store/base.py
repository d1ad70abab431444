"""The graph-store contract: the only store API that workers and the CLI use.

An image is a node keyed by its absolute path, carrying file facts and one
L2-normalised float32 embedding. ``SIMILAR_TO`` links are undirected, stored
once per pair, and scored with the raw cosine similarity of the two embeddings.
Backends (embedded SQLite, Neo4j) implement :class:`GraphStore`; nothing outside
``imgwatch.store`` knows which one is in use.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType

import numpy as np

from imgwatch.errors import (  # noqa: F401 - re-exported: part of the store contract
    ImageNotFound,
    ModelMismatchError,
    ReindexConflict,
    ReindexIncomplete,
    StoreError,
    StoreMissing,
    StoreUnavailable,
)
from imgwatch.store.batching import chunks
from imgwatch.store.linking import ordered

# Renames per transaction when a folder moves: bounded, so a huge folder is not one huge transaction.
MOVE_BATCH = 5000


@dataclass(frozen=True)
class FileState:
    """What reconciliation compares between the filesystem and the store."""

    path: str
    size: int
    mtime_ns: int
    ctime_ns: int | None = None  # None: stored before imgwatch kept it (never matches a file)
    inode: int | None = None

    @property
    def signature(self) -> tuple[int, int, int | None, int | None]:
        """Compared with files.signature_of(os.stat(path)): equal means the file is as stored."""
        return (self.size, self.mtime_ns, self.ctime_ns, self.inode)


@dataclass(frozen=True)
class StoredImage:
    """An image's node as stored, without its embedding."""

    path: str
    sha256: str
    size: int
    mtime_ns: int
    width: int
    height: int
    model: str
    linked: bool = True  # False between upsert() and link(): a crash there leaves it unlinked
    # When its current embedding was written (epoch seconds); None if unknown (stored before imgwatch kept it).
    indexed_at: float | None = None
    ctime_ns: int | None = None  # as in FileState
    inode: int | None = None

    @property
    def signature(self) -> tuple[int, int, int | None, int | None]:
        return (self.size, self.mtime_ns, self.ctime_ns, self.inode)


@dataclass(frozen=True)
class ImageRecord:
    """An image to upsert: its node facts and its embedding."""

    path: str
    sha256: str
    size: int
    mtime_ns: int
    width: int
    height: int
    model: str
    embedding: np.ndarray = field(repr=False)
    ctime_ns: int | None = None  # as in FileState
    inode: int | None = None
    # Its vector in the pending space (see GraphStore.begin_space), stored when one is open;
    # None: the image has no pending vector yet (a reindex job gives it one).
    pending_embedding: np.ndarray | None = field(repr=False, default=None)

    @property
    def signature(self) -> tuple[int, int, int | None, int | None]:
        return (self.size, self.mtime_ns, self.ctime_ns, self.inode)


@dataclass(frozen=True)
class PendingSpace:
    """A second vector space being filled for a new model while the active one keeps answering."""

    model: str  # the new model's identity, as ensure_model records it
    dim: int
    weights_file: tuple[str, str] | None  # as ensure_model's
    embedded: int  # images that have a pending vector for their current content
    total: int  # images in the store

    @property
    def complete(self) -> bool:
        return self.embedded >= self.total


@dataclass(frozen=True)
class StoredEmbedding:
    """An embedding already computed for some file content: any file with that content can reuse it."""

    vector: np.ndarray = field(repr=False)
    width: int
    height: int


@dataclass(frozen=True)
class Match:
    path: str
    score: float  # raw cosine similarity, in [-1, 1]


@dataclass(frozen=True)
class StoreStats:
    backend: str
    location: str
    images: int
    links: int
    model: str | None
    dim: int | None = None

    @classmethod
    def counted(cls, backend: str, location: str, images: int, links: int,
                recorded: tuple[str, int] | None) -> StoreStats:
        """Stats from counts and the recorded (model, dim), None before ensure_model."""
        model, dim = recorded if recorded is not None else (None, None)
        return cls(backend, location, images, links, model, dim)


@dataclass(frozen=True)
class ExportedImage:
    """An image with everything a store holds about it, for copying between stores."""

    record: ImageRecord
    linked: bool
    pick_bar: float | None  # the lowest cosine it picked when last linked (see GraphStore.link)
    indexed_at: float | None = None  # StoredImage.indexed_at, copied as is


DECISION_KINDS = ("not_duplicates", "keep")


@dataclass(frozen=True)
class Decision:
    """A person's decision about contents (SHA-256), so it outlives moves, renames and re-indexing:
    ``not_duplicates`` (they are not copies of each other: a burst, a series) or ``keep`` (of these,
    the content ``keep`` is the one to keep)."""

    kind: str  # one of DECISION_KINDS
    hashes: frozenset[str]
    keep: str | None  # the content to keep for "keep"; None for "not_duplicates"
    decided_at: float  # epoch seconds


def checked_decision(kind: str, hashes: Sequence[str]) -> tuple[frozenset[str], str | None]:
    """The hashes of a decision and the one to keep (``hashes[0]`` for "keep"); ValueError for an unknown
    kind or fewer than one content."""
    if kind not in DECISION_KINDS:
        raise ValueError(f"a decision is one of {', '.join(DECISION_KINDS)}, not {kind!r}")
    if not hashes:
        raise ValueError("a decision is about at least one content")
    return frozenset(hashes), hashes[0] if kind == "keep" else None


@dataclass(frozen=True, order=True)
class Link:
    """One undirected SIMILAR_TO link, named by its two paths with ``a < b``."""

    a: str
    b: str
    score: float

    @classmethod
    def between(cls, one: str, other: str, score: float) -> Link:
        return cls(*ordered(one, other), score)


def each_pair_once(links: Iterable[Link]) -> Iterator[Link]:
    """``links`` without repeats of a pair: the first one read counts.

    Paged reads run one short transaction per page, so a link re-scored between two
    pages can be read twice (at its old and its new score); the caller sees it once.
    """
    seen: set[tuple[str, str]] = set()
    for link in links:
        if (link.a, link.b) not in seen:
            seen.add((link.a, link.b))
            yield link


def independent_rounds(moves: Sequence[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """``moves`` split, in order, into rounds in which no path appears twice.

    Applying the rounds one after the other equals applying the moves one by one (a
    rotation a -> t, b -> a, t -> b needs three rounds), while a moved folder, where
    every path is distinct, is one round: a backend can apply each round as a whole.
    """
    rounds: list[list[tuple[str, str]]] = []
    seen: set[str] = set()
    for old, new in moves:
        if old == new:
            continue
        if not rounds or old in seen or new in seen:
            rounds.append([])
            seen = set()
        rounds[-1].append((old, new))
        seen.update((old, new))
    return rounds


def moved_path(path: str, old: str, new: str) -> str:
    """Where ``path`` (``old`` itself or a path below it) is once ``old`` has moved to ``new``."""
    return new + path[len(old.rstrip(os.sep)):]


def checked_threshold(threshold: float) -> float:
    """A link threshold, or StoreError: it must be a cosine in [-1, 1] (NaN is refused too)."""
    if not -1.0 <= threshold <= 1.0:
        raise StoreError(f"link threshold must be a cosine in [-1, 1], got {threshold}")
    return float(threshold)


def checked_embedding(embedding: np.ndarray, dim: int, path: str) -> np.ndarray:
    """One record's embedding as float32, or StoreError saying what is wrong with it."""
    try:
        vector = np.asarray(embedding, dtype="<f4")
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{path}: embedding is not numeric ({exc})") from exc
    if vector.shape != (dim,):
        raise StoreError(f"{path}: embedding has shape {vector.shape}, the store's model needs ({dim},)")
    if not np.isfinite(vector).all():
        raise StoreError(f"{path}: embedding contains NaN or infinite values")
    norm = float(np.linalg.norm(vector))
    if abs(norm - 1.0) > 1e-3:
        raise StoreError(f"{path}: embedding must be L2-normalised (its norm is {norm:.6g})")
    return vector


def already_active_message(model: str) -> str:
    return f"this store is already embedded with {model}; there is nothing to re-index"


def pending_conflict_message(pending: str, model: str) -> str:
    return (f"a re-index to {pending} is under way; let it finish, or drop it with `imgwatch reindex --abort` "
            f"before re-indexing with {model}")


def incomplete_message(space: PendingSpace) -> str:
    return (f"the re-index to {space.model} is not complete ({space.embedded} of {space.total} images embedded); "
            "the workers go on with it: run `imgwatch reindex` to watch")


def unit_query(vector: np.ndarray, dim: int) -> np.ndarray:
    """A query vector checked and scaled to length 1 (cosine only needs its direction)."""
    query = np.asarray(vector, dtype=np.float32)
    if query.shape != (dim,):
        raise StoreError(f"query vector has shape {query.shape}, the store's model needs ({dim},)")
    if not np.isfinite(query).all():
        raise StoreError("query vector contains NaN or infinite values")
    norm = float(np.linalg.norm(query))
    if norm == 0.0:
        raise StoreError("query vector is all zeros; it has no direction to compare")
    unit: np.ndarray = query / np.float32(norm)
    return unit


def model_mismatch_message(stored_model: str, stored_dim: int, count: int, model: str, dim: int,
                           how_to_reset: str) -> str:
    return (
        f"this store holds {count} embeddings from {stored_model} (dim {stored_dim}); "
        f"you are using {model} (dim {dim}). Similarity scores across models are "
        f"meaningless. To re-index everything with {model} while search keeps answering, run "
        f"`imgwatch reindex` with it configured (docs/reindex.md); to start over instead, {how_to_reset}; "
        f"otherwise configure {stored_model} again."
    )


def weights_file_to_record(recorded: tuple[str, int] | None, recorded_file: tuple[str, str] | None,
                           model: str, dim: int, weights_file: tuple[str, str] | None) -> tuple[str, str] | None:
    """The weights file ensure_model records with (model, dim): the one given (a file moved and
    configured again updates it); else, for the model already recorded, the one recorded with it
    (a caller that does not know the file keeps it); else none."""
    if weights_file is not None:
        return weights_file
    return recorded_file if recorded == (model, dim) else None


def foreign_record_message(path: str, record_model: str, stored_model: str, how_to_reset: str) -> str:
    return (
        f"{path} was embedded with {record_model}, but this store holds embeddings from {stored_model}. "
        f"To re-index everything with {record_model}, {how_to_reset}."
    )


class GraphStore(abc.ABC):
    """Contract shared by every backend. Paths are absolute strings."""

    backend: str = "abstract"

    @abc.abstractmethod
    def ensure_model(self, model: str, dim: int, weights_file: tuple[str, str] | None = None) -> None:
        """Record the embedding model on first use; raise ModelMismatchError if another is stored.

        ``weights_file``: (absolute path, SHA-256) of the weights file the model was loaded from,
        recorded with it (see weights_file_to_record), so that commands configured with no
        weights can load the store's own.
        """

    @abc.abstractmethod
    def recorded_model(self) -> tuple[str, int] | None:
        """The (model, dim) recorded by ensure_model; None before anything was recorded."""

    @abc.abstractmethod
    def recorded_weights_file(self) -> tuple[str, str] | None:
        """The (path, SHA-256) of the weights file recorded with the model; None for weights that
        are no file, or a store from before imgwatch recorded it."""

    @abc.abstractmethod
    def upsert(self, records: Sequence[ImageRecord]) -> None:
        """Insert or replace images (node facts and embeddings), committed together."""

    @abc.abstractmethod
    def update_file_states(self, states: Sequence[FileState]) -> None:
        """Refresh size/mtime of stored images whose content did not change."""

    @abc.abstractmethod
    def remove(self, paths: Iterable[str]) -> int:
        """Delete images and their links; return how many existed."""

    @abc.abstractmethod
    def get_many(self, paths: Iterable[str]) -> dict[str, StoredImage]:
        """Stored facts for those of ``paths`` that are indexed."""

    @abc.abstractmethod
    def nearest(self, vector: np.ndarray, k: int, *, exclude: Iterable[str] = ()) -> list[Match]:
        """The ``k`` images most similar to ``vector``, best first (exact or ANN per backend)."""

    @abc.abstractmethod
    def link(self, images: Sequence[ImageRecord], threshold: float, top_k: int) -> int:
        """Replace each image's links with its nearest neighbours (cosine >= threshold, at most top_k).

        Images in ``images`` must already be upserted; they are linked to each other
        too. Their former neighbours keep the links they would still choose. A link
        exists while either end chooses the other, so an image chosen by many others
        can have more than top_k links. Marks the images as linked. Returns the
        number of links written.
        """

    @abc.abstractmethod
    def neighbours(self, path: str) -> list[Match]:
        """An image's SIMILAR_TO neighbours, best first; ImageNotFound if not indexed."""

    @abc.abstractmethod
    def links_at_least(self, threshold: float) -> Iterator[Link]:
        """Every SIMILAR_TO link with score >= ``threshold``, each pair once, in no promised order.

        Read in pages, one short read transaction each (no transaction stays open while
        the caller works). A link written or re-scored meanwhile may or may not appear,
        with its old or its new score, but never twice. StoreError for a threshold
        outside [-1, 1].
        """

    @abc.abstractmethod
    def embeddings_by_hash(self, hashes: Iterable[str], model: str) -> dict[str, StoredEmbedding]:
        """For each content hash (``sha256``) that a stored image of ``model`` has, that image's
        embedding and size. A copied, renamed or moved file reuses it instead of running the model."""

    @abc.abstractmethod
    def same_content_groups(self) -> Iterator[list[str]]:
        """The paths of each content hash (``sha256``) that more than one stored image has, in path
        order: exact copies, found through the hash index (no vectors, no links)."""

    @abc.abstractmethod
    def record_decision(self, kind: str, hashes: Sequence[str], decided_at: float | None = None) -> Decision:
        """Record a person's decision about the contents ``hashes`` (see Decision; for "keep",
        ``hashes[0]`` is the one to keep), made at ``decided_at`` (epoch seconds; now by default, a
        migration keeps the original's). A content is in one decision at most: the decisions that
        held any of these contents before are replaced by this one."""

    @abc.abstractmethod
    def decisions_about(self, hashes: Iterable[str]) -> list[Decision]:
        """The decisions that hold any of the contents ``hashes``, oldest first."""

    @abc.abstractmethod
    def forget_decisions(self, hashes: Iterable[str]) -> int:
        """Drop every decision holding any of the contents ``hashes`` (undecided again); how many went."""

    @abc.abstractmethod
    def rename_paths(self, moves: Sequence[tuple[str, str]]) -> int:
        """Give stored images new paths, as ``(old, new)`` pairs applied in order (a file moved).

        The node keeps everything else: its embedding, file state, linked flag and links.
        An image already stored at ``new`` is replaced by the moved one (removed with its
        links). A pair whose ``old`` is not stored is skipped, so a move applied twice is
        harmless. Returns how many images were renamed.
        """

    def move_folder(self, old: str, new: str) -> int:
        """Rename the image at ``old`` and every image below it to the same place below ``new``
        (a folder, or a single file, moved); see :meth:`rename_paths`. Returns how many moved."""
        old, new = old.rstrip(os.sep) or os.sep, new.rstrip(os.sep) or os.sep
        if old == new:
            return 0
        moves = [(state.path, moved_path(state.path, old, new)) for state in self.file_states(under=old)]
        return sum(self.rename_paths(batch) for batch in chunks(moves, MOVE_BATCH))

    # -- a second vector space: changing the model while the active one answers ----------------

    @abc.abstractmethod
    def begin_space(self, model: str, dim: int, weights_file: tuple[str, str] | None = None) -> PendingSpace:
        """Open the pending space for ``model`` (idempotent for the same model: its progress).

        ReindexConflict when another model's space is pending or ``model`` is the active one.
        Search, similar and links keep using the active space until :meth:`switch_space`.
        """

    @abc.abstractmethod
    def pending_space(self) -> PendingSpace | None:
        """The open pending space with its progress; None when none is open."""

    @abc.abstractmethod
    def put_pending(self, items: Sequence[tuple[str, str, np.ndarray]]) -> int:
        """Store ``(path, sha256, vector)`` in the pending space where the image is stored with that
        content (others are stale: ignored). Returns how many were stored; 0 when no space is open."""

    @abc.abstractmethod
    def pending_by_hash(self, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """Pending vectors by content hash, for images whose current content has one: reuse."""

    @abc.abstractmethod
    def paths_without_pending(self, after: str, limit: int) -> list[str]:
        """Up to ``limit`` paths after ``after``, in path order, with no pending vector for their
        current content; empty when no space is open."""

    @abc.abstractmethod
    def switch_space(self, threshold: float, top_k: int) -> int:
        """Make the complete pending space the active one, in one transaction: its vectors, its
        links (the linking rule over the new vectors, computed first), its model record; the old
        vectors and links dropped. ReindexIncomplete unless complete; 0 when no space is open (another
        caller switched) or, where the backend can tell, another caller is switching it. Returns the
        number of links written."""

    @abc.abstractmethod
    def abort_space(self) -> bool:
        """Drop the pending space and its vectors; False when none was open."""

    @abc.abstractmethod
    def stats(self) -> StoreStats: ...

    @abc.abstractmethod
    def file_states(self, under: str | None = None) -> Iterator[FileState]:
        """Every stored image's (path, size, mtime), optionally only below directory ``under``."""

    @abc.abstractmethod
    def count_below(self, folder: str) -> int:
        """How many stored images are at or below ``folder`` (counted through the path index)."""

    @abc.abstractmethod
    def describe(self) -> dict[str, object]:
        """Facts for `imgwatch doctor`: where the store is, its version, index state, counts."""

    # -- copying between stores (imgwatch migrate) -------------------------------------

    @abc.abstractmethod
    def export_images(self, after: str, limit: int) -> list[ExportedImage]:
        """Up to ``limit`` images with paths after ``after``, in this backend's path order."""

    @abc.abstractmethod
    def export_links(self, paths: Sequence[str]) -> list[Link]:
        """Every link with at least one end in ``paths``."""

    @abc.abstractmethod
    def import_images(self, images: Sequence[ExportedImage]) -> None:
        """Upsert images as exported, keeping their linked flag and pick bar (no re-linking)."""

    @abc.abstractmethod
    def import_links(self, links: Sequence[Link]) -> int:
        """Create or update links as given; links to images not stored here are skipped."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def get(self, path: str) -> StoredImage | None:
        return self.get_many([path]).get(path)

    def __enter__(self) -> GraphStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
