"""The Neo4j graph store: the production backend, same contract as the embedded one.

Schema (created idempotently when a store is opened for writing):

- ``(:Image {path})`` nodes under a uniqueness constraint on ``path``, with the file
  facts, ``embedding`` (float32, written by ``db.create.setNodeVectorProperty``),
  ``embedding_digest`` (to tell a changed embedding from a re-upsert of the same one),
  ``linked`` and ``pick_bar`` (see :meth:`GraphStore.link`);
- ``(:Image)-[:SIMILAR_TO {score}]->(:Image)``, stored once per pair from the
  lexicographically smaller path to the larger; ``score`` is the raw cosine;
- one ``(:ImgwatchStore {key: 'store'})`` node recording the model, its dimension and
  the schema version;
- a cosine vector index on ``Image.embedding``, searched through
  ``db.index.vector.queryNodes``; candidates are then re-scored exactly with
  ``vector.similarity.cosine`` (on the stored float32 values, not the index's
  quantized copy) so both backends report the same numbers.

The index does not see writes of the transaction querying it ("Changes made within
the same transaction are not visible to the index", vector-indexes page below):
``upsert`` commits the nodes, ``link`` runs in a second transaction and scores pairs
within its batch directly.

Neo4j reports cosine similarity as ``(1 + cos) / 2`` in [0, 1], both from the index
and from ``vector.similarity.cosine``
(https://neo4j.com/docs/cypher-manual/current/indexes/semantic-indexes/vector-indexes/,
"Cosine and Euclidean similarity functions"): thresholds are converted going in
(:func:`cosine_to_score`) and scores coming out (:func:`score_to_cosine`).

Transient failures (server restart, leader switch, deadlock between two workers)
are retried by the driver's managed transactions with exponential backoff for up to
``neo4j.retry_seconds``; only then does an operation fail, with StoreUnavailable.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import neo4j
import numpy as np
from neo4j.exceptions import (
    AuthError,
    ClientError,
    ConnectionAcquisitionTimeoutError,
    DriverError,
    Neo4jError,
    ServiceUnavailable,
    SessionExpired,
)

from imgwatch.config import NEO4J_PASSWORD_ENV, Neo4jConfig
from imgwatch.store.base import (
    ExportedImage,
    FileState,
    GraphStore,
    ImageNotFound,
    ImageRecord,
    Link,
    Match,
    ModelMismatchError,
    StoredImage,
    StoreError,
    StoreMissing,
    StoreStats,
    StoreUnavailable,
    checked_embedding,
    foreign_record_message,
    model_mismatch_message,
    unit_query,
)
from imgwatch.store.linking import ordered as ordered_pair

T = TypeVar("T")

SCHEMA_VERSION = 1
MINIMUM_VERSION = (5, 26)
VECTOR_INDEX = "imgwatch_image_embedding"
PATH_CONSTRAINT = "imgwatch_image_path"
STORE_CONSTRAINT = "imgwatch_store_key"
INDEX_ONLINE_TIMEOUT_S = 600

# HNSW answers are approximate and depend on k (neo4j/neo4j#13542), and the index
# quantizes vectors by default since 5.23, so its scores are approximate too: ask for
# more candidates than needed, re-score them exactly, keep the best.
OVERFETCH_FACTOR = 3
MIN_CANDIDATES = 30
# Bounds for one UNWIND statement: rows, and floats (a float is 9 bytes in Bolt's
# PackStream, so 1M floats is about 9 MB per message).
MAX_ROWS_PER_STATEMENT = 1000
MAX_FLOATS_PER_STATEMENT = 1_000_000
_PAGE_SIZE = 2000
# Scores are recomputed from the same float32 vectors; allow for summation-order noise.
_SCORE_EPSILON = 1e-6


def cosine_to_score(cosine: float) -> float:
    """A raw cosine in [-1, 1] as Neo4j's cosine similarity score in [0, 1]."""
    return (1.0 + cosine) / 2.0


def score_to_cosine(score: float) -> float:
    """Neo4j's cosine similarity score in [0, 1] back to the raw cosine in [-1, 1]."""
    return 2.0 * score - 1.0


