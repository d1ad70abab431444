""":class:`Neo4jGraphStore`: the GraphStore contract on Neo4j, delegating to the package's parts.

Searches go through the vector index (``db.index.vector.queryNodes``), over-fetched and
re-scored exactly with ``vector.similarity.cosine`` on the stored float32 values, so
both backends report the same numbers. The linking rule is
:mod:`imgwatch.store.linking`; this module only supplies its inputs and writes its plan.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import neo4j
import numpy as np

from imgwatch.config import Neo4jConfig
from imgwatch.errors import (
    ImageNotFound,
    ModelMismatchError,
    ReindexConflict,
    ReindexIncomplete,
    StoreError,
    VectorIndexNotReady,
)
from imgwatch.log import get_logger
from imgwatch.store.base import (
    Decision,
    ExportedImage,
    FileState,
    GraphStore,
    ImageRecord,
    Link,
    Match,
    PendingSpace,
    StoredEmbedding,
    StoredImage,
    StoreStats,
    already_active_message,
    checked_decision,
    checked_embedding,
    checked_threshold,
    each_pair_once,
    foreign_record_message,
    incomplete_message,
    independent_rounds,
    pending_conflict_message,
    unit_query,
)
from imgwatch.store.batching import PAGE_SIZE, keyset_pages
from imgwatch.store.linking import Candidate, LinkPlan, choose, plan_links, relinked
from imgwatch.store.neo4j import cypher
from imgwatch.store.neo4j.driver import Connection
from imgwatch.store.neo4j.schema import Schema, model_in, reset_hint, weights_file_in
from imgwatch.store.neo4j.values import (
    as_vector,
    candidate_count,
    candidate_score_bound,
    candidates_from_rows,
    embedding_digest,
    former_links_from_rows,
    score_to_cosine,
    statement_batches,
    under_range,
    within_batch,
)

# Images whose pending-space neighbours switch_space searches per read transaction.
SWITCH_LINK_BATCH = 500

log = get_logger("imgwatch.store")


class Neo4jGraphStore(GraphStore):
    """:class:`GraphStore` on a Neo4j server (5.26 LTS, 2025.x, 2026.x; Community or Enterprise)."""

    backend = "neo4j"

    def __init__(self, settings: Neo4jConfig, password: str | None, *, create: bool = True) -> None:
        db = Connection(settings, password)
        try:
            db.check()
            self._attach(db, create=create)
        except BaseException:
            db.close()
            raise

    @classmethod
    def on_connection(cls, db: Connection, *, create: bool = True) -> Neo4jGraphStore:
        """A store over an already checked connection (the tests pass an in-memory stand-in)."""
        store = cls.__new__(cls)
        store._attach(db, create=create)
        return store

    def _attach(self, db: Connection, *, create: bool) -> None:
        schema = Schema(db, writable=create)
        schema.prepare()
        self._db = db
        self._schema = schema

    # -- the model -----------------------------------------------------------------------

    def ensure_model(self, model: str, dim: int, weights_file: tuple[str, str] | None = None) -> None:
        self._schema.record_model(model, dim, weights_file)

    def recorded_model(self) -> tuple[str, int] | None:
        """The (model, dim) recorded by ensure_model, None before: one short read."""
        return self._db.read(model_in)

    def recorded_weights_file(self) -> tuple[str, str] | None:
        """The weights file recorded with the model: one short read."""
        return self._db.read(weights_file_in)

    # -- writing -------------------------------------------------------------------------

    def upsert(self, records: Sequence[ImageRecord]) -> None:
        """Insert or replace images in one transaction (several UNWIND statements if large).

        Only new or changed embeddings are sent and written; a changed one drops the
        image's links (their scores would be stale) and the caller re-links it.
        """
        self._write_images([(record, None) for record in records])

    def import_images(self, images: Sequence[ExportedImage]) -> None:
        self._write_images([(image.record, image) for image in images])

    def update_file_states(self, states: Sequence[FileState]) -> None:
        rows = [{"path": s.path, "size": s.size, "mtime_ns": s.mtime_ns, "ctime_ns": s.ctime_ns, "inode": s.inode}
                for s in states]
        if rows:
            self._db.write(lambda tx: _run_batches(tx, cypher.UPDATE_FILE_STATES, "rows", rows))

    def remove(self, paths: Iterable[str]) -> int:
        unique = list(dict.fromkeys(paths))
        if not unique:
            return 0

        def delete(tx: neo4j.ManagedTransaction) -> int:
            tx.run(cypher.SERIALISE).consume()
            return sum(tx.run(cypher.REMOVE, paths=batch).single()["removed"]
                       for batch in statement_batches(unique, 1))

        return int(self._db.write(delete))

    def link(self, images: Sequence[ImageRecord], threshold: float, top_k: int) -> int:
        """Replace the links of ``images`` with their picks (see :mod:`imgwatch.store.linking`).

        Candidates are searched in a read transaction before the link lock is taken
        (upsert has committed, so the index sees the batch); pairs within the batch are
        scored from the embeddings in hand. Under the lock: check that nothing searched
        changed since (else search again, rarely), read the former links, plan, write.
        """
        if not images:
            return 0
        checked_threshold(threshold)
        recorded = self.recorded_model()
        if recorded is None:
            return 0
        self._schema.ensure_vector_index(recorded[1])
        batch = {image.path: checked_embedding(image.embedding, recorded[1], image.path) for image in images}
        found = self._db.read(lambda tx: _search(tx, batch, threshold, top_k))

        def relink(tx: neo4j.ManagedTransaction) -> int:
            tx.run(cypher.SERIALISE).consume()
            current = _search(tx, batch, threshold, top_k) if _changed_since(tx, found.seen) else found
            if not current.present:
                return 0
            former = former_links_from_rows(tx.run(cypher.FORMER_LINKS, paths=current.present))
            plan = plan_links(current.candidates, former, threshold, top_k)
            if plan.undecided:  # rare: only a fresh search tells whether the neighbour still picks it
                fresh = _candidates(tx, list(plan.undecided), threshold, top_k)
                plan.settle({neighbour: choose(picks, threshold, top_k) for neighbour, picks in fresh.items()})
            return _write_plan(tx, current.present, plan, top_k)

        return int(self._db.write(relink))

    # -- content reuse and moves ---------------------------------------------------------

    def embeddings_by_hash(self, hashes: Iterable[str], model: str) -> dict[str, StoredEmbedding]:
        unique = list(dict.fromkeys(hashes))

        def fetch(tx: neo4j.ManagedTransaction) -> dict[str, StoredEmbedding]:
            return {
                row["hash"]: StoredEmbedding(as_vector(row["embedding"], row["hash"]), row["width"], row["height"])
                for batch in statement_batches(unique, 1)
                for row in tx.run(cypher.EMBEDDINGS_BY_HASH, hashes=batch, model=model)
            }

        return self._db.read(fetch) if unique else {}

    def same_content_groups(self) -> Iterator[list[str]]:
        rows = self._db.read(lambda tx: [list(row["paths"]) for row in tx.run(cypher.SAME_CONTENT)])
        yield from rows

    # -- a person's decisions about duplicates ---------------------------------------------

    def record_decision(self, kind: str, hashes: Sequence[str], decided_at: float | None = None) -> Decision:
        contents, keep = checked_decision(kind, hashes)
        decided_at = time.time() if decided_at is None else decided_at

        def record(tx: neo4j.ManagedTransaction) -> None:
            tx.run(cypher.FORGET_DECISIONS, hashes=sorted(contents)).consume()
            tx.run(cypher.RECORD_DECISION, kind=kind, hashes=sorted(contents), keep=keep,
                   decided_at=decided_at).consume()

        self._db.write(record)
        return Decision(kind, contents, keep, decided_at)

    def decisions_about(self, hashes: Iterable[str]) -> list[Decision]:
        wanted = sorted(set(hashes))
        rows = self._db.read(lambda tx: list(tx.run(cypher.DECISIONS_ABOUT, hashes=wanted)))
        return [Decision(row["kind"], frozenset(row["hashes"]), row["keep"], float(row["decided_at"])) for row in rows]

    def forget_decisions(self, hashes: Iterable[str]) -> int:
        wanted = sorted(set(hashes))
        return int(self._db.write(lambda tx: tx.run(cypher.FORGET_DECISIONS, hashes=wanted).single()["forgotten"]))

    def rename_paths(self, moves: Sequence[tuple[str, str]]) -> int:
        """One transaction under the link lock (a relink in flight then sees the renamed
        paths as changed and searches again); each round of distinct paths as a whole."""
        rounds = independent_rounds(moves)
        if not rounds:
            return 0

        def rename(tx: neo4j.ManagedTransaction) -> int:
            tx.run(cypher.SERIALISE).consume()
            renamed = 0
            for moving in rounds:
                rows = [{"old": old, "new": new} for old, new in moving]
                for batch in statement_batches(rows, 1):
                    tx.run(cypher.REPLACED_BY_MOVES, moves=batch).consume()
                    renamed += tx.run(cypher.RENAME, moves=batch).single()["renamed"]
                    tx.run(cypher.REORIENT_LINKS, paths=[row["new"] for row in batch]).consume()
            return renamed

        return int(self._db.write(rename))

    # -- the pending space (a re-index to a new model) ------------------------------------

    def begin_space(self, model: str, dim: int, weights_file: tuple[str, str] | None = None) -> PendingSpace:
        self._schema.check_model(model, dim)

        def open_space(tx: neo4j.ManagedTransaction) -> None:
            tx.run(cypher.SERIALISE).consume()
            row = tx.run(cypher.PENDING_STATE).single()
            pending = _pending_of(row)
            if pending is not None and pending[:2] != (model, dim):
                raise ReindexConflict(pending_conflict_message(pending[0], model))
            if pending is None and row is not None and row["model"] == model:
                raise ReindexConflict(already_active_message(model))
            if pending is None:
                path, sha256 = weights_file or (None, None)
                tx.run(cypher.SET_PENDING, model=model, dim=dim, weights_file=path, weights_sha256=sha256).consume()

        self._db.write(open_space)
        self._schema.ensure_pending_index(dim)
        space = self.pending_space()
        assert space is not None
        return space

    def pending_space(self) -> PendingSpace | None:
        return self._db.read(_pending_space)

    def put_pending(self, items: Sequence[tuple[str, str, np.ndarray]]) -> int:
        if not items:
            return 0

        def put(tx: neo4j.ManagedTransaction) -> int:
            pending = _pending_of(tx.run(cypher.PENDING_STATE).single())
            if pending is None:
                return 0  # switched or aborted meanwhile: the job's vectors have no space to go to
            return _put_pending(tx, [(path, sha256, checked_embedding(vector, pending[1], path))
                                     for path, sha256, vector in items], pending[1])

        return int(self._db.write(put))

    def pending_by_hash(self, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        unique = list(dict.fromkeys(hashes))

        def fetch(tx: neo4j.ManagedTransaction) -> dict[str, np.ndarray]:
            if _pending_of(tx.run(cypher.PENDING_STATE).single()) is None:
                return {}
            return {row["hash"]: as_vector(row["embedding"], row["hash"])
                    for batch in statement_batches(unique, 1) for row in tx.run(cypher.PENDING_BY_HASH, hashes=batch)}

        return self._db.read(fetch) if unique else {}

    def paths_without_pending(self, after: str, limit: int) -> list[str]:
        def fetch(tx: neo4j.ManagedTransaction) -> list[str]:
            if _pending_of(tx.run(cypher.PENDING_STATE).single()) is None:
                return []
            return [row["path"] for row in tx.run(cypher.PATHS_WITHOUT_PENDING, after=after, limit=limit)]

        return self._db.read(fetch)

    def switch_space(self, threshold: float, top_k: int) -> int:
        """Links planned from read transactions through the pending index; then, under the link lock,
        brought up to date with what changed since and swapped in with the vectors and the model in
        one transaction. The pending index becomes the (dropped and re-created, if the size changed)
        main one afterwards."""
        checked_threshold(threshold)
        space = self.pending_space()
        if space is None:
            return 0
        if not space.complete:
            raise ReindexIncomplete(incomplete_message(space))
        self._schema.ensure_pending_index(space.dim)
        seen = self._db.read(_pending_hashes)
        plan: LinkPlan[str] = LinkPlan()
        paths = list(seen)
        for start in range(0, len(paths), SWITCH_LINK_BATCH):
            batch = paths[start : start + SWITCH_LINK_BATCH]
            found = self._db.read(lambda tx, batch=batch: _pending_candidates(tx, batch, threshold, top_k))
            batch_plan = plan_links(found, [], threshold, top_k)
            plan.links.update(batch_plan.links)
            plan.pick_bars.update(batch_plan.pick_bars)

        def swap(tx: neo4j.ManagedTransaction) -> int | None:
            tx.run(cypher.SERIALISE).consume()
            now = _pending_space(tx)
            if now is None or (now.model, now.dim) != (space.model, space.dim):
                return None  # another caller switched (or aborted) meanwhile
            if not now.complete:
                raise ReindexIncomplete(incomplete_message(now))
            current = _pending_hashes(tx)
            changed = {path for path, sha256 in current.items() if seen.get(path) != sha256}
            relinked(plan, changed, set(seen) - set(current),
                     lambda keys: _pending_candidates(tx, keys, threshold, top_k),
                     lambda pairs: _pending_scores(tx, pairs), threshold, top_k)
            tx.run(cypher.SWAP_EMBEDDINGS, model=now.model, now=time.time()).consume()
            path, sha256 = now.weights_file or (None, None)
            tx.run(cypher.SET_MODEL, model=now.model, dim=now.dim, weights_file=path, weights_sha256=sha256).consume()
            tx.run(cypher.SET_PENDING, model=None, dim=None, weights_file=None, weights_sha256=None).consume()
            return _write_plan(tx, list(current), plan, top_k)

        written = self._db.write(swap)
        if written is None:
            return 0
        self._schema.drop_pending_index()
        self._schema.ensure_vector_index(space.dim, replace=True)
        log.info("space_switched", store=self._db.location, model=space.model, dim=space.dim, links=written)
        return int(written)

    def abort_space(self) -> bool:
        def drop(tx: neo4j.ManagedTransaction) -> bool:
            tx.run(cypher.SERIALISE).consume()
            if _pending_of(tx.run(cypher.PENDING_STATE).single()) is None:
                return False
            tx.run(cypher.DROP_PENDING_VECTORS).consume()
            tx.run(cypher.SET_PENDING, model=None, dim=None, weights_file=None, weights_sha256=None).consume()
            return True

        if not self._db.write(drop):
            return False
        self._schema.drop_pending_index()
        return True

    # -- reading -------------------------------------------------------------------------

    def get_many(self, paths: Iterable[str]) -> dict[str, StoredImage]:
        unique = list(dict.fromkeys(paths))

        def fetch(tx: neo4j.ManagedTransaction) -> dict[str, StoredImage]:
            return {
                row["path"]: StoredImage(row["path"], row["sha256"], row["size"], row["mtime_ns"], row["width"],
                                         row["height"], row["model"], linked=bool(row["linked"]),
                                         indexed_at=row["indexed_at"], ctime_ns=row["ctime_ns"], inode=row["inode"])
                for batch in statement_batches(unique, 1) for row in tx.run(cypher.GET_MANY, paths=batch)
            }

        return self._db.read(fetch) if unique else {}

    def nearest(self, vector: np.ndarray, k: int, *, exclude: Iterable[str] = ()) -> list[Match]:
        """Top-``k`` by cosine: ANN candidates from the vector index, re-scored exactly."""
        excluded = list(dict.fromkeys(exclude))
        recorded = self.recorded_model()
        if recorded is None or k <= 0:
            return []
        query = unit_query(vector, recorded[1]).tolist()
        try:
            self._schema.ensure_vector_index(recorded[1], wait=False)
        except VectorIndexNotReady:  # being built, e.g. after a switch of model: answer exactly meanwhile
            rows = self._db.read(lambda tx: list(tx.run(cypher.NEAREST_EXACT, vector=query, exclude=excluded, k=k)))
        else:
            rows = self._db.read(lambda tx: list(tx.run(
                cypher.NEAREST, index=cypher.VECTOR_INDEX, candidates=candidate_count(k, len(excluded)),
                vector=query, exclude=excluded, k=k)))
        return [Match(row["path"], score_to_cosine(row["score"])) for row in rows]

    def neighbours(self, path: str) -> list[Match]:
        rows = self._db.read(lambda tx: list(tx.run(cypher.NEIGHBOURS, path=path)))
        if not rows:
            raise ImageNotFound(path)
        return [Match(row["path"], row["score"]) for row in rows if row["path"] is not None]

    def links_at_least(self, threshold: float) -> Iterator[Link]:
        """Pages in (score, a.path, b.path) order, each a range seek on the score index."""
        bar = checked_threshold(threshold)

        def page(after: tuple[float, str, str]) -> list[Link]:
            score, low, high = after
            return self._db.read(lambda tx: [
                Link(row["low"], row["high"], row["score"]) for row in tx.run(
                    cypher.LINKS_AT_LEAST, score=score, a=low, b=high, limit=PAGE_SIZE)])

        def pages() -> Iterator[Link]:
            after = (bar, "", "")  # every path follows "": the first page starts at the bar
            while True:
                links = page(after)
                yield from links
                if len(links) < PAGE_SIZE:
                    return
                after = (links[-1].score, links[-1].a, links[-1].b)

        yield from each_pair_once(pages())

    def stats(self) -> StoreStats:
        def count(tx: neo4j.ManagedTransaction) -> tuple[int, int, tuple[str, int] | None]:
            images = tx.run(cypher.COUNT_IMAGES).single()["count"]
            links = tx.run(cypher.COUNT_LINKS).single()["count"]
            return images, links, model_in(tx)

        return StoreStats.counted(self.backend, self._db.location, *self._db.read(count))

    def describe(self) -> dict[str, object]:
        stats = self.stats()
        return {
            "backend": self.backend,
            "server": self._db.uri,
            "version": self._db.version,
            "edition": self._db.edition,
            "database": self._db.database,
            **self._schema.describe(),
            "images": stats.images,
            "links": stats.links,
            "model": stats.model,
            "dim": stats.dim,
        }

    def file_states(self, under: str | None = None) -> Iterator[FileState]:
        """Every (path, size, mtime) in path order, a page per short read transaction (keyset paging)."""
        bounds = under_range(under)
        if bounds is None:
            yield from keyset_pages(lambda after, limit: self._file_states(cypher.FILE_STATES_ALL, after=after,
                                                                           limit=limit), _path_of)
            return
        directory, prefix, upper = bounds
        yield from self._file_states(cypher.FILE_STATE_AT, path=directory)  # sorts before its descendants
        yield from keyset_pages(lambda after, limit: self._file_states(
            cypher.FILE_STATES_BELOW, after=after, prefix=prefix, upper=upper, limit=limit), _path_of)

    def count_below(self, folder: str) -> int:
        bounds = under_range(folder)
        if bounds is None:
            return int(self._db.read(lambda tx: tx.run(cypher.COUNT_IMAGES).single()["count"]))
        directory, prefix, upper = bounds

        def count(tx: neo4j.ManagedTransaction) -> int:
            at = tx.run(cypher.COUNT_AT, path=directory).single()["count"]
            return int(at + tx.run(cypher.COUNT_BELOW, prefix=prefix, upper=upper).single()["count"])

        return self._db.read(count)

    # -- copying between stores ----------------------------------------------------------

    def export_images(self, after: str, limit: int) -> list[ExportedImage]:
        rows = self._db.read(lambda tx: list(tx.run(cypher.EXPORT_IMAGES, after=after, limit=limit)))
        return [
            ExportedImage(
                ImageRecord(row["path"], row["sha256"], row["size"], row["mtime_ns"], row["width"], row["height"],
                            row["model"], as_vector(row["embedding"], row["path"]), row["ctime_ns"], row["inode"]),
                linked=bool(row["linked"]),
                pick_bar=row["pick_bar"],
                indexed_at=row["indexed_at"],
            )
            for row in rows
        ]

    def export_links(self, paths: Sequence[str]) -> list[Link]:
        unique = list(dict.fromkeys(paths))

        def fetch(tx: neo4j.ManagedTransaction) -> set[Link]:
            return {Link.between(row["path"], row["other"], row["score"])
                    for batch in statement_batches(unique, 1) for row in tx.run(cypher.EXPORT_LINKS, paths=batch)}

        return sorted(self._db.read(fetch)) if unique else []

    def import_links(self, links: Sequence[Link]) -> int:
        rows = [{"a": link.a, "b": link.b, "score": link.score} for link in links if link.a != link.b]
        if not rows:
            return 0
        return int(self._db.write(lambda tx: sum(tx.run(cypher.WRITE_LINKS, links=batch).single()["written"]
                                                 for batch in statement_batches(rows, 1))))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Neo4jGraphStore:
        return self

    # -- helpers -------------------------------------------------------------------------

    def _file_states(self, statement: str, **parameters: object) -> list[FileState]:
        return self._db.read(lambda tx: [FileState(row["path"], row["size"], row["mtime_ns"], row["ctime_ns"],
                                                   row["inode"])
                                         for row in tx.run(statement, parameters)])

    def _write_images(self, images: Sequence[tuple[ImageRecord, ExportedImage | None]]) -> None:
        if images:
            now = time.time()
            self._db.write(lambda tx: _write_images(tx, images, self._db.database, now))


# -- transaction functions (each runs inside one managed transaction) -----------------------


@dataclass
class Found:
    """What a candidate search found for a batch."""

    present: list[str]  # the batch's stored paths
    candidates: dict[str, list[Candidate[str]]]  # present path -> (neighbour, raw cosine)
    seen: dict[str, str | None]  # every path the search relied on -> its embedding digest then


def _search(tx: neo4j.ManagedTransaction, batch: Mapping[str, np.ndarray], threshold: float, top_k: int) -> Found:
    """The batch's candidates: its stored images' index neighbours, plus its pairs scored in Python."""
    stored = {row["path"]: row["digest"] for paths in statement_batches(list(batch), 1)
              for row in tx.run(cypher.PRESENT, paths=paths)}
    present = list(stored)
    seen: dict[str, str | None] = dict(stored)
    if top_k <= 0 or not present:
        return Found(present, {path: [] for path in present}, seen)
    rows = _candidate_rows(tx, present, threshold, top_k)
    seen.update((row["neighbour"], row["digest"]) for row in rows)
    candidates = candidates_from_rows(rows, present)
    # Only vectors that are what the store holds (another worker may have re-upserted one).
    in_hand = {path: batch[path] for path in present if stored[path] == embedding_digest(batch[path])}
    for path, pairs in within_batch(in_hand, threshold).items():
        candidates[path].extend(pairs)
    return Found(present, candidates, seen)


def _candidate_rows(tx: neo4j.ManagedTransaction, paths: list[str], threshold: float,
                    top_k: int) -> list[dict[str, Any]]:
    return [dict(row) for batch in statement_batches(paths, 1) for row in tx.run(
        cypher.CANDIDATES, paths=batch, index=cypher.VECTOR_INDEX, candidates=candidate_count(top_k),
        min_score=candidate_score_bound(threshold))]


def _candidates(tx: neo4j.ManagedTransaction, paths: list[str], threshold: float,
                top_k: int) -> dict[str, list[Candidate[str]]]:
    return candidates_from_rows(_candidate_rows(tx, paths, threshold, top_k), paths)


def _changed_since(tx: neo4j.ManagedTransaction, seen: Mapping[str, str | None]) -> bool:
    """Whether any image a search relied on changed its embedding or vanished since."""
    rows = [{"path": path, "digest": digest} for path, digest in seen.items()]
    return any(list(tx.run(cypher.CHANGED_SINCE, rows=batch)) for batch in statement_batches(rows, 1))


def _write_plan(tx: neo4j.ManagedTransaction, present: list[str], plan: LinkPlan[str], top_k: int) -> int:
    """Drop the batch's links, mark it linked (with its pick bars), write the plan's links."""
    _run_batches(tx, cypher.DROP_LINKS, "paths", present)
    if top_k > 0:
        _run_batches(tx, cypher.MARK_LINKED, "rows", [{"path": p, "bar": plan.pick_bars[p]} for p in present])
    else:  # nothing picked anything: the recorded pick bars stay
        _run_batches(tx, cypher.MARK_LINKED_KEEP_BARS, "paths", present)
    links = [{"a": a, "b": b, "score": score} for (a, b), score in sorted(plan.links.items())]
    # Counted by MERGE: a link to an image removed meanwhile is not written.
    return sum(tx.run(cypher.WRITE_LINKS, links=batch).single()["written"] for batch in statement_batches(links, 1))


def _write_images(tx: neo4j.ManagedTransaction, images: Sequence[tuple[ImageRecord, ExportedImage | None]],
                  database: str, now: float) -> None:
    """Facts for every image; embeddings only for those whose stored digest differs.

    With an ExportedImage (imports) its linked flag, pick bar and indexed_at are set as
    exported; otherwise a new or changed embedding gets indexed_at ``now``.
    """
    recorded = model_in(tx)
    if recorded is None:
        raise StoreError(f"the store in database {database!r} has no embedding model yet; call ensure_model first")
    model, dim = recorded
    rows: dict[str, dict[str, object]] = {}
    vectors: dict[str, np.ndarray] = {}
    for record, exported in images:
        if record.model != model:
            raise ModelMismatchError(foreign_record_message(record.path, record.model, model, reset_hint(database)))
        vectors[record.path] = checked_embedding(record.embedding, dim, record.path)
        rows[record.path] = {
            "path": record.path, "sha256": record.sha256, "size": record.size, "mtime_ns": record.mtime_ns,
            "ctime_ns": record.ctime_ns, "inode": record.inode,
            "width": record.width, "height": record.height, "model": record.model,
            "digest": embedding_digest(vectors[record.path]),
            "linked": None if exported is None else exported.linked,
            "pick_bar": None if exported is None else exported.pick_bar,
            "indexed_at": now if exported is None else exported.indexed_at,
        }
    changed = [row["changed"] for batch in statement_batches(list(rows.values()), 1)
               for row in tx.run(cypher.UPSERT_FACTS, rows=batch)]
    pending = _pending_of(tx.run(cypher.PENDING_STATE).single())
    if pending is not None:  # after the facts: a pending vector is stored for the content they name
        _put_pending(tx, [(record.path, record.sha256, checked_embedding(record.pending_embedding, pending[1],
                                                                         record.path))
                          for record, _ in images if record.pending_embedding is not None], pending[1])
    if not changed:
        return
    embeddings = [{"path": path, "digest": rows[path]["digest"], "linked": rows[path]["linked"],
                   "indexed_at": rows[path]["indexed_at"], "embedding": vectors[path].tolist()}
                  for path in dict.fromkeys(changed)]
    _run_batches(tx, cypher.SET_EMBEDDINGS, "rows", embeddings, floats=dim)
    _run_batches(tx, cypher.DROP_LINKS, "paths", changed)  # a new embedding makes the old scores stale


def _pending_of(row: Mapping[str, Any] | None) -> tuple[str, int, tuple[str, str] | None] | None:
    """A PENDING_STATE row's pending space: (model, dim, weights file); None when none is open."""
    if row is None or row["pending_model"] is None or row["pending_dim"] is None:
        return None
    path, sha256 = row["pending_weights_file"], row["pending_weights_sha256"]
    return str(row["pending_model"]), int(row["pending_dim"]), None if path is None or sha256 is None else (
        str(path), str(sha256))


