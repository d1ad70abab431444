"""Every Cypher statement the Neo4j backend sends or prints for the user, as text.

All of them are Cypher 5 (Neo4j 5.26 LTS) and run unchanged on 2025.x/2026.x servers,
checked against the Cypher manual (https://neo4j.com/docs/cypher-manual/5/):
SHOW CONSTRAINTS/INDEXES ... YIELD, CREATE CONSTRAINT/VECTOR INDEX ... IF NOT EXISTS,
db.awaitIndex, db.index.vector.queryNodes, db.create.setNodeVectorProperty,
vector.similarity.cosine (5.18+).

Parameters are named ``$...``; schema names and the index dimension cannot be
parameters, so the schema statements have them filled in here or by ``str.format``.
tests/store/test_cypher_front_end.py runs every statement here, the commands printed in
hints and the docs' Cypher through Neo4j's own parser and semantic analysis.
"""

from __future__ import annotations

# -- schema names -----------------------------------------------------------------------

VECTOR_INDEX = "imgwatch_image_embedding"
NEXT_VECTOR_INDEX = "imgwatch_image_embedding_next"  # the pending space's (a re-index to a new model)
SCORE_INDEX = "imgwatch_link_score"
HASH_INDEX = "imgwatch_image_sha256"
PATH_CONSTRAINT = "imgwatch_image_path"
STORE_CONSTRAINT = "imgwatch_store_key"

# -- the connection check ---------------------------------------------------------------

KERNEL_VERSION = (
    "CALL dbms.components() YIELD name, versions, edition "
    "WHERE name = 'Neo4j Kernel' RETURN versions[0] AS version, edition"
)

# -- schema -------------------------------------------------------------------------------
# SHOW first, CREATE only what is missing: a user without schema privileges can then
# open a store whose schema exists. IF NOT EXISTS still covers two openers racing.

SHOW_CONSTRAINTS = "SHOW CONSTRAINTS YIELD name, type, entityType, labelsOrTypes, properties"
SHOW_INDEXES = (
    "SHOW INDEXES YIELD name, type, entityType, labelsOrTypes, properties, options, state, populationPercent"
)
CREATE_PATH_CONSTRAINT = (
    f"CREATE CONSTRAINT {PATH_CONSTRAINT} IF NOT EXISTS FOR (n:Image) REQUIRE n.path IS UNIQUE"
)
CREATE_STORE_CONSTRAINT = (
    f"CREATE CONSTRAINT {STORE_CONSTRAINT} IF NOT EXISTS FOR (s:ImgwatchStore) REQUIRE s.key IS UNIQUE"
)
# Filled in with str.format(dim=...): index options cannot be parameters. Neo4j 5.x takes
# 1 to 4096 for `vector.dimensions` (schema.MAX_VECTOR_DIMENSIONS: a larger model is refused first).
CREATE_VECTOR_INDEX = (
    f"CREATE VECTOR INDEX {VECTOR_INDEX} IF NOT EXISTS FOR (n:Image) ON n.embedding OPTIONS "
    "{{indexConfig: {{`vector.dimensions`: {dim}, `vector.similarity_function`: 'cosine'}}}}"
)
DROP_VECTOR_INDEX = f"DROP INDEX {VECTOR_INDEX} IF EXISTS"
# A range index on SIMILAR_TO.score, so links_at_least seeks instead of reading every link.
CREATE_SCORE_INDEX = f"CREATE RANGE INDEX {SCORE_INDEX} IF NOT EXISTS FOR ()-[r:SIMILAR_TO]-() ON (r.score)"
# A range index on Image.sha256, so embeddings_by_hash seeks instead of reading every image.
CREATE_HASH_INDEX = f"CREATE RANGE INDEX {HASH_INDEX} IF NOT EXISTS FOR (n:Image) ON (n.sha256)"
AWAIT_INDEX = "CALL db.awaitIndex($name, $seconds)"

