"""Level-triggered indexing: make the store match what each path is right now.

Missing → removed from the store. Unchanged (size, mtime, or the content hash
when only the mtime moved) → skipped. New or changed → hashed first: content the
store already holds (a copy, a rename or a move the watcher missed) reuses that
embedding; the rest is decoded and embedded. Then upserted and linked. Whatever
order jobs run in, the store ends up matching the filesystem.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from imgwatch.embedding import Embedded, Embedder, Failed, Missing, Unchanged
from imgwatch.embedding.decode import unreadable_reason
from imgwatch.files import PathFilter, file_signature, resolves_inside, root_of, signature_of
from imgwatch.log import get_logger
from imgwatch.store import FileState, GraphStore, ImageRecord, StoredImage
from imgwatch.workers.reindexer import with_pending_vectors
from imgwatch.workqueue import FailureLedger

log = get_logger("imgwatch.worker")


@dataclass
class IndexOutcome:
    indexed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)  # of ``indexed``: embeddings found by content hash
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    refused: set[str] = field(default_factory=set)  # of ``failed``: outside the roots, so never looked at
    links: int = 0
    embed_seconds: float = 0.0  # reading, decoding and the model (content lookups included)
    store_seconds: float = 0.0  # upserts, links, removals

    def counts(self) -> dict[str, int]:
        return {
            "indexed": len(self.indexed),
            "reused": len(self.reused),
            "unchanged": len(self.unchanged),
            "removed": len(self.removed),
            "failed": len(self.failed),
            "links": self.links,
        }


@dataclass
class LinkPolicy:
    threshold: float
    top_k: int


class Indexer:
    """Makes the store match each path of a job; reports failures to the ledger.

    Only paths below ``roots`` are looked at; any other path (or every path, with no
    roots) is refused and recorded as failed. ``requeue`` puts paths back on the queue
    (files that changed while they were embedded).
    """

    def __init__(
        self,
        embedder: Embedder,
        store: GraphStore,
        failures: FailureLedger,
        requeue: Callable[[Sequence[str]], object],
        links: LinkPolicy,
        path_filter: PathFilter,
        roots: Sequence[str] = (),
    ) -> None:
        self.embedder = embedder
        self.store = store
        self.failures = failures
        self.requeue = requeue
        self.links = links
        self.path_filter = path_filter
        self.roots = list(roots)
        # The model of the pending space while a reindex is under way (workers.spaces sets it): new
        # and changed photos get a vector in it too.
        self.pending: Embedder | None = None

    def index(self, paths: Sequence[str]) -> IndexOutcome:
        outcome = IndexOutcome()
        storable = self._partition_names(paths, outcome)
        # A link below the roots that now leads outside leaves the store (its node is this worker's).
        linked_out = [path for path in outcome.refused if root_of(path, self.roots) is not None]
        stored = self.store.get_many([*storable, *linked_out])
        to_embed, to_remove = self._triage(storable, stored, outcome)
        # Embeds (and their content lookups) before removals: a missed move's new path finds
        # the embedding of the old path that the same job removes.
        started = time.perf_counter()
        embedded = self._embed(to_embed, stored, outcome)
        embedded_at = time.perf_counter()
        self._commit(embedded, [*to_remove, *embedded.vanished], stored, outcome)
        outcome.embed_seconds, outcome.store_seconds = embedded_at - started, time.perf_counter() - embedded_at
        self._record_failures(outcome)
        return outcome

    def below_roots(self, paths: Sequence[str]) -> list[str]:
        """The paths of ``paths`` this worker may read (see _partition_names), each once."""
        return self._partition_names(paths, IndexOutcome())

    def _partition_names(self, paths: Sequence[str], outcome: IndexOutcome) -> list[str]:
        """The paths this worker may index and a store can hold; the others fail (the store is not touched)."""
        storable = []
        for path in dict.fromkeys(os.path.abspath(p) for p in paths):
            if root_of(path, self.roots) is None:
                # Whoever can write to the queue must not make the workers read files elsewhere.
                outcome.failed[path] = (f"refused {path}: it is outside the folders this worker indexes "
                                        f"(general.roots: {', '.join(self.roots) or 'none set'})")
                outcome.refused.add(path)
            elif not resolves_inside(path, self.roots):
                outcome.failed[path] = (f"refused {path}: it is a symbolic link (or lies in a linked folder) leading "
                                        "outside the watched folders; links are followed only within them: "
                                        "watch the target's folder too, or copy the file in")
                outcome.refused.add(path)
            elif _has_utf8_name(path):
                storable.append(path)
            else:
                # Stores and Redis keep paths as UTF-8 text; such a name cannot be a node key.
                outcome.failed[path] = (f"cannot index {path!r}: its name is not valid UTF-8; "
                                        "rename the file (e.g. with `convmv`)")
        return storable

    def _triage(
        self, paths: Sequence[str], stored: Mapping[str, StoredImage], outcome: IndexOutcome
    ) -> tuple[list[str], list[str]]:
        """Look at each file: (to embed, to remove); unchanged and unreadable ones go into ``outcome``."""
        to_embed: list[str] = []
        to_remove: list[str] = []
        for path in paths:
            try:
                st = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                to_remove.append(path)
                continue
            except OSError as exc:
                outcome.failed[path] = unreadable_reason(path, exc)
                continue
            if not self._eligible(path) or not os.path.isfile(path):
                to_remove.append(path)
                continue
            previous = stored.get(path)
            if (previous is not None and self._is_current(previous)
                    and previous.signature == signature_of(st)):
                outcome.unchanged.append(path)
                continue
            to_embed.append(path)
        return to_embed, to_remove

    def _eligible(self, path: str) -> bool:
        return self.path_filter.accepts(path, root_of(path, self.roots))  # below a root: checked on entry

    def _is_current(self, image: StoredImage) -> bool:
        """Embedded by this model and linked (an interrupted job can leave an image unlinked)."""
        return image.model == self.embedder.identity and image.linked

    def _embed(self, paths: Sequence[str], stored: Mapping[str, StoredImage], outcome: IndexOutcome) -> _Embedded:
        """Decode and embed; content seen before (same hash) is only touched, not re-embedded."""
        embedded = _Embedded()
        known = {p: s.sha256 for p, s in stored.items() if self._is_current(s)}
        model = self.embedder.identity
        for result in self.embedder.embed_files(paths, known_sha256=known, reuse=self._stored_embeddings):
            if isinstance(result, Embedded):
                facts = result.facts
                if result.reused:
                    outcome.reused.append(facts.path)
                embedded.records.append(ImageRecord(
                    path=facts.path, sha256=facts.sha256, size=facts.size, mtime_ns=facts.mtime_ns,
                    width=result.width, height=result.height, model=model, embedding=result.vector,
                    ctime_ns=facts.ctime_ns, inode=facts.inode,
                ))
            elif isinstance(result, Unchanged):
                facts = result.facts
                embedded.touched.append(FileState(facts.path, *facts.signature))
                outcome.unchanged.append(facts.path)
            elif isinstance(result, Missing):
                embedded.vanished.append(result.path)
            elif isinstance(result, Failed):
                outcome.failed[result.path] = result.reason
        return embedded

    def _stored_embeddings(self, hashes: Sequence[str]) -> dict[str, tuple[np.ndarray, int, int]]:
        """The embeddings this model gave the same contents before (copies, renames, moves), if stored:
        one store query for a job's files (the embedder asks once per chunk of them).

        Same bytes, same model: the same embedding, so the file needs no decode and no
        forward pass. A store error only costs the reuse: the model runs instead.
        """
        try:
            found = self.store.embeddings_by_hash(hashes, self.embedder.identity)
        except Exception as exc:  # noqa: BLE001 - whatever the backend raises
            log.warning("content_lookup_failed", error=f"{type(exc).__name__}: {exc}", note="embedding them instead")
            return {}
        return {sha256: (stored.vector, stored.width, stored.height) for sha256, stored in found.items()}

    def _commit(
        self, embedded: _Embedded, to_remove: list[str], stored: Mapping[str, StoredImage], outcome: IndexOutcome
    ) -> None:
        """Write the batch to the store: upsert and link, refresh touched files, remove the rest."""
        records = embedded.records
        if records and self.pending is not None:
            records = with_pending_vectors(records, self.pending, self.store)
        if records:
            self.store.upsert(records)
            outcome.links = self.store.link(records, self.links.threshold, self.links.top_k)
            outcome.indexed = [r.path for r in records]
            # The file may have changed or gone while we embedded it, and another worker may
            # have stored the newer state meanwhile, which we just overwrote: look again.
            stale = [r.path for r in records if file_signature(r.path) != r.signature]
            if stale:
                log.info("requeued_changed_files", paths=len(stale))
                self.requeue(stale)
        if embedded.touched:
            self.store.update_file_states(embedded.touched)
        if to_remove:
            self.store.remove(to_remove)
            outcome.removed = to_remove
        # Failed files stay out of the store (a stale node would mislead search).
        failed_stored = [p for p in outcome.failed if p in stored]
        if failed_stored:
            self.store.remove(failed_stored)

    def _record_failures(self, outcome: IndexOutcome) -> None:
        """Record this batch's failures in the ledger and clear the records of paths that are fine now."""
        for path, reason in outcome.failed.items():
            log.warning("file_failed", path=path, reason=reason)
            # A refused path is never stat()ed: the ledger must not tell whether files elsewhere exist.
            signature = None if path in outcome.refused else file_signature(path)
            size, mtime = signature[:2] if signature else (None, None)
            # The ledger counts attempts on the same (size, mtime); a permanent failure is not retried unchanged.
            self.failures.record(path, reason, size, mtime, permanent=_is_permanent(reason))
        self.failures.clear([*outcome.indexed, *outcome.unchanged, *outcome.removed])


# Failures that the same file would fail again with: it cannot be decoded (errors.DecodeError's
# message), or its name cannot be stored. Anything else (cannot read it now, an unexpected error)
# is transient: rescans retry it up to workers.max_attempts times.
_PERMANENT_PREFIXES = ("cannot decode ", "cannot index ")


def _is_permanent(reason: str) -> bool:
    return reason.startswith(_PERMANENT_PREFIXES)


@dataclass
class _Embedded:
    """What embedding a batch produced, before anything is written."""

    records: list[ImageRecord] = field(default_factory=list)
    touched: list[FileState] = field(default_factory=list)  # same content, new mtime: only the facts change
    vanished: list[str] = field(default_factory=list)  # gone since the triage


def _has_utf8_name(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes in the name arrive as lone surrogates
        return False
    return True

