"""Level-triggered indexing: make the store match what each path is right now.

Missing → removed from the store. Unchanged (size, mtime, or the content hash
when only the mtime moved) → skipped. New or changed → decoded, embedded,
upserted and linked. Whatever order jobs run in, the store ends up matching
the filesystem.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from imgwatch.embedding import Embedded, Embedder, Failed, Missing, Unchanged
from imgwatch.files import PathFilter, file_signature, root_of
from imgwatch.log import get_logger
from imgwatch.store import FileState, GraphStore, ImageRecord
from imgwatch.workqueue import WorkQueue

log = get_logger("imgwatch.worker")


@dataclass
class IndexOutcome:
    indexed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    links: int = 0

    def counts(self) -> dict[str, int]:
        return {
            "indexed": len(self.indexed),
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
    def __init__(
        self,
        embedder: Embedder,
        store: GraphStore,
        work_queue: WorkQueue,
        links: LinkPolicy,
        path_filter: PathFilter,
        roots: Sequence[str] = (),
    ) -> None:
        self.embedder = embedder
        self.store = store
        self.work_queue = work_queue
        self.links = links
        self.path_filter = path_filter
        self.roots = list(roots)

    def _eligible(self, path: str) -> bool:
        # Without roots in this worker's config only the extension is known to apply.
        root = root_of(path, self.roots)
        if root is None:
            return self.path_filter.has_image_extension(path)
        return self.path_filter.accepts(path, root)

    def index(self, paths: Sequence[str]) -> IndexOutcome:
        outcome = IndexOutcome()
        unique = list(dict.fromkeys(os.path.abspath(p) for p in paths))
        model = self.embedder.identity
        storable = []
        for path in unique:
            if _has_utf8_name(path):
                storable.append(path)
            else:
                # Stores and Redis keep paths as UTF-8 text; such a name cannot be a node key.
                outcome.failed[path] = (f"cannot index {path!r}: its name is not valid UTF-8; "
                                        "rename the file (e.g. with `convmv`)")
        stored = self.store.get_many(storable)

        to_remove: list[str] = []
        to_embed: list[str] = []
        for path in storable:
            try:
                st = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                to_remove.append(path)
                continue
            except OSError as exc:
                outcome.failed[path] = f"cannot read {path}: {exc.strerror} (check its permissions)"
                continue
            if not self._eligible(path) or not os.path.isfile(path):
                to_remove.append(path)
                continue
            previous = stored.get(path)
            if (previous is not None and previous.model == model and previous.linked
                    and (previous.size, previous.mtime_ns) == (st.st_size, st.st_mtime_ns)):
                outcome.unchanged.append(path)
                continue
            to_embed.append(path)

        # Content seen before needs no decoding, unless an interrupted job left it unlinked.
        known = {p: s.sha256 for p, s in stored.items() if s.model == model and s.linked}
        records: list[ImageRecord] = []
        touched: list[FileState] = []
        for result in self.embedder.embed_files(to_embed, known_sha256=known):
            if isinstance(result, Embedded):
                facts = result.facts
                records.append(ImageRecord(
                    path=facts.path, sha256=facts.sha256, size=facts.size, mtime_ns=facts.mtime_ns,
                    width=result.width, height=result.height, model=model, embedding=result.vector,
                ))
            elif isinstance(result, Unchanged):
                facts = result.facts
                touched.append(FileState(facts.path, facts.size, facts.mtime_ns))
                outcome.unchanged.append(facts.path)
            elif isinstance(result, Missing):
                to_remove.append(result.path)
            elif isinstance(result, Failed):
                outcome.failed[result.path] = result.reason

        if records:
            self.store.upsert(records)
            outcome.links = self.store.link(records, self.links.threshold, self.links.top_k)
            outcome.indexed = [r.path for r in records]
            # The file may have changed or gone while we embedded it, and another worker may
            # have stored the newer state meanwhile, which we just overwrote: look again.
            stale = [r.path for r in records if file_signature(r.path) != (r.size, r.mtime_ns)]
            if stale:
                log.info("requeued_changed_files", paths=len(stale))
                self.work_queue.enqueue_paths(stale, batch_size=len(stale))
        if touched:
            self.store.update_file_states(touched)
        if to_remove:
            self.store.remove(to_remove)
            outcome.removed = to_remove
        # Failed files stay out of the store (a stale node would mislead search).
        failed_stored = [p for p in outcome.failed if p in stored]
        if failed_stored:
            self.store.remove(failed_stored)

        for path, reason in outcome.failed.items():
            log.warning("file_failed", path=path, reason=reason)
            size, mtime = file_signature(path) or (None, None)
            self.work_queue.record_failure(path, reason, size, mtime)
        self.work_queue.clear_failures([*outcome.indexed, *outcome.unchanged, *outcome.removed])
        return outcome


def _has_utf8_name(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes in the name arrive as lone surrogates
        return False
    return True