# The model, and the weights file it was loaded from (absent for weights that are no file).
_MODEL = "s.model AS model, s.dim AS dim, s.weights_file AS weights_file, s.weights_sha256 AS weights_sha256"
STORE_STATE = "MATCH (s:ImgwatchStore {key: 'store'}) RETURN s.schema_version AS version, " + _MODEL
CREATE_STORE = (
    "MERGE (s:ImgwatchStore {key: 'store'}) ON CREATE SET s.schema_version = $version "
    "RETURN s.schema_version AS version, " + _MODEL
)
LOCK_STORE_MODEL = "MERGE (s:ImgwatchStore {key: 'store'}) RETURN " + _MODEL
# A null weights file removes the properties (a model from weights that are no file).
SET_MODEL = (
    "MATCH (s:ImgwatchStore {key: 'store'}) "
    "SET s.model = $model, s.dim = $dim, s.weights_file = $weights_file, s.weights_sha256 = $weights_sha256"
)

# -- the pending space (GraphStore.begin_space): a re-index to a new model ----------------------
# Its model is recorded on the store node (pending_*); each image's vector for it is
# ``embedding_next``, for the content ``embedding_next_sha256`` (with its digest), under a vector
# index of its own. switch_space moves it into ``embedding`` in one transaction.

# Filled in with str.format(dim=...), as CREATE_VECTOR_INDEX.
CREATE_NEXT_VECTOR_INDEX = (
    f"CREATE VECTOR INDEX {NEXT_VECTOR_INDEX} IF NOT EXISTS FOR (n:Image) ON n.embedding_next OPTIONS "
    "{{indexConfig: {{`vector.dimensions`: {dim}, `vector.similarity_function`: 'cosine'}}}}"
)
DROP_NEXT_VECTOR_INDEX = f"DROP INDEX {NEXT_VECTOR_INDEX} IF EXISTS"
PENDING_STATE = (
    "MATCH (s:ImgwatchStore {key: 'store'}) RETURN s.model AS model, s.pending_model AS pending_model, "
    "s.pending_dim AS pending_dim, s.pending_weights_file AS pending_weights_file, "
    "s.pending_weights_sha256 AS pending_weights_sha256"
)
# Null parameters remove the properties: the pending space dropped.
SET_PENDING = (
    "MATCH (s:ImgwatchStore {key: 'store'}) SET s.pending_model = $model, s.pending_dim = $dim, "
    "s.pending_weights_file = $weights_file, s.pending_weights_sha256 = $weights_sha256"
)
COUNT_PENDING = "MATCH (n:Image) WHERE n.embedding_next_sha256 = n.sha256 RETURN count(n) AS count"
# Only where the image still has the content the vector was computed for.
PUT_PENDING = """
UNWIND $rows AS row
MATCH (n:Image {path: row.path})
WHERE n.sha256 = row.sha256
CALL db.create.setNodeVectorProperty(n, 'embedding_next', row.embedding)
SET n.embedding_next_sha256 = row.sha256, n.embedding_next_digest = row.digest
RETURN count(n) AS stored
"""
PENDING_BY_HASH = """
UNWIND $hashes AS hash
MATCH (n:Image {sha256: hash})
WHERE n.embedding_next_sha256 = hash
WITH hash, head(collect(n)) AS image
RETURN hash, image.embedding_next AS embedding
"""
PATHS_WITHOUT_PENDING = (
    "MATCH (n:Image) WHERE n.path > $after AND coalesce(n.embedding_next_sha256 <> n.sha256, true) "
    "RETURN n.path AS path ORDER BY n.path LIMIT $limit"
)
# switch_space reads every image's pending content hash (what its links were computed from) in pages.
PENDING_PAGE = (
    "MATCH (n:Image) WHERE n.path > $after "
    "RETURN n.path AS path, n.embedding_next_sha256 AS pending ORDER BY n.path LIMIT $limit"
)
# As CANDIDATES, in the pending space; ``score`` is Neo4j's (1 + cosine) / 2.
PENDING_CANDIDATES = """
UNWIND $paths AS path
MATCH (n:Image {path: path})
CALL db.index.vector.queryNodes($index, $candidates, n.embedding_next) YIELD node
WITH path, n, node
WHERE node <> n AND node.embedding_next_sha256 = node.sha256
WITH path, node, vector.similarity.cosine(n.embedding_next, node.embedding_next) AS score
WHERE score >= $min_score
RETURN path, node.path AS neighbour, score
"""
PENDING_SCORES = """
UNWIND $pairs AS pair
MATCH (a:Image {path: pair.a})
MATCH (b:Image {path: pair.b})
RETURN pair.a AS a, pair.b AS b, vector.similarity.cosine(a.embedding_next, b.embedding_next) AS score
"""
# The switch: every image's pending vector becomes its embedding (linked: the new links follow,
# written as link() writes them, after its DROP_LINKS of every image).
SWAP_EMBEDDINGS = """
MATCH (n:Image)
CALL db.create.setNodeVectorProperty(n, 'embedding', n.embedding_next)
SET n.embedding_digest = n.embedding_next_digest, n.model = $model, n.linked = true, n.pick_bar = null,
    n.indexed_at = $now
REMOVE n.embedding_next, n.embedding_next_sha256, n.embedding_next_digest
"""
# Abort: the pending vectors go (the index on them is dropped too).
DROP_PENDING_VECTORS = (
    "MATCH (n:Image) WHERE n.embedding_next_sha256 IS NOT NULL "
    "REMOVE n.embedding_next, n.embedding_next_sha256, n.embedding_next_digest"
)

