"""The store's schema: constraints, the ``ImgwatchStore`` node, the vector index, the model.

- ``(:Image {path})`` nodes under a uniqueness constraint on ``path``, with the file
  facts, ``embedding`` (float32, written by ``db.create.setNodeVectorProperty``),
  ``embedding_digest`` (to tell a changed embedding from a re-upsert of the same one),
  ``indexed_at`` (epoch seconds when the embedding was written; absent on nodes stored
  before imgwatch kept it), ``linked`` and ``pick_bar`` (see :meth:`GraphStore.link`);
- ``(:Image)-[:SIMILAR_TO {score}]->(:Image)``, stored once per pair from the
  lexicographically smaller path to the larger; ``score`` is the raw cosine, under a
  range index ``imgwatch_link_score`` (for ``links_at_least``; queries work without it);
- a range index ``imgwatch_image_sha256`` on ``Image.sha256`` (for ``embeddings_by_hash``:
  a copied or moved file reuses the embedding of its content; works without it, slower);
- one ``(:ImgwatchStore {key: 'store'})`` node recording the model, its dimension, the
  weights file it was loaded from (``weights_file``, ``weights_sha256``; absent for weights
  that are no file) and the schema version;
- a cosine vector index ``imgwatch_image_embedding`` on ``Image.embedding``;
- while a re-index to another model is under way (GraphStore.begin_space), its model on the store
  node (``pending_model``, ``pending_dim``, ``pending_weights_file``, ``pending_weights_sha256``),
  each image's vector for it in ``embedding_next`` (for the content ``embedding_next_sha256``, with
  ``embedding_next_digest``) and a cosine vector index ``imgwatch_image_embedding_next`` on it.

Opening for writing looks first (SHOW CONSTRAINTS, SHOW INDEXES, the store node) and
creates only what is missing, so a user without schema privileges can work in a
database whose schema exists. Read-only opening never creates anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import neo4j

from imgwatch.errors import ModelMismatchError, StoreError, StoreMissing, StoreUnavailable, VectorIndexNotReady
from imgwatch.log import get_logger
from imgwatch.store.base import model_mismatch_message, weights_file_to_record
from imgwatch.store.neo4j import cypher
from imgwatch.store.neo4j.driver import Connection

SCHEMA_VERSION = 1
MAX_VECTOR_DIMENSIONS = 4096  # `vector.dimensions` on Neo4j 5.x: 1 to 4096
INDEX_ONLINE_TIMEOUT_SECONDS = 600

log = get_logger("imgwatch.store")


def reset_hint(database: str) -> str:
    """How to empty a database of imgwatch's nodes (for a model-mismatch message)."""
    return (
        f"point neo4j.database at an empty database, or delete imgwatch's nodes from {database!r} "
        f"(in Neo4j Browser: :auto {cypher.DELETE_IMAGES})"
    )


def model_in(tx: neo4j.ManagedTransaction) -> tuple[str, int] | None:
    """The recorded (model, dim), read inside ``tx``; None before ensure_model."""
    row = tx.run(cypher.STORE_STATE).single()
    return _model_of(row)


def weights_file_in(tx: neo4j.ManagedTransaction) -> tuple[str, str] | None:
    """The recorded weights file's (path, SHA-256), read inside ``tx``; None without one."""
    return _weights_file_of(tx.run(cypher.STORE_STATE).single())


def _model_of(row: Mapping[str, Any] | None) -> tuple[str, int] | None:
    if row is None or row["model"] is None or row["dim"] is None:
        return None
    return str(row["model"]), int(row["dim"])


def _weights_file_of(row: Mapping[str, Any] | None) -> tuple[str, str] | None:
    if row is None or row["weights_file"] is None or row["weights_sha256"] is None:
        return None
    return str(row["weights_file"]), str(row["weights_sha256"])


def _recording(row: Mapping[str, Any] | None, model: str, dim: int,
               weights_file: tuple[str, str] | None) -> tuple[bool, tuple[str, str] | None]:
    """Whether recording (model, dim) with ``weights_file`` changes the store node ``row``, and
    the weights file the node then holds (see weights_file_to_record)."""
    recorded, recorded_file = _model_of(row), _weights_file_of(row)
    after = weights_file_to_record(recorded, recorded_file, model, dim, weights_file)
    return (recorded, recorded_file) != ((model, dim), after), after


