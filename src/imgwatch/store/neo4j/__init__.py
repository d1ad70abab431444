"""The Neo4j graph store: the production backend, same contract as the embedded one.

Split by role (as watchdog splits its inotify backend):

- :mod:`.driver`: the driver, the one-shot connection check (version, edition),
  sessions, managed read/write and auto-commit helpers, driver errors as imgwatch errors;
- :mod:`.schema`: constraints, the ``ImgwatchStore`` node and schema version, the
  vector index (create, check, await), recording the model;
- :mod:`.cypher`: the Cypher statement texts;
- :mod:`.values`: pure conversions (scores, candidates, vectors, batches, path ranges);
- :mod:`.store`: :class:`Neo4jGraphStore`, the contract methods.

Importing this package loads the driver; :func:`imgwatch.store.open_store` imports it
only when the Neo4j backend is used.
"""

from __future__ import annotations

from imgwatch.store.neo4j.cypher import PATH_CONSTRAINT, STORE_CONSTRAINT, VECTOR_INDEX
from imgwatch.store.neo4j.driver import MINIMUM_VERSION, parse_version
from imgwatch.store.neo4j.schema import INDEX_ONLINE_TIMEOUT_SECONDS, SCHEMA_VERSION
from imgwatch.store.neo4j.store import Neo4jGraphStore
from imgwatch.store.neo4j.values import (
    CANDIDATE_SCORE_SLACK,
    MAX_FLOATS_PER_STATEMENT,
    MAX_ROWS_PER_STATEMENT,
    MIN_CANDIDATES,
    OVERFETCH_FACTOR,
    as_vector,
    candidate_count,
    candidate_score_bound,
    cosine_to_score,
    score_to_cosine,
    statement_batches,
)

__all__ = [
    "CANDIDATE_SCORE_SLACK",
    "INDEX_ONLINE_TIMEOUT_SECONDS",
    "MAX_FLOATS_PER_STATEMENT",
    "MAX_ROWS_PER_STATEMENT",
    "MINIMUM_VERSION",
    "MIN_CANDIDATES",
    "OVERFETCH_FACTOR",
    "PATH_CONSTRAINT",
    "SCHEMA_VERSION",
    "STORE_CONSTRAINT",
    "VECTOR_INDEX",
    "Neo4jGraphStore",
    "as_vector",
    "candidate_count",
    "candidate_score_bound",
    "cosine_to_score",
    "parse_version",
    "score_to_cosine",
    "statement_batches",
]