# -- counting (both answered by the count store: one label, or one type and no labels) ---

COUNT_IMAGES = "MATCH (n:Image) RETURN count(n) AS count"
COUNT_LINKS = "MATCH ()-[r:SIMILAR_TO]->() RETURN count(r) AS count"

# -- writing images -----------------------------------------------------------------------
# Two steps in one transaction. The first writes the file facts (taking each node's
# write lock) and then reads the stored digest, so the answer cannot change before
# commit; only the rows it returns carry their embedding in the second step. An
# unchanged embedding is neither sent nor rewritten.

UPSERT_FACTS = """
UNWIND $rows AS row
MERGE (n:Image {path: row.path})
SET n.sha256 = row.sha256, n.size = row.size, n.mtime_ns = row.mtime_ns,
    n.ctime_ns = row.ctime_ns, n.inode = row.inode,
    n.width = row.width, n.height = row.height, n.model = row.model,
    n.linked = CASE WHEN row.linked IS NULL THEN coalesce(n.linked, false) ELSE row.linked END,
    n.pick_bar = CASE WHEN row.linked IS NULL THEN n.pick_bar ELSE row.pick_bar END,
    n.indexed_at = CASE WHEN row.linked IS NULL THEN n.indexed_at ELSE row.indexed_at END
WITH n, row
WHERE n.embedding_digest IS NULL OR n.embedding_digest <> row.digest
RETURN row.path AS changed
"""

SET_EMBEDDINGS = """
UNWIND $rows AS row
MATCH (n:Image {path: row.path})
CALL db.create.setNodeVectorProperty(n, 'embedding', row.embedding)
SET n.embedding_digest = row.digest,
    n.linked = CASE WHEN row.linked IS NULL THEN false ELSE row.linked END,
    n.indexed_at = row.indexed_at
"""

DROP_LINKS = """
MATCH (n:Image)-[r:SIMILAR_TO]-()
WHERE n.path IN $paths
WITH DISTINCT r
DELETE r
"""

UPDATE_FILE_STATES = (
    "UNWIND $rows AS row MATCH (n:Image {path: row.path}) "
    "SET n.size = row.size, n.mtime_ns = row.mtime_ns, n.ctime_ns = row.ctime_ns, n.inode = row.inode"
)

