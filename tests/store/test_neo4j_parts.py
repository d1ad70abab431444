"""The Neo4j backend's pure parts, one group per behaviour (no server)."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import types

import numpy as np
import pytest
from neo4j.exceptions import ClientError, ServiceUnavailable

from imgwatch.store import StoreUnavailable
from imgwatch.store.linking import FormerLink, plan_links
from imgwatch.store.neo4j import cypher as q
from imgwatch.store.neo4j.driver import (
    ACQUISITION_TIMEOUT_ERROR,
    OncePerNotification,
    driver_error_class,
    is_acquisition_timeout,
    notify_once,
    translate_error,
)
from imgwatch.store.neo4j.schema import (
    blocking_index_message,
    embedding_indexes,
    reset_hint,
    score_index,
    unique_constraint,
)
from imgwatch.store.neo4j.values import (
    as_vector,
    candidate_score_bound,
    candidates_from_rows,
    cosine_to_score,
    former_links_from_rows,
    under_range,
    within_batch,
)

URI = "neo4j://db.example:7687"


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


# -- importing with driver 5 and 6 ---------------------------------------------------------


def test_the_backend_imports_in_a_fresh_interpreter() -> None:
    result = run_python("import imgwatch.store.neo4j as m; print(m.Neo4jGraphStore.__name__)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Neo4jGraphStore"


def test_the_backend_imports_with_a_driver_lacking_the_acquisition_timeout_error() -> None:
    # Driver 5.x has no ConnectionAcquisitionTimeoutError (it arrived in 6.0).
    result = run_python(
        "import neo4j.exceptions as e\n"
        "if hasattr(e, 'ConnectionAcquisitionTimeoutError'): del e.ConnectionAcquisitionTimeoutError\n"
        "from imgwatch.store.neo4j import driver, Neo4jGraphStore\n"
        "print(driver.ACQUISITION_TIMEOUT_ERROR)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None"


def test_the_error_class_lookup_is_safe_when_the_driver_lacks_it() -> None:
    assert driver_error_class(types.ModuleType("old_exceptions"), "ConnectionAcquisitionTimeoutError") is None
    assert driver_error_class(types.SimpleNamespace(ConnectionAcquisitionTimeoutError="not a class"),
                              "ConnectionAcquisitionTimeoutError") is None
    assert driver_error_class(types.SimpleNamespace(Boom=KeyError), "Boom") is KeyError


def test_acquisition_timeouts_are_recognised_in_driver_5_and_6_form() -> None:
    text = "failed to obtain a connection from the pool within 10.0s (timeout)"
    assert is_acquisition_timeout(ClientError(text))  # driver 5 raises a ClientError
    if ACQUISITION_TIMEOUT_ERROR is not None:
        assert is_acquisition_timeout(ACQUISITION_TIMEOUT_ERROR(text))
    assert not is_acquisition_timeout(ClientError("Invalid input 'MATC'"))
    assert not is_acquisition_timeout(ServiceUnavailable("Couldn't connect"))


# -- counting links: no labels, so the count store answers ----------------------------------


def test_the_link_count_has_no_labels_so_the_count_store_answers_it() -> None:
    assert re.fullmatch(r"MATCH \(\)-\[r:SIMILAR_TO\]->\(\) RETURN count\(r\) AS count", q.COUNT_LINKS)
    assert re.fullmatch(r"MATCH \(n:Image\) RETURN count\(n\) AS count", q.COUNT_IMAGES)


# -- within-batch pairs scored in Python ----------------------------------------------------


def test_pairs_within_a_batch_are_scored_from_the_vectors_in_hand() -> None:
    a = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    b = np.array([0.9, np.sqrt(1 - 0.81), 0.0], dtype=np.float32)
    c = np.array([0.0, 0.0, 1.0], dtype=np.float32)

    pairs = within_batch({"/a": a, "/b": b, "/c": c}, threshold=0.5)

    assert [p for p, _ in pairs["/a"]] == ["/b"] and pairs["/a"][0][1] == pytest.approx(0.9, abs=1e-6)
    assert [p for p, _ in pairs["/b"]] == ["/a"] and pairs["/c"] == []
    assert within_batch({"/a": a}, 0.5) == {"/a": []}


def test_the_link_statements_run_no_search_under_the_lock() -> None:
    # The only statements that search (queryNodes) are CANDIDATES, NEAREST and PENDING_CANDIDATES; none
    # takes the lock. (switch_space runs PENDING_CANDIDATES under it only for the images written since
    # it planned the new space's links from read transactions.)
    searching = [name for name, text in vars(q).items() if name.isupper() and "queryNodes" in text]
    assert sorted(searching) == ["CANDIDATES", "NEAREST", "PENDING_CANDIDATES"]
    assert "write_seq" not in q.CANDIDATES and "write_seq" not in q.PENDING_CANDIDATES


# -- file_states below a directory: one range -----------------------------------------------


@pytest.mark.parametrize(("under", "expected"), [
    ("/a/b", ("/a/b", "/a/b/", "/a/b0")), ("/a/b/", ("/a/b", "/a/b/", "/a/b0")), ("/", None), (None, None),
])
def test_a_directory_is_its_own_path_plus_one_range(under: str | None, expected: tuple[str, str, str] | None) -> None:
    assert under_range(under) == expected


def test_the_range_holds_exactly_the_descendants() -> None:
    directory, prefix, upper = under_range("/a/b")  # type: ignore[misc]
    inside = ["/a/b/x", "/a/b/deep/y", "/a/b/~"]
    outside = ["/a/b", "/a/bc", "/a/b.jpg", "/a/b0", "/a/a/x", "/b"]
    assert all(prefix <= p < upper for p in inside)
    assert not any(prefix <= p < upper for p in outside)


def test_the_file_states_statement_is_a_range_without_or_or_starts_with() -> None:
    text = q.FILE_STATES_BELOW
    assert "n.path >= $prefix AND n.path < $upper" in text
    assert " OR " not in text and "STARTS WITH" not in text
    assert "ORDER BY n.path LIMIT $limit" in text and "n.path > $after" in text


# -- the threshold in cosine space ----------------------------------------------------------


def test_the_fetch_bound_never_exceeds_the_threshold_in_score_space() -> None:
    for threshold in (-1.0, -0.3, 0.0, 0.5, 0.8, 0.999, 1.0):
        assert candidate_score_bound(threshold) <= cosine_to_score(threshold)


def test_a_candidate_1e_6_below_the_threshold_is_fetched_but_not_linked() -> None:
    threshold = 0.8
    rows = [
        {"path": "/a", "neighbour": "/below", "score": cosine_to_score(threshold - 1e-6)},
        {"path": "/a", "neighbour": "/above", "score": cosine_to_score(threshold + 1e-6)},
    ]
    assert all(row["score"] >= candidate_score_bound(threshold) for row in rows)  # the server returns both

    plan = plan_links(candidates_from_rows(rows, ["/a", "/lonely"]), [], threshold, top_k=5)

    assert plan.links == {("/a", "/above"): pytest.approx(threshold + 1e-6)}
    assert plan.pick_bars == {"/a": threshold, "/lonely": threshold}


def test_former_link_rows_become_former_links_in_cosines() -> None:
    rows = [{"outside": "/o", "inside": "/i", "bar": 0.0, "score": cosine_to_score(0.5)},
            {"outside": "/p", "inside": "/i", "bar": None, "score": cosine_to_score(0.7)}]
    assert former_links_from_rows(rows) == [
        FormerLink("/o", "/i", 0.0, pytest.approx(0.5)),  # a bar of 0.0 stays a bar
        FormerLink("/p", "/i", None, pytest.approx(0.7)),
    ]


# -- acquisition timeouts: say what happened -------------------------------------------------


def test_an_acquisition_timeout_does_not_claim_retries() -> None:
    text = "failed to obtain a connection from the pool within 10.0s (timeout)"
    error = ACQUISITION_TIMEOUT_ERROR(text) if ACQUISITION_TIMEOUT_ERROR is not None else ClientError(text)

    translated = translate_error(error, uri=URI, acquisition_timeout=10.0, retried_for=0.4)

    message = str(translated)
    assert isinstance(translated, StoreUnavailable)
    assert URI in message and "within 10 s" in message and "not retried" in message
    assert "of retries" not in message and "\n" not in message


def test_a_retryable_error_reports_the_time_actually_spent_retrying() -> None:
    retried = translate_error(ServiceUnavailable("Couldn't connect"), uri=URI, acquisition_timeout=10.0,
                              retried_for=121.3)
    assert isinstance(retried, StoreUnavailable) and "after 121 s of retries" in str(retried)

    unretried = translate_error(ServiceUnavailable("Couldn't connect"), uri=URI, acquisition_timeout=10.0)
    assert isinstance(unretried, StoreUnavailable) and "retries" not in str(unretried)


# -- exported embeddings: lists and VECTOR values ---------------------------------------------


def test_embeddings_convert_from_lists_and_from_objects_with_to_numpy() -> None:
    class FakeVector:
        def to_numpy(self) -> np.ndarray:
            return np.array([0.6, 0.8], dtype=">f4")  # neo4j.vector.Vector hands out big-endian arrays

    for value in ([0.6, 0.8], FakeVector()):
        vector = as_vector(value)
        assert vector.dtype == np.float32 and vector.dtype.isnative
        np.testing.assert_allclose(vector, [0.6, 0.8], rtol=1e-7)
    with pytest.raises(Exception, match="no stored embedding"):
        as_vector(None, "/p/a.jpg")


def test_embeddings_convert_from_the_drivers_vector_type() -> None:
    vector_module = pytest.importorskip("neo4j.vector")  # driver 6 and later
    value = vector_module.Vector(np.array([0.6, 0.8], dtype=np.float32))
    converted = as_vector(value)
    assert converted.dtype == np.float32 and converted.dtype.isnative
    np.testing.assert_array_equal(converted, np.array([0.6, 0.8], dtype=np.float32))


# -- another vector index on (:Image).embedding --------------------------------------------


def index_row(name: str, labels: list[str], props: list[str], kind: str = "VECTOR") -> dict[str, object]:
    return {"name": name, "type": kind, "entityType": "NODE", "labelsOrTypes": labels, "properties": props,
            "options": {"indexConfig": {"vector.dimensions": 2048}}, "state": "ONLINE", "populationPercent": 100.0}


def test_vector_indexes_on_image_embedding_are_found_whatever_their_name() -> None:
    rows = [index_row("theirs", ["Image"], ["embedding"]), index_row("range", ["Image"], ["embedding"], "RANGE"),
            index_row("other_label", ["Photo"], ["embedding"]), index_row(q.VECTOR_INDEX, ["Image"], ["embedding"])]
    assert [row["name"] for row in embedding_indexes(rows)] == ["theirs", q.VECTOR_INDEX]


def test_the_blocking_index_message_names_it_and_how_to_drop_it() -> None:
    message = blocking_index_message([index_row("theirs", ["Image"], ["embedding"])], f"{URI} database neo4j")
    assert "'theirs'" in message and "DROP INDEX `theirs`" in message and URI in message
    assert q.VECTOR_INDEX in message and "model" not in message


def test_uniqueness_constraints_are_recognised_in_every_spelling() -> None:
    def row(kind: str, entity: str = "NODE", labels: tuple[str, ...] = ("Image",),
            props: tuple[str, ...] = ("path",)) -> dict[str, object]:
        return {"name": kind.lower(), "type": kind, "entityType": entity, "labelsOrTypes": list(labels),
                "properties": list(props)}

    for kind in ("UNIQUENESS", "NODE_PROPERTY_UNIQUENESS", "NODE_KEY"):
        assert unique_constraint([row(kind)], "Image", "path") == kind.lower()
    assert unique_constraint([row("RELATIONSHIP_UNIQUENESS", "RELATIONSHIP")], "Image", "path") is None
    assert unique_constraint([row("NODE_PROPERTY_EXISTENCE")], "Image", "path") is None
    assert unique_constraint([row("UNIQUENESS", props=("path", "size"))], "Image", "path") is None


# -- server notifications: each one once ---------------------------------------------------


class Printer:
    """Shaped like the driver's NotificationPrinter: the notification and the query."""

    def __init__(self, status: str, description: str, query: str) -> None:
        self.notification = types.SimpleNamespace(gql_status=status, status_description=description)
        self.query = query

    def __str__(self) -> str:
        return f"{self.notification} for query: {self.query!r}"