def unique_constraint(rows: Iterable[Mapping[str, Any]], label: str, prop: str) -> str | None:
    """The name of a constraint (SHOW CONSTRAINTS rows) making ``label.prop`` unique, if any.

    Any name counts: CREATE ... IF NOT EXISTS would not add ours next to it either.
    Types: UNIQUENESS / NODE_PROPERTY_UNIQUENESS, or a NODE_KEY on that one property.
    """
    for row in rows:
        kind = str(row.get("type") or "")
        unique = kind == "NODE_KEY" or ("UNIQUENESS" in kind and not kind.startswith("RELATIONSHIP"))
        if (unique and row.get("entityType") == "NODE" and list(row.get("labelsOrTypes") or []) == [label]
                and list(row.get("properties") or []) == [prop]):
            return str(row["name"])
    return None


def score_index(rows: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """A range index (SHOW INDEXES rows) on ``SIMILAR_TO.score``, whatever its name."""
    return next((
        row for row in rows
        if row.get("type") == "RANGE" and row.get("entityType") == "RELATIONSHIP"
        and list(row.get("labelsOrTypes") or []) == ["SIMILAR_TO"] and list(row.get("properties") or []) == ["score"]
    ), None)


def hash_index(rows: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """A range index (SHOW INDEXES rows) on ``Image.sha256``, whatever its name."""
    return next((
        row for row in rows
        if row.get("type") == "RANGE" and row.get("entityType") == "NODE"
        and list(row.get("labelsOrTypes") or []) == ["Image"] and list(row.get("properties") or []) == ["sha256"]
    ), None)


def embedding_indexes(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The vector indexes (SHOW INDEXES rows) on ``(:Image).embedding``, whatever their names."""
    return [
        row for row in rows
        if row.get("type") == "VECTOR" and row.get("entityType") == "NODE"
        and "Image" in (row.get("labelsOrTypes") or []) and "embedding" in (row.get("properties") or [])
    ]


def index_dimensions(row: Mapping[str, Any]) -> int | None:
    """A SHOW INDEXES row's ``vector.dimensions`` option."""
    config = (row.get("options") or {}).get("indexConfig") or {}
    dim = config.get("vector.dimensions")
    return int(dim) if dim is not None else None


def blocking_index_message(blockers: Iterable[Mapping[str, Any]], location: str) -> str:
    """Another vector index already covers (:Image).embedding, so ours cannot be created."""
    names = [str(row["name"]) for row in blockers]
    drops = "; ".join(cypher.drop_index(name) for name in names)
    return (
        f"the vector index {', '.join(repr(n) for n in names)} at {location} already covers "
        f":Image(embedding), so imgwatch cannot create its own index {cypher.VECTOR_INDEX!r} "
        f"(Neo4j allows one vector index per label and property). If nothing else uses it, drop it "
        f"({drops}) and start imgwatch again; otherwise point neo4j.database at another database"
    )


class Schema:
    """Creates (writable) or checks (read-only) the schema of one store."""

    def __init__(self, db: Connection, *, writable: bool) -> None:
        self._db = db
        self.writable = writable
        self._index_dim: int | None = None  # the dimension of an index known to be ONLINE

    def prepare(self) -> tuple[str, int] | None:
        """Make sure the schema exists (or, read-only, that the store does); the recorded model."""
        if self.writable:
            constraints = self._db.command(cypher.SHOW_CONSTRAINTS)
            if unique_constraint(constraints, "Image", "path") is None:
                self._schema(cypher.CREATE_PATH_CONSTRAINT)
            if unique_constraint(constraints, "ImgwatchStore", "key") is None:
                self._schema(cypher.CREATE_STORE_CONSTRAINT)
            indexes = self._db.command(cypher.SHOW_INDEXES)
            if score_index(indexes) is None:
                self._create_score_index()
            if hash_index(indexes) is None:
                self._create_optional_index(cypher.CREATE_HASH_INDEX, cypher.HASH_INDEX,
                                            "copied and moved files find their stored embedding by reading "
                                            "every image until a user allowed to create indexes opens the store once")
        row = self._db.read(lambda tx: tx.run(cypher.STORE_STATE).single())
        if row is None:
            if not self.writable:
                raise StoreMissing(
                    f"database {self._db.database!r} at {self._db.uri} holds no imgwatch store yet; start "
                    "`imgwatch run FOLDER` with store = \"neo4j\", or check neo4j.uri and neo4j.database"
                )
            row = self._db.write(lambda tx: tx.run(cypher.CREATE_STORE, version=SCHEMA_VERSION).single())
        version = row["version"]
        if version is not None and version > SCHEMA_VERSION:
            raise StoreError(
                f"the imgwatch store in {self._db.database!r} at {self._db.uri} has schema version {version}, "
                f"newer than this imgwatch understands ({SCHEMA_VERSION}); upgrade imgwatch"
            )
        recorded = _model_of(row)
        if self.writable and recorded is not None:
            self.ensure_vector_index(recorded[1])
        return recorded

    def _create_score_index(self) -> None:
        """Create the index on SIMILAR_TO.score; without it everything works, only
        links_at_least reads every link. It came after the rest of the schema, so a user
        who may not create indexes (the editor role) gets a warning, not a failure. Not
        awaited: until it is ONLINE, queries simply do not use it."""
        try:
            self._schema(cypher.CREATE_SCORE_INDEX)
        except StoreUnavailable:
            raise
        except StoreError as exc:
            log.warning("link_score_index_not_created", index=cypher.SCORE_INDEX, reason=str(exc),
                        detail="`imgwatch duplicates` reads every link until a user allowed to create "
                               "indexes opens the store once")

    def _create_optional_index(self, statement: str, name: str, without_it: str) -> None:
        """Create an index that only speeds a query up: a user who may not create indexes gets a warning."""
        try:
            self._schema(statement)
        except StoreUnavailable:
            raise
        except StoreError as exc:
            log.warning("index_not_created", index=name, reason=str(exc), detail=without_it)

    def record_model(self, model: str, dim: int, weights_file: tuple[str, str] | None) -> None:
        """Record the model on first use (with its weights file, see weights_file_to_record);
        ModelMismatchError while another model's images exist."""
        self.check_model(model, dim)
        state = self._db.read(lambda tx: tx.run(cypher.STORE_STATE).single())
        if _recording(state, model, dim, weights_file)[0]:
            self._db.write(lambda tx: self._record_model(tx, model, dim, weights_file))
        self.ensure_vector_index(dim, replace=True)

    def check_model(self, model: str, dim: int) -> None:
        """StoreError for a model a vector index cannot hold: checked before anything is recorded."""
        if not model or dim <= 0:
            raise StoreError(f"invalid embedding model {model!r} with dim {dim}")
        if dim > MAX_VECTOR_DIMENSIONS:
            raise StoreError(
                f"the model {model!r} makes {dim}-dimensional embeddings, but a vector index at "
                f"{self._db.location} holds at most {MAX_VECTOR_DIMENSIONS} (Neo4j 5's vector.dimensions); "
                f"use a model of at most {MAX_VECTOR_DIMENSIONS} dimensions, or the embedded store "
                "(general.store = \"embedded\")"
            )

    def ensure_pending_index(self, dim: int) -> None:
        """The pending space's vector index (``embedding_next``), created for ``dim`` and ONLINE."""
        ours = _named(self._db.command(cypher.SHOW_INDEXES), cypher.NEXT_VECTOR_INDEX)
        if ours is not None and index_dimensions(ours) != dim:  # left by an aborted space of another size
            self._schema(cypher.DROP_NEXT_VECTOR_INDEX)
            ours = None
        if ours is None:
            self._schema(cypher.CREATE_NEXT_VECTOR_INDEX.format(dim=int(dim)))  # dim: checked by check_model
        self._db.command(cypher.AWAIT_INDEX, name=cypher.NEXT_VECTOR_INDEX, seconds=INDEX_ONLINE_TIMEOUT_SECONDS)

    def drop_pending_index(self) -> None:
        self._schema(cypher.DROP_NEXT_VECTOR_INDEX)

    def _record_model(self, tx: neo4j.ManagedTransaction, model: str, dim: int,
                      weights_file: tuple[str, str] | None) -> None:
        row = tx.run(cypher.LOCK_STORE_MODEL).single()  # MERGE locks the node: one recorder at a time
        changes, weights_file = _recording(row, model, dim, weights_file)
        if not changes:
            return
        recorded = _model_of(row)
        if recorded is not None and recorded != (model, dim):
            count = tx.run(cypher.COUNT_IMAGES).single()["count"]
            if count:
                raise ModelMismatchError(model_mismatch_message(
                    recorded[0], recorded[1], count, model, dim, reset_hint(self._db.database)))
        path, sha256 = weights_file or (None, None)
        tx.run(cypher.SET_MODEL, model=model, dim=dim, weights_file=path, weights_sha256=sha256).consume()

    def ensure_vector_index(self, dim: int, *, replace: bool = False, wait: bool = True) -> None:
        """Make sure the vector index exists for ``dim`` and is ONLINE.

        ``replace``: an index of another size may be dropped (record_model checked that
        the store is empty). Read-only stores never create or drop anything. ``wait``: False
        raises VectorIndexNotReady instead of waiting for an index being built.
        """
        if self._index_dim == dim:
            return
        ours = self._our_index()
        if ours is not None and index_dimensions(ours) != dim:
            if not (replace and self.writable):
                raise VectorIndexNotReady(
                    f"the vector index {cypher.VECTOR_INDEX} at {self._db.uri} is for {index_dimensions(ours)} "
                    f"dimensions but the store's model has {dim}; start a worker with the configured model "
                    "to rebuild it"
                )
            self._schema(cypher.DROP_VECTOR_INDEX)
            ours = None
        if ours is None:
            ours = self._create_vector_index(dim)
        if ours.get("state") != "ONLINE":
            if not wait:
                raise VectorIndexNotReady(f"the vector index {cypher.VECTOR_INDEX} at {self._db.uri} is being built "
                                          f"({ours.get('state')})")
            self._db.command(cypher.AWAIT_INDEX, name=cypher.VECTOR_INDEX, seconds=INDEX_ONLINE_TIMEOUT_SECONDS)
        self._index_dim = dim

    def _create_vector_index(self, dim: int) -> Mapping[str, Any]:
        if not self.writable:  # not ready: a reader searches exactly meanwhile (Neo4jGraphStore.nearest)
            raise VectorIndexNotReady(
                f"database {self._db.database!r} at {self._db.uri} has no vector index yet; start a worker "
                "(`imgwatch run` or `imgwatch worker`), which creates it"
            )
        # CREATE ... IF NOT EXISTS does nothing when another index covers the same schema:
        # name it instead of failing later with "no such index".
        blockers = [row for row in embedding_indexes(self._db.command(cypher.SHOW_INDEXES))
                    if row["name"] != cypher.VECTOR_INDEX]
        if blockers:
            raise StoreError(blocking_index_message(blockers, self._db.location))
        self._schema(cypher.CREATE_VECTOR_INDEX.format(dim=int(dim)))  # dim: an int checked by record_model
        shown = self._db.command(cypher.SHOW_INDEXES)
        ours = _named(shown, cypher.VECTOR_INDEX)
        if ours is None:  # another process created a covering index under another name meanwhile
            raise StoreError(blocking_index_message(embedding_indexes(shown), self._db.location))
        if index_dimensions(ours) != dim:  # another process created ours for another model meanwhile
            raise StoreError(
                f"the vector index {cypher.VECTOR_INDEX} at {self._db.uri} was just created for another "
                "model by another imgwatch process; check that all workers use the same weights"
            )
        return ours

    def describe(self) -> dict[str, object]:
        """Schema facts for `imgwatch doctor`."""
        ours = self._our_index()
        constraint = unique_constraint(self._db.command(cypher.SHOW_CONSTRAINTS), "Image", "path")
        shown = self._db.command(cypher.SHOW_INDEXES)
        scores, hashes = score_index(shown), hash_index(shown)
        return {
            "path_constraint": "present" if constraint else "MISSING",
            "vector_index": cypher.VECTOR_INDEX,
            "index_state": ours["state"] if ours else "MISSING (created when a worker starts)",
            "index_population": f"{ours['populationPercent']:.1f}%" if ours else "-",
            "link_score_index": scores["state"] if scores else "MISSING (created when a worker starts)",
            "content_hash_index": hashes["state"] if hashes else "MISSING (created when a worker starts)",
        }

    def _our_index(self) -> Mapping[str, Any] | None:
        ours = _named(self._db.command(cypher.SHOW_INDEXES), cypher.VECTOR_INDEX)
        if ours is not None and ours.get("type") != "VECTOR":
            raise StoreError(
                f"the index {cypher.VECTOR_INDEX!r} at {self._db.location} is a {ours.get('type')} index, "
                f"not imgwatch's vector index; drop it ({cypher.drop_index(cypher.VECTOR_INDEX)})"
            )
        return ours

    def _schema(self, statement: str) -> None:
        """Run a schema command. Two processes creating the same rule at once may still trip
        over each other's IF NOT EXISTS; the rule exists either way. A conflicting rule (say,
        a plain index on Image.path) is an error."""
        self._db.command(statement, tolerate="EquivalentSchemaRuleAlreadyExists")


def _named(rows: Iterable[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    return next((row for row in rows if row.get("name") == name), None)