REMOVE = "UNWIND $paths AS path MATCH (n:Image {path: path}) DETACH DELETE n RETURN count(*) AS removed"

# -- content reuse and moves ----------------------------------------------------------------

# One stored embedding per known content hash, of the current model (equality seeks on HASH_INDEX).
EMBEDDINGS_BY_HASH = """
UNWIND $hashes AS hash
MATCH (n:Image {sha256: hash})
WHERE n.model = $model AND n.embedding IS NOT NULL
WITH hash, head(collect(n)) AS image
RETURN hash, image.embedding AS embedding, image.width AS width, image.height AS height
"""

# same_content_groups: exact copies, the hashes two or more images share, their paths in order
# (the images are read once; grouping them is the server's work, not a pair of images each).
SAME_CONTENT = """
MATCH (n:Image)
WITH n.sha256 AS hash, n.path AS path ORDER BY path
WITH hash, collect(path) AS paths
WHERE size(paths) > 1
RETURN hash, paths
ORDER BY hash
"""

# A person's decisions about duplicates (GraphStore.record_decision): one node per decision,
# keyed by content (its ``hashes``), never linked to an Image, so it outlives moves and re-indexing.
# A content is in one decision at most: recording drops the decisions holding any of its contents.
FORGET_DECISIONS = """
MATCH (d:DuplicateDecision)
WHERE any(hash IN d.hashes WHERE hash IN $hashes)
WITH collect(d) AS gone
FOREACH (d IN gone | DELETE d)
RETURN size(gone) AS forgotten
"""

RECORD_DECISION = """
CREATE (:DuplicateDecision {kind: $kind, hashes: $hashes, keep: $keep, decided_at: $decided_at})
"""

DECISIONS_ABOUT = """
MATCH (d:DuplicateDecision)
WHERE any(hash IN d.hashes WHERE hash IN $hashes)
RETURN d.kind AS kind, d.hashes AS hashes, d.keep AS keep, d.decided_at AS decided_at
ORDER BY decided_at
"""

# A rename in two statements of one transaction, for a round of moves in which no path
# appears twice (see base.independent_rounds): first the images a moved one replaces go,
# with their links; then the moved nodes take their new paths, keeping everything else.
REPLACED_BY_MOVES = """
UNWIND $moves AS move
MATCH (:Image {path: move.old})
MATCH (taken:Image {path: move.new})
DETACH DELETE taken
"""
RENAME = """
UNWIND $moves AS move
MATCH (n:Image {path: move.old})
SET n.path = move.new
RETURN count(n) AS renamed
"""
# Links are stored from the smaller path to the larger (WRITE_LINKS MERGEs in that direction,
# LINKS_AT_LEAST reads it): a renamed end can break that order, so such a link is re-created
# the other way round with its score (startNode/endNode: the stored direction).
REORIENT_LINKS = """
UNWIND $paths AS path
MATCH (:Image {path: path})-[r:SIMILAR_TO]-(:Image)
WITH DISTINCT r
WITH r, startNode(r) AS a, endNode(r) AS b
WHERE a.path > b.path
CREATE (b)-[:SIMILAR_TO {score: r.score}]->(a)
DELETE r
"""

# -- reading images -----------------------------------------------------------------------

GET_MANY = (
    "UNWIND $paths AS path MATCH (n:Image {path: path}) "
    "RETURN n.path AS path, n.sha256 AS sha256, n.size AS size, n.mtime_ns AS mtime_ns, "
    "n.width AS width, n.height AS height, n.model AS model, n.linked AS linked, n.indexed_at AS indexed_at, "
    "n.ctime_ns AS ctime_ns, n.inode AS inode"
)

NEAREST = """
CALL db.index.vector.queryNodes($index, $candidates, $vector) YIELD node
WITH node
WHERE NOT node.path IN $exclude
WITH node.path AS path, vector.similarity.cosine($vector, node.embedding) AS score
RETURN path, score ORDER BY score DESC, path LIMIT $k
"""