def _pending_space(tx: neo4j.ManagedTransaction) -> PendingSpace | None:
    pending = _pending_of(tx.run(cypher.PENDING_STATE).single())
    if pending is None:
        return None
    total = tx.run(cypher.COUNT_IMAGES).single()["count"]
    return PendingSpace(*pending, embedded=tx.run(cypher.COUNT_PENDING).single()["count"], total=total)


def _put_pending(tx: neo4j.ManagedTransaction, items: Sequence[tuple[str, str, np.ndarray]], dim: int) -> int:
    """Checked (path, sha256, vector) items into the pending space; returns how many were stored."""
    rows = [{"path": path, "sha256": sha256, "embedding": vector.tolist(), "digest": embedding_digest(vector)}
            for path, sha256, vector in items]
    return sum(tx.run(cypher.PUT_PENDING, rows=batch).single()["stored"] for batch in statement_batches(rows, dim))


def _pending_hashes(tx: neo4j.ManagedTransaction) -> dict[str, str | None]:
    """Every image's path -> the content hash of its pending vector, in path order (keyset pages)."""
    found: dict[str, str | None] = {}
    after = ""
    while True:
        rows = list(tx.run(cypher.PENDING_PAGE, after=after, limit=PAGE_SIZE))
        found.update((row["path"], row["pending"]) for row in rows)
        if len(rows) < PAGE_SIZE:
            return found
        after = rows[-1]["path"]


def _pending_candidates(tx: neo4j.ManagedTransaction, paths: list[str], threshold: float,
                        top_k: int) -> dict[str, list[Candidate[str]]]:
    rows = [row for batch in statement_batches(paths, 1) for row in tx.run(
        cypher.PENDING_CANDIDATES, paths=batch, index=cypher.NEXT_VECTOR_INDEX, candidates=candidate_count(top_k),
        min_score=candidate_score_bound(threshold))]
    return candidates_from_rows(rows, paths)


def _pending_scores(tx: neo4j.ManagedTransaction, pairs: list[tuple[str, str]]) -> list[float]:
    """The cosine of each pair's pending vectors, in order."""
    rows = [{"a": a, "b": b} for a, b in pairs]
    found = {(row["a"], row["b"]): score_to_cosine(row["score"])
             for batch in statement_batches(rows, 1) for row in tx.run(cypher.PENDING_SCORES, pairs=batch)}
    return [found[pair] for pair in pairs]


def _run_batches(tx: neo4j.ManagedTransaction, statement: str, name: str, items: Sequence[object],
                 *, floats: int = 1) -> None:
    for batch in statement_batches(items, floats):
        tx.run(statement, {name: batch}).consume()


def _path_of(state: FileState) -> str:
    return state.path