def statement_batches(items: Sequence[T], floats_per_item: int) -> Iterator[Sequence[T]]:
    """Split ``items`` into consecutive UNWIND batches within both statement bounds."""
    size = max(1, min(MAX_ROWS_PER_STATEMENT, MAX_FLOATS_PER_STATEMENT // max(1, floats_per_item)))
    for start in range(0, len(items), size):
        yield items[start : start + size]


def candidate_count(k: int, excluded: int = 0) -> int:
    """How many ANN candidates to fetch for ``k`` results after dropping ``excluded`` ones."""
    wanted = k + excluded
    return max(wanted * OVERFETCH_FACTOR, wanted + MIN_CANDIDATES)


def parse_version(text: str) -> tuple[int, ...]:
    """'5.26.3' -> (5, 26, 3); '2025.10.1' -> (2025, 10, 1); suffixes like '-aura' ignored."""
    return tuple(int(part) for part in re.findall(r"\d+", text.split("-")[0])[:3])


def _digest(vector: np.ndarray) -> str:
    return hashlib.blake2b(vector.astype("<f4").tobytes(), digest_size=16).hexdigest()


# -- Cypher --------------------------------------------------------------------------
# Checked against the Cypher manual (5 and 25): CREATE CONSTRAINT/VECTOR INDEX ... IF NOT
# EXISTS, db.awaitIndex, db.index.vector.queryNodes, vector.similarity.cosine (5.18+).

_UPSERT = """
UNWIND $rows AS row
MERGE (n:Image {path: row.path})
WITH n, row, coalesce(n.embedding_digest = row.digest, false) AS same
SET n.sha256 = row.sha256, n.size = row.size, n.mtime_ns = row.mtime_ns,
    n.width = row.width, n.height = row.height, n.model = row.model,
    n.embedding_digest = row.digest,
    n.linked = CASE WHEN row.linked IS NULL THEN coalesce(n.linked, false) AND same ELSE row.linked END,
    n.pick_bar = CASE WHEN row.linked IS NULL THEN n.pick_bar ELSE row.pick_bar END
WITH n, row, same
CALL db.create.setNodeVectorProperty(n, 'embedding', row.embedding)
WITH row, same
WHERE NOT same
RETURN row.path AS changed
"""

_CANDIDATES = """
UNWIND $paths AS path
MATCH (n:Image {path: path})
CALL db.index.vector.queryNodes($index, $candidates, n.embedding) YIELD node
WITH path, n, node
WHERE node <> n
WITH path, node.path AS neighbour, vector.similarity.cosine(n.embedding, node.embedding) AS score
WHERE score >= $min_score
RETURN path, neighbour, score
"""

_PAIRS_WITHIN = """
UNWIND $paths AS path
MATCH (n:Image {path: path})
UNWIND $paths AS other
WITH n, path, other
WHERE path < other
MATCH (m:Image {path: other})
WITH path, other, vector.similarity.cosine(n.embedding, m.embedding) AS score
WHERE score >= $min_score
RETURN path, other, score
"""

_FORMER_LINKS = """
UNWIND $paths AS path
MATCH (n:Image {path: path})-[:SIMILAR_TO]-(o:Image)
WHERE NOT o.path IN $paths
RETURN o.path AS outside, path AS inside, o.pick_bar AS bar,
       vector.similarity.cosine(n.embedding, o.embedding) AS score
"""

_DROP_LINKS = """
MATCH (n:Image)-[r:SIMILAR_TO]-()
WHERE n.path IN $paths
WITH DISTINCT r
DELETE r
"""

# Link and remove transactions take this lock first, so they run one at a time as in the
# embedded store: without it, a relink reading its image's links (read committed) could
# drop a link another worker committed after that read, and nothing would restore it.
_SERIALISE = "MATCH (s:ImgwatchStore {key: 'store'}) SET s.write_seq = coalesce(s.write_seq, 0) + 1"

_MARK_LINKED = """
UNWIND $rows AS row
MATCH (n:Image {path: row.path})
SET n.linked = true, n.pick_bar = row.bar
"""

# The caller orders each pair (a < b), so a pair always has the same direction and
# MERGE finds the link another worker made. When MERGE has to create a relationship it
# first locks both end nodes and looks again ("LockingMerge", 5.x; "MergeInto", 2025.11+:
# https://neo4j.com/docs/cypher-manual/current/planning-and-tuning/operators/operators-detail/),
# so concurrent workers cannot both create one pair. Locks taken out of order can
# deadlock; that is a TransientError, which execute_write retries.
_WRITE_LINKS = """
UNWIND $links AS link
MATCH (a:Image {path: link.a})
MATCH (b:Image {path: link.b})
MERGE (a)-[r:SIMILAR_TO]->(b)
SET r.score = link.score
RETURN count(r) AS written
"""


class Neo4jGraphStore(GraphStore):
    """:class:`GraphStore` on a Neo4j server (5.26 LTS, 2025.x, 2026.x; Community or Enterprise)."""

    backend = "neo4j"

    def __init__(self, settings: Neo4jConfig, password: str | None, *, create: bool = True) -> None:
        self._settings = settings
        self._uri = settings.uri
        self._database = settings.database
        auth = (settings.user, password) if password is not None else None
        try:
            self._driver = neo4j.GraphDatabase.driver(
                settings.uri,
                auth=auth,
                connection_timeout=settings.connect_timeout,
                connection_acquisition_timeout=settings.connect_timeout * 2,
                max_transaction_retry_time=settings.retry_seconds,
                user_agent="imgwatch",
            )
        except (DriverError, ValueError) as exc:
            raise StoreError(f"neo4j.uri {settings.uri!r} is not usable: {exc}") from None
        # queryNodes is deprecated in Cypher 25 from 2026.04 but still works; the driver would
        # log that notice for every query. Filtered here rather than with the driver's
        # server-side filter, which pre-5.7 servers reject before we can say "too old".
        logging.getLogger("neo4j.notifications").setLevel(logging.ERROR)
        self._bookmarks = neo4j.GraphDatabase.bookmark_manager()
        self._writable = create
        self._version = ""
        self._edition = ""
        self._index_dim: int | None = None
        try:
            self._connect_checked()
            self._prepare(create)
        except BaseException:
            self._driver.close()
            raise

    # -- connecting ------------------------------------------------------------------

    def _connect_checked(self) -> None:
        """One attempt, no retries: a wrong URI, password or database fails within seconds."""
        try:
            with _quiet_driver_log():
                self._driver.verify_connectivity()
            with self._session() as session:
                record = session.run(
                    "CALL dbms.components() YIELD name, versions, edition "
                    "WHERE name = 'Neo4j Kernel' RETURN versions[0] AS version, edition"
                ).single()
        except AuthError:
            raise StoreError(
                f"Neo4j at {self._uri} refused user {self._settings.user!r}: wrong user or password; "
                f"set {NEO4J_PASSWORD_ENV} or neo4j.password_file (and neo4j.user)"
            ) from None
        except (ServiceUnavailable, SessionExpired, OSError) as exc:
            raise StoreUnavailable(
                f"cannot reach Neo4j at {self._uri} ({_reason(exc)}); check that the server is running "
                "and neo4j.uri (IMGWATCH_NEO4J_URI) is right"
            ) from None
        except ClientError as exc:
            if "DatabaseNotFound" in (exc.code or ""):
                raise StoreError(
                    f"Neo4j at {self._uri} has no database {self._database!r}; create it "
                    f"(CREATE DATABASE {self._database}, Enterprise Edition) or set neo4j.database "
                    "(Community Edition has only \"neo4j\")"
                ) from None
            raise StoreError(f"Neo4j at {self._uri}: {_reason(exc)}") from None
        except (Neo4jError, DriverError) as exc:
            if exc.is_retryable():  # e.g. the database is still starting
                raise StoreUnavailable(f"Neo4j at {self._uri} is not ready ({_reason(exc)}); try again") from None
            raise StoreError(f"Neo4j at {self._uri}: {_reason(exc)}") from None
        if record is None:
            raise StoreError(f"Neo4j at {self._uri} did not report its version; is it a Neo4j server?")
        self._version, self._edition = str(record["version"]), str(record["edition"])
        if parse_version(self._version) < MINIMUM_VERSION:
            raise StoreError(
                f"Neo4j at {self._uri} is version {self._version}; imgwatch needs 5.26 LTS or newer "
                "(2025.x and 2026.x work too): upgrade the server"
            )

    def _prepare(self, create: bool) -> None:
        """Create the schema (idempotent, safe for concurrent openers) or, read-only, check it exists."""
        if create:
            self._schema(
                f"CREATE CONSTRAINT {PATH_CONSTRAINT} IF NOT EXISTS FOR (n:Image) REQUIRE n.path IS UNIQUE"
            )
            self._schema(
                f"CREATE CONSTRAINT {STORE_CONSTRAINT} IF NOT EXISTS FOR (s:ImgwatchStore) REQUIRE s.key IS UNIQUE"
            )
            row = self._write(lambda tx: tx.run(
                "MERGE (s:ImgwatchStore {key: 'store'}) ON CREATE SET s.schema_version = $version "
                "RETURN s.schema_version AS version", version=SCHEMA_VERSION,
            ).single())
        else:
            row = self._read(lambda tx: tx.run(
                "MATCH (s:ImgwatchStore {key: 'store'}) RETURN s.schema_version AS version").single())
            if row is None:
                raise StoreMissing(
                    f"database {self._database!r} at {self._uri} holds no imgwatch store yet; start "
                    "`imgwatch run FOLDER` with store = \"neo4j\", or check neo4j.uri and neo4j.database"
                )
        version = row["version"]
        if version is not None and version > SCHEMA_VERSION:
            raise StoreError(
                f"the imgwatch store in {self._database!r} at {self._uri} has schema version {version}, "
                f"newer than this imgwatch understands ({SCHEMA_VERSION}); upgrade imgwatch"
            )
        recorded = self._recorded_model()
        if create and recorded is not None:
            self._ensure_vector_index(recorded[1])

    # -- GraphStore -----------------------------------------------------------------

    def ensure_model(self, model: str, dim: int) -> None:
        if not model or dim <= 0:
            raise StoreError(f"invalid embedding model {model!r} with dim {dim}")

        def record_model(tx: neo4j.ManagedTransaction) -> None:
            row = tx.run("MERGE (s:ImgwatchStore {key: 'store'}) RETURN s.model AS model, s.dim AS dim").single()
            recorded = (row["model"], row["dim"])
            if recorded == (model, dim):
                return
            if recorded[0] is not None:
                count = tx.run("MATCH (n:Image) RETURN count(n) AS images").single()["images"]
                if count:
                    raise ModelMismatchError(model_mismatch_message(
                        recorded[0], recorded[1], count, model, dim,
                        f"point neo4j.database at an empty database, or delete imgwatch's nodes from "
                        f"{self._database!r} (MATCH (n:Image) CALL (n) {{ DETACH DELETE n }} IN TRANSACTIONS)",
                    ))
            tx.run("MATCH (s:ImgwatchStore {key: 'store'}) SET s.model = $model, s.dim = $dim", model=model, dim=dim)

        self._write(record_model)
        self._ensure_vector_index(dim, replace=True)

    def upsert(self, records: Sequence[ImageRecord]) -> None:
        """Insert or replace images in one transaction (several UNWIND statements if large).

        A changed embedding drops the image's links (their scores would be stale);
        the caller re-creates them with ``link``.
        """
        self._write_images([(record, None) for record in records])

    def update_file_states(self, states: Sequence[FileState]) -> None:
        if not states:
            return
        rows = [{"path": s.path, "size": s.size, "mtime_ns": s.mtime_ns} for s in states]

        def update(tx: neo4j.ManagedTransaction) -> None:
            for batch in statement_batches(rows, 1):
                tx.run("UNWIND $rows AS row MATCH (n:Image {path: row.path}) "
                       "SET n.size = row.size, n.mtime_ns = row.mtime_ns", rows=batch).consume()

        self._write(update)

    def remove(self, paths: Iterable[str]) -> int:
        unique = list(dict.fromkeys(paths))
        if not unique:
            return 0

        def delete(tx: neo4j.ManagedTransaction) -> int:
            tx.run(_SERIALISE).consume()
            removed = 0
            for batch in statement_batches(unique, 1):
                removed += tx.run("UNWIND $paths AS path MATCH (n:Image {path: path}) "
                                  "DETACH DELETE n RETURN count(*) AS removed", paths=batch).single()["removed"]
            return removed

        return int(self._write(delete))

    def get_many(self, paths: Iterable[str]) -> dict[str, StoredImage]:
        unique = list(dict.fromkeys(paths))

        def fetch(tx: neo4j.ManagedTransaction) -> dict[str, StoredImage]:
            found: dict[str, StoredImage] = {}
            for batch in statement_batches(unique, 1):
                for row in tx.run(
                    "UNWIND $paths AS path MATCH (n:Image {path: path}) "
                    "RETURN n.path AS path, n.sha256 AS sha256, n.size AS size, n.mtime_ns AS mtime_ns, "
                    "n.width AS width, n.height AS height, n.model AS model, n.linked AS linked",
                    paths=batch,
                ):
                    found[row["path"]] = StoredImage(
                        row["path"], row["sha256"], row["size"], row["mtime_ns"], row["width"], row["height"],
                        row["model"], linked=bool(row["linked"]),
                    )
            return found

        return self._read(fetch) if unique else {}

    def nearest(self, vector: np.ndarray, k: int, *, exclude: Iterable[str] = ()) -> list[Match]:
        """Top-``k`` by cosine: ANN candidates from the vector index, re-scored exactly."""
        excluded = list(dict.fromkeys(exclude))
        recorded = self._recorded_model()
        if recorded is None or k <= 0:
            return []
        query = unit_query(vector, recorded[1]).tolist()
        self._ensure_vector_index(recorded[1])

        def search(tx: neo4j.ManagedTransaction) -> list[Match]:
            rows = tx.run(
                """
                CALL db.index.vector.queryNodes($index, $candidates, $vector) YIELD node
                WITH node
                WHERE NOT node.path IN $exclude
                WITH node.path AS path, vector.similarity.cosine($vector, node.embedding) AS score
                RETURN path, score ORDER BY score DESC, path LIMIT $k
                """,
                index=VECTOR_INDEX, candidates=candidate_count(k, len(excluded)), vector=query,
                exclude=excluded, k=k,
            )
            return [Match(row["path"], score_to_cosine(row["score"])) for row in rows]

        return self._read(search)

    def link(self, images: Sequence[ImageRecord], threshold: float, top_k: int) -> int:
        """Replace the links of ``images`` with their best matches among all stored images.

        Same rules as the embedded store: each image picks up to ``top_k`` neighbours
        with cosine >= ``threshold``; a former neighbour keeps its link when it would
        still pick the image (its recorded pick bar is met, or a fresh search finds it).
        Candidates come from the vector index (over-fetched, re-scored exactly); pairs
        inside the batch are scored directly, so they link even if the index lags.
        Runs after ``upsert`` committed, in one write transaction of its own.
        """
        if not images:
            return 0
        if not -1.0 <= threshold <= 1.0:  # also refuses NaN
            raise StoreError(f"link threshold must be a cosine in [-1, 1], got {threshold}")
        recorded = self._recorded_model()
        if recorded is None:
            return 0
        self._ensure_vector_index(recorded[1])
        paths = list(dict.fromkeys(image.path for image in images))
        min_score = cosine_to_score(threshold) - _SCORE_EPSILON

        def relink(tx: neo4j.ManagedTransaction) -> int:
            tx.run(_SERIALISE).consume()
            present = [row["path"] for row in tx.run(
                "UNWIND $paths AS path MATCH (n:Image {path: path}) RETURN path", paths=paths)]
            if not present:
                return 0
            best: dict[tuple[str, str], float] = {}
            bars: dict[str, float] = {}
            if top_k > 0:
                picks = self._picks(tx, present, top_k, min_score, within=True)
                for source in present:
                    chosen = picks.get(source, [])
                    bars[source] = chosen[-1][1] if len(chosen) == top_k else threshold
                    for neighbour, cosine in chosen:
                        best[ordered_pair(source, neighbour)] = cosine
                undecided: dict[str, set[str]] = {}
                for row in tx.run(_FORMER_LINKS, paths=present):
                    outside, inside = row["outside"], row["inside"]
                    cosine = score_to_cosine(row["score"])
                    bar = -1.0 if row["bar"] is None else row["bar"]
                    if cosine >= max(bar, threshold) - _SCORE_EPSILON:
                        best.setdefault(ordered_pair(outside, inside), cosine)
                    elif cosine >= threshold:
                        undecided.setdefault(outside, set()).add(inside)
                if undecided:
                    # Below the neighbour's old bar but above the threshold: only a fresh
                    # search can tell whether it still picks the image.
                    fresh = self._picks(tx, list(undecided), top_k, min_score, within=False)
                    for outside, inside_set in undecided.items():
                        for neighbour, cosine in fresh.get(outside, []):
                            if neighbour in inside_set:
                                best.setdefault(ordered_pair(outside, neighbour), cosine)
            tx.run(_DROP_LINKS, paths=present).consume()
            if top_k > 0:
                tx.run(_MARK_LINKED, rows=[{"path": p, "bar": bars[p]} for p in present]).consume()
            else:  # nothing picked: the pick bars stay as they were
                tx.run("UNWIND $paths AS path MATCH (n:Image {path: path}) SET n.linked = true",
                       paths=present).consume()
            links = [{"a": a, "b": b, "score": score} for (a, b), score in sorted(best.items())]
            # Counted by MERGE, not here: a link to an image removed meanwhile is not written.
            return sum(tx.run(_WRITE_LINKS, links=batch).single()["written"] for batch in statement_batches(links, 1))

        return int(self._write(relink))

    def _picks(self, tx: neo4j.ManagedTransaction, paths: list[str], top_k: int, min_score: float,
               *, within: bool) -> dict[str, list[tuple[str, float]]]:
        """Each path's top_k neighbours (path, cosine) above the threshold, best first."""
        found: dict[str, dict[str, float]] = {path: {} for path in paths}
        for row in tx.run(_CANDIDATES, paths=paths, index=VECTOR_INDEX, candidates=candidate_count(top_k),
                          min_score=min_score):
            found[row["path"]][row["neighbour"]] = score_to_cosine(row["score"])
        if within:
            for row in tx.run(_PAIRS_WITHIN, paths=paths, min_score=min_score):
                cosine = score_to_cosine(row["score"])
                found[row["path"]][row["other"]] = cosine
                found[row["other"]][row["path"]] = cosine
        return {
            path: sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:top_k]
            for path, scores in found.items()
        }

    def neighbours(self, path: str) -> list[Match]:
        def fetch(tx: neo4j.ManagedTransaction) -> list[Any] | None:
            rows = list(tx.run(
                "MATCH (n:Image {path: $path}) OPTIONAL MATCH (n)-[r:SIMILAR_TO]-(m:Image) "
                "RETURN m.path AS path, r.score AS score ORDER BY score DESC, path", path=path,
            ))
            return rows or None

        rows = self._read(fetch)
        if rows is None:
            raise ImageNotFound(path)
        return [Match(row["path"], row["score"]) for row in rows if row["path"] is not None]

    def stats(self) -> StoreStats:
        def count(tx: neo4j.ManagedTransaction) -> tuple[int, int, tuple[str, int] | None]:
            images = tx.run("MATCH (n:Image) RETURN count(n) AS c").single()["c"]
            links = tx.run("MATCH (:Image)-[r:SIMILAR_TO]->(:Image) RETURN count(r) AS c").single()["c"]
            return images, links, _model_in(tx)

        images, links, recorded = self._read(count)
        return StoreStats(
            backend=self.backend,
            location=f"{self._uri} database {self._database}",
            images=images,
            links=links,
            model=recorded[0] if recorded else None,
            dim=recorded[1] if recorded else None,
        )

    def describe(self) -> dict[str, object]:
        stats = self.stats()
        indexes = self._command("SHOW VECTOR INDEXES YIELD name, state, populationPercent WHERE name = $name "
                                "RETURN state, populationPercent", name=VECTOR_INDEX)
        constraints = self._command("SHOW CONSTRAINTS YIELD name WHERE name = $name RETURN name",
                                    name=PATH_CONSTRAINT)
        index = indexes[0] if indexes else None
        return {
            "backend": self.backend,
            "server": self._uri,
            "version": self._version,
            "edition": self._edition,
            "database": self._database,
            "path_constraint": "present" if constraints else "MISSING",
            "vector_index": VECTOR_INDEX,
            "index_state": index["state"] if index else "MISSING (created when a worker starts)",
            "index_population": f"{index['populationPercent']:.1f}%" if index else "-",
            "images": stats.images,
            "links": stats.links,
            "model": stats.model,
            "dim": stats.dim,
        }

    def file_states(self, under: str | None = None) -> Iterator[FileState]:
        """Every (path, size, mtime) in path order, a page per short read transaction (keyset paging)."""
        directory = None if under is None else under.rstrip("/")
        if directory:
            query = ("MATCH (n:Image) WHERE n.path > $after AND (n.path = $directory OR n.path STARTS WITH $prefix) "
                     "RETURN n.path AS path, n.size AS size, n.mtime_ns AS mtime_ns ORDER BY n.path LIMIT $limit")
        else:  # everything, also for under = "/"
            query = ("MATCH (n:Image) WHERE n.path > $after "
                     "RETURN n.path AS path, n.size AS size, n.mtime_ns AS mtime_ns ORDER BY n.path LIMIT $limit")
        after = ""
        while True:
            page = self._read(lambda tx, after=after: [
                FileState(row["path"], row["size"], row["mtime_ns"])
                for row in tx.run(query, after=after, directory=directory, prefix=f"{directory}/", limit=_PAGE_SIZE)
            ])
            yield from page
            if len(page) < _PAGE_SIZE:
                return
            after = page[-1].path

    # -- copying between stores --------------------------------------------------------

    def export_images(self, after: str, limit: int) -> list[ExportedImage]:
        def fetch(tx: neo4j.ManagedTransaction) -> list[ExportedImage]:
            rows = tx.run(
                "MATCH (n:Image) WHERE n.path > $after "
                "RETURN n.path AS path, n.sha256 AS sha256, n.size AS size, n.mtime_ns AS mtime_ns, "
                "n.width AS width, n.height AS height, n.model AS model, n.embedding AS embedding, "
                "n.linked AS linked, n.pick_bar AS pick_bar ORDER BY n.path LIMIT $limit",
                after=after, limit=limit,
            )
            return [
                ExportedImage(
                    ImageRecord(row["path"], row["sha256"], row["size"], row["mtime_ns"], row["width"],
                                row["height"], row["model"], np.asarray(row["embedding"], dtype=np.float32)),
                    linked=bool(row["linked"]),
                    pick_bar=row["pick_bar"],
                )
                for row in rows
            ]

        return self._read(fetch)

    def export_links(self, paths: Sequence[str]) -> list[Link]:
        unique = list(dict.fromkeys(paths))

        def fetch(tx: neo4j.ManagedTransaction) -> set[Link]:
            found: set[Link] = set()
            for batch in statement_batches(unique, 1):
                for row in tx.run("UNWIND $paths AS path MATCH (n:Image {path: path})-[r:SIMILAR_TO]-(m:Image) "
                                  "RETURN path, m.path AS other, r.score AS score", paths=batch):
                    found.add(Link.between(row["path"], row["other"], row["score"]))
            return found

        return sorted(self._read(fetch)) if unique else []

    def import_images(self, images: Sequence[ExportedImage]) -> None:
        self._write_images([(image.record, (image.linked, image.pick_bar)) for image in images])

    def import_links(self, links: Sequence[Link]) -> int:
        rows = [{"a": link.a, "b": link.b, "score": link.score} for link in links if link.a != link.b]
        if not rows:
            return 0

        def write(tx: neo4j.ManagedTransaction) -> int:
            return sum(tx.run(_WRITE_LINKS, links=batch).single()["written"] for batch in statement_batches(rows, 1))

        return int(self._write(write))

    def close(self) -> None:
        self._driver.close()

    def __enter__(self) -> Neo4jGraphStore:
        return self

    # -- helpers ------------------------------------------------------------------------

    def _write_images(self, images: Sequence[tuple[ImageRecord, tuple[bool, float | None] | None]]) -> None:
        if not images:
            return

        def write(tx: neo4j.ManagedTransaction) -> None:
            recorded = _model_in(tx)
            if recorded is None:
                raise StoreError(f"the store at {self._uri} has no embedding model yet; call ensure_model first")
            model, dim = recorded
            rows = []
            for record, link_state in images:
                if record.model != model:
                    raise ModelMismatchError(foreign_record_message(
                        record.path, record.model, model,
                        "point neo4j.database at an empty database or delete imgwatch's nodes from this one",
                    ))
                vector = checked_embedding(record.embedding, dim, record.path)
                rows.append({
                    "path": record.path, "sha256": record.sha256, "size": record.size, "mtime_ns": record.mtime_ns,
                    "width": record.width, "height": record.height, "model": record.model,
                    "embedding": vector.tolist(), "digest": _digest(vector),
                    "linked": None if link_state is None else link_state[0],
                    "pick_bar": None if link_state is None else link_state[1],
                })
            for batch in statement_batches(rows, dim):
                changed = [row["changed"] for row in tx.run(_UPSERT, rows=batch)]
                if changed:  # a new embedding makes the old link scores stale
                    tx.run(_DROP_LINKS, paths=changed).consume()

        self._write(write)

    def _recorded_model(self) -> tuple[str, int] | None:
        return self._read(_model_in)

    def _ensure_vector_index(self, dim: int, *, replace: bool = False) -> None:
        """Make sure the vector index exists for ``dim`` and is ONLINE.

        ``replace``: an index of another size may be dropped (ensure_model checked that
        the store is empty). Read-only stores never create or drop anything.
        """
        if self._index_dim == dim:
            return
        existing = self._vector_index_dim()
        if existing is not None and existing != dim:
            if not (replace and self._writable):
                raise StoreError(
                    f"the vector index {VECTOR_INDEX} at {self._uri} is for {existing} dimensions but the "
                    f"store's model has {dim}; start a worker with the configured model to rebuild it"
                )
            self._schema(f"DROP INDEX {VECTOR_INDEX} IF EXISTS")
            existing = None
        if existing is None:
            if not self._writable:
                raise StoreError(
                    f"database {self._database!r} at {self._uri} has no vector index yet; start a worker "
                    "(`imgwatch run` or `imgwatch worker`), which creates it"
                )
            # Index options are not parameterisable; dim is an int checked by ensure_model.
            self._schema(
                f"CREATE VECTOR INDEX {VECTOR_INDEX} IF NOT EXISTS FOR (n:Image) ON n.embedding OPTIONS "
                f"{{indexConfig: {{`vector.dimensions`: {int(dim)}, `vector.similarity_function`: 'cosine'}}}}"
            )
            if self._vector_index_dim() != dim:  # another process created it for another model meanwhile
                raise StoreError(f"the vector index {VECTOR_INDEX} at {self._uri} was just created for another "
                                 "model by another imgwatch process; check that all workers use the same weights")
        self._command(f"CALL db.awaitIndex('{VECTOR_INDEX}', {INDEX_ONLINE_TIMEOUT_S})")
        self._index_dim = dim

    def _vector_index_dim(self) -> int | None:
        shown = self._command("SHOW VECTOR INDEXES YIELD name, options WHERE name = $name RETURN options",
                              name=VECTOR_INDEX)
        if not shown:
            return None
        dim = (shown[0]["options"].get("indexConfig") or {}).get("vector.dimensions")
        return int(dim) if dim is not None else None

    def _schema(self, statement: str) -> None:
        """Run a schema command. Two processes creating the same rule at once may still trip
        over each other's IF NOT EXISTS; the rule exists either way. A conflicting rule (say,
        a plain index on Image.path) is an error."""
        self._command(statement, tolerate="EquivalentSchemaRuleAlreadyExists")

    def _command(self, statement: str, *, tolerate: str | None = None, **parameters: Any) -> list[Any]:
        """An auto-commit statement: schema and SHOW commands cannot share a transaction with data."""
        def run() -> list[Any]:
            with self._session() as session:
                try:
                    return list(session.run(statement, parameters))
                except ClientError as exc:
                    if tolerate is not None and tolerate in (exc.code or ""):
                        return []
                    raise

        return self._translated(run, retried=False)

    def _session(self) -> neo4j.Session:
        # One bookmark manager for all of this store's sessions: on a cluster, a read then
        # waits for the store's own earlier writes (causal consistency).
        return self._driver.session(database=self._database, bookmark_manager=self._bookmarks)

    def _read(self, work: Callable[[neo4j.ManagedTransaction], T]) -> T:
        def run() -> T:
            with self._session() as session:
                return session.execute_read(work)

        return self._translated(run)

    def _write(self, work: Callable[[neo4j.ManagedTransaction], T]) -> T:
        def run() -> T:
            with self._session() as session:
                return session.execute_write(work)

        return self._translated(run)

    def _translated(self, run: Callable[[], T], *, retried: bool = True) -> T:
        """Driver errors as StoreError naming the server. ``retried``: the driver already
        retried transient failures for neo4j.retry_seconds (managed transactions)."""
        after = f" after {self._settings.retry_seconds:.0f} s of retries" if retried else ""
        try:
            return run()
        except StoreError:
            raise
        except AuthError:
            raise StoreError(f"Neo4j at {self._uri} no longer accepts the credentials; check the password") from None
        except (Neo4jError, DriverError) as exc:
            if exc.is_retryable() or isinstance(exc, ConnectionAcquisitionTimeoutError):
                raise StoreUnavailable(
                    f"Neo4j at {self._uri} is unavailable ({_reason(exc)}){after}; check the server "
                    "(workers leave the job for the queue to retry)"
                ) from None
            raise StoreError(f"Neo4j at {self._uri}: {_reason(exc)}") from None


def _model_in(tx: neo4j.ManagedTransaction) -> tuple[str, int] | None:
    """The recorded (model, dim), read inside ``tx``; None before ensure_model."""
    row = tx.run("MATCH (s:ImgwatchStore {key: 'store'}) RETURN s.model AS model, s.dim AS dim").single()
    if row is None or row["model"] is None or row["dim"] is None:
        return None
    return str(row["model"]), int(row["dim"])


def _reason(exc: BaseException) -> str:
    """A driver error in one line, preferring the network error underneath (e.g. connection refused)."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and (current.strerror or str(current)):
            return (current.strerror or str(current)).lower()
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        pending.extend(getattr(current, "exceptions", ()))  # routing failures arrive as an ExceptionGroup
    # Server errors carry their text in .message; most driver-side errors only in str().
    text = (exc.message if isinstance(exc, Neo4jError) else None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


@contextlib.contextmanager
def _quiet_driver_log() -> Iterator[None]:
    """Silence the driver's own log lines while we turn its failure into one clear error."""
    driver_log = logging.getLogger("neo4j")
    level = driver_log.level
    driver_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        driver_log.setLevel(level)