def test_each_distinct_notification_is_logged_once() -> None:
    logger = logging.getLogger("tests.neo4j.notifications")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    once = notify_once(logger)
    try:
        deprecated = ("01N01", "warn: feature deprecated. 'db.index.vector.queryNodes' is deprecated")
        for query in ("CALL db.index.vector.queryNodes(...) // a", "CALL db.index.vector.queryNodes(...) // b"):
            logger.warning("Received notification from DBMS server: %s", Printer(*deprecated, query))
        logger.info("Received notification from DBMS server: %s", Printer("03N90", "info: cartesian product", "x"))
        logger.warning("Received notification from DBMS server: %s", Printer(*deprecated, "again"))
        logger.warning("plain %s", "text")
        logger.warning("plain %s", "text")
    finally:
        logger.removeHandler(handler)
        logger.removeFilter(once)

    passed = [r.args[0].query if isinstance(r.args[0], Printer) else r.getMessage() for r in records]
    # The deprecation once (its first query), the other notice once, the plain line once.
    assert passed == ["CALL db.index.vector.queryNodes(...) // a", "x", "plain text"]


def test_the_notification_filter_is_installed_once_and_leaves_the_level_alone() -> None:
    logger = logging.getLogger("tests.neo4j.install")
    logger.setLevel(logging.NOTSET)
    first = notify_once(logger)
    try:
        assert notify_once(logger) is first
        assert [f for f in logger.filters if isinstance(f, OncePerNotification)] == [first]
        assert logger.level == logging.NOTSET  # later deprecations stay visible
    finally:
        logger.removeFilter(first)