# NEAREST without the index: while the index is built (a switch to a model of another size
# re-creates it; seconds to minutes), a query is answered exactly, slower, rather than waiting.
NEAREST_EXACT = """
MATCH (node:Image)
WHERE node.embedding IS NOT NULL AND NOT node.path IN $exclude
WITH node.path AS path, vector.similarity.cosine($vector, node.embedding) AS score
RETURN path, score ORDER BY score DESC, path LIMIT $k
"""

NEIGHBOURS = (
    "MATCH (n:Image {path: $path}) OPTIONAL MATCH (n)-[r:SIMILAR_TO]-(m:Image) "
    "RETURN m.path AS path, r.score AS score ORDER BY score DESC, path"
)

# links_at_least: one page in (score, a.path, b.path) order after the last row of the page
# before ($score, $a, $b; the first page passes the threshold and empty paths, which every
# absolute path follows). `r.score >= $score` is the range seek on SCORE_INDEX; the rest
# only breaks ties. Each link is stored once, a -> b, so the directed pattern reads it once.
LINKS_AT_LEAST = """
MATCH (a:Image)-[r:SIMILAR_TO]->(b:Image)
WHERE r.score >= $score AND (r.score > $score OR a.path > $a OR (a.path = $a AND b.path > $b))
RETURN r.score AS score, a.path AS low, b.path AS high
ORDER BY score, low, high LIMIT $limit
"""

# file_states: the directory itself by equality, its descendants by one range on the
# path index: [dir + '/', dir + '0') holds exactly the paths starting with dir + '/'
# ('0' follows '/'). Both lower bounds (page start, prefix) bound the same seek.
_FILE_STATE = "n.path AS path, n.size AS size, n.mtime_ns AS mtime_ns, n.ctime_ns AS ctime_ns, n.inode AS inode"
FILE_STATE_AT = "MATCH (n:Image {path: $path}) RETURN " + _FILE_STATE
COUNT_AT = "MATCH (n:Image {path: $path}) RETURN count(n) AS count"
COUNT_BELOW = "MATCH (n:Image) WHERE n.path >= $prefix AND n.path < $upper RETURN count(n) AS count"
FILE_STATES_ALL = (
    "MATCH (n:Image) WHERE n.path > $after "
    "RETURN " + _FILE_STATE + " ORDER BY n.path LIMIT $limit"
)
FILE_STATES_BELOW = (
    "MATCH (n:Image) WHERE n.path > $after AND n.path >= $prefix AND n.path < $upper "
    "RETURN " + _FILE_STATE + " ORDER BY n.path LIMIT $limit"
)

EXPORT_IMAGES = (
    "MATCH (n:Image) WHERE n.path > $after "
    "RETURN n.path AS path, n.sha256 AS sha256, n.size AS size, n.mtime_ns AS mtime_ns, "
    "n.width AS width, n.height AS height, n.model AS model, n.embedding AS embedding, "
    "n.linked AS linked, n.pick_bar AS pick_bar, n.indexed_at AS indexed_at, n.ctime_ns AS ctime_ns, "
    "n.inode AS inode ORDER BY n.path LIMIT $limit"
)
EXPORT_LINKS = (
    "UNWIND $paths AS path MATCH (n:Image {path: path})-[r:SIMILAR_TO]-(m:Image) "
    "RETURN path, m.path AS other, r.score AS score"
)

# -- linking ------------------------------------------------------------------------------
# Vector indexes are updated as part of a transaction's commit (index updates are the
# last step of applying it: https://neo4j.com/developer/kb/neo4j-current-transaction-commit-process-order),
# so a search sees every committed embedding, only not the writes of its own transaction
# ("Changes made within the same transaction are not visible to the index",
# https://neo4j.com/docs/cypher-manual/current/indexes/semantic-indexes/vector-indexes/,
# Limitations). The index does not lag behind commits: link() searches in a read
# transaction of its own once upsert has committed.