def test_the_driver_notification_logger_is_not_silenced_by_the_backend() -> None:
    import imgwatch.store.neo4j  # noqa: F401 - importing must not touch logging either

    assert logging.getLogger("neo4j.notifications").level < logging.ERROR


# -- the reset hint works in Neo4j Browser ---------------------------------------------------


def test_the_delete_hint_has_the_auto_prefix_browser_needs() -> None:
    hint = reset_hint("neo4j")
    assert ":auto MATCH (n:Image) CALL (n) { DETACH DELETE n } IN TRANSACTIONS" in hint
    assert "'neo4j'" in hint


def test_upsert_facts_carry_no_embedding_and_embeddings_go_only_with_their_digest() -> None:
    assert "embedding AS" not in q.UPSERT_FACTS and "setNodeVectorProperty" not in q.UPSERT_FACTS
    assert "RETURN row.path AS changed" in q.UPSERT_FACTS
    assert "setNodeVectorProperty(n, 'embedding', row.embedding)" in q.SET_EMBEDDINGS
    assert "n.embedding_digest = row.digest" in q.SET_EMBEDDINGS


# -- schema statements: look, then create ----------------------------------------------------


def test_schema_statements_show_before_they_create() -> None:
    assert q.SHOW_CONSTRAINTS.startswith("SHOW CONSTRAINTS YIELD")
    assert q.SHOW_INDEXES.startswith("SHOW INDEXES YIELD")
    for statement in (q.CREATE_PATH_CONSTRAINT, q.CREATE_STORE_CONSTRAINT, q.CREATE_VECTOR_INDEX.format(dim=2048)):
        assert "IF NOT EXISTS" in statement  # still safe when two openers race
    assert "`vector.dimensions`: 2048" in q.CREATE_VECTOR_INDEX.format(dim=2048)


# -- links_at_least: a range on SIMILAR_TO.score, paged after the last row ----------------------


def test_the_score_index_is_a_relationship_range_index_found_whatever_its_name() -> None:
    assert q.CREATE_SCORE_INDEX == (
        f"CREATE RANGE INDEX {q.SCORE_INDEX} IF NOT EXISTS FOR ()-[r:SIMILAR_TO]-() ON (r.score)")
    rows = [
        {"name": "node_score", "type": "RANGE", "entityType": "NODE", "labelsOrTypes": ["SIMILAR_TO"],
         "properties": ["score"]},
        {"name": "text_score", "type": "TEXT", "entityType": "RELATIONSHIP", "labelsOrTypes": ["SIMILAR_TO"],
         "properties": ["score"]},
        {"name": "theirs", "type": "RANGE", "entityType": "RELATIONSHIP", "labelsOrTypes": ["SIMILAR_TO"],
         "properties": ["score"]},
    ]
    assert score_index(rows) == rows[2]
    assert score_index(rows[:2]) is None


def test_the_links_statement_seeks_a_score_range_and_reads_each_stored_direction_once() -> None:
    statement = " ".join(q.LINKS_AT_LEAST.split())
    assert "MATCH (a:Image)-[r:SIMILAR_TO]->(b:Image)" in statement  # directed: each link once
    assert "WHERE r.score >= $score AND" in statement  # the range the index answers
    assert "ORDER BY score, low, high LIMIT $limit" in statement