# The batch's stored images and their embedding digests.
PRESENT = "UNWIND $paths AS path MATCH (n:Image {path: path}) RETURN path, n.embedding_digest AS digest"

# Each path's ANN candidates, re-scored exactly on the stored float32 values (not the
# index's quantized copy); ``score`` is Neo4j's (1 + cosine) / 2.
CANDIDATES = """
UNWIND $paths AS path
MATCH (n:Image {path: path})
CALL db.index.vector.queryNodes($index, $candidates, n.embedding) YIELD node
WITH path, n, node
WHERE node <> n
WITH path, node, vector.similarity.cosine(n.embedding, node.embedding) AS score
WHERE score >= $min_score
RETURN path, node.path AS neighbour, node.embedding_digest AS digest, score
"""

# Link and remove transactions take this lock first, so they run one at a time as in the
# embedded store: without it, a relink reading its image's links (read committed) could
# drop a link another worker committed after that read, and nothing would restore it.
SERIALISE = "MATCH (s:ImgwatchStore {key: 'store'}) SET s.write_seq = coalesce(s.write_seq, 0) + 1"

# Under the lock: which of the images a search saw (path, digest) changed or vanished since.
CHANGED_SINCE = """
UNWIND $rows AS row
OPTIONAL MATCH (n:Image {path: row.path})
WITH row, n
WHERE n IS NULL OR coalesce(n.embedding_digest <> row.digest, true)
RETURN row.path AS path
"""

FORMER_LINKS = """
UNWIND $paths AS path
MATCH (n:Image {path: path})-[:SIMILAR_TO]-(o:Image)
WHERE NOT o.path IN $paths
RETURN o.path AS outside, path AS inside, o.pick_bar AS bar,
       vector.similarity.cosine(n.embedding, o.embedding) AS score
"""

MARK_LINKED = """
UNWIND $rows AS row
MATCH (n:Image {path: row.path})
SET n.linked = true, n.pick_bar = row.bar
"""

MARK_LINKED_KEEP_BARS = "UNWIND $paths AS path MATCH (n:Image {path: path}) SET n.linked = true"

# The caller orders each pair (a < b), so a pair always has the same direction and
# MERGE finds the link another worker made. When MERGE has to create a relationship it
# first locks both end nodes and looks again ("LockingMerge", 5.x; "MergeInto", 2025.11+:
# https://neo4j.com/docs/cypher-manual/current/planning-and-tuning/operators/operators-detail/),
# so concurrent workers cannot both create one pair. Locks taken out of order can
# deadlock; that is a TransientError, which execute_write retries.
WRITE_LINKS = """
UNWIND $links AS link
MATCH (a:Image {path: link.a})
MATCH (b:Image {path: link.b})
MERGE (a)-[r:SIMILAR_TO]->(b)
SET r.score = link.score
RETURN count(r) AS written
"""


# -- commands imgwatch prints for the user to run (never sent) ----------------------------


def quoted_name(name: str) -> str:
    """A database or schema name as Cypher reads it, whatever it holds: in backticks, with
    a backtick inside doubled (a database name may hold a dash, which must be quoted)."""
    return "`" + name.replace("`", "``") + "`"


def create_database(name: str) -> str:
    return f"CREATE DATABASE {quoted_name(name)}"


def drop_index(name: str) -> str:
    return f"DROP INDEX {quoted_name(name)}"


# Empties a store of its images in batches. CALL { ... } IN TRANSACTIONS only runs in an
# implicit (auto-commit) transaction: Neo4j Browser needs the ``:auto`` prefix for it;
# cypher-shell runs it as is.
DELETE_IMAGES = "MATCH (n:Image) CALL (n) { DETACH DELETE n } IN TRANSACTIONS"
