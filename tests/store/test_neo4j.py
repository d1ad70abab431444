"""Neo4j backend parts that need no server: score conversion, statement batching, errors.

The behaviour shared with the embedded store is in test_contract.py, which runs on
Neo4j when IMGWATCH_TEST_NEO4J_URI is set.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from imgwatch.config import ConfigError, load_config, neo4j_password
from imgwatch.store import StoreUnavailable, open_store
from imgwatch.store.neo4j import (
    MAX_FLOATS_PER_STATEMENT,
    MAX_ROWS_PER_STATEMENT,
    candidate_count,
    cosine_to_score,
    parse_version,
    score_to_cosine,
    statement_batches,
)
from tests.helpers import make_config


def closed_port() -> int:
    """A local TCP port that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(("cosine", "score"), [(1.0, 1.0), (0.0, 0.5), (-1.0, 0.0), (0.8, 0.9), (-0.3, 0.35)])
def test_cosines_map_to_neo4j_scores_and_back(cosine: float, score: float) -> None:
    assert cosine_to_score(cosine) == pytest.approx(score)
    assert score_to_cosine(score) == pytest.approx(cosine)


def test_score_conversion_preserves_order_and_matches_real_vectors() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 2048)).astype(np.float32)
    cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    # Neo4j's score for two vectors is (1 + cos) / 2: a threshold converted going in
    # selects exactly the pairs whose converted-back score passes the raw threshold.
    for threshold in (cosine - 1e-4, cosine + 1e-4):
        assert (cosine_to_score(cosine) >= cosine_to_score(threshold)) == (cosine >= threshold)
    assert score_to_cosine(cosine_to_score(cosine)) == pytest.approx(cosine, abs=1e-12)


def test_statement_batches_cover_every_item_once_in_order_within_bounds() -> None:
    items = list(range(2345))
    for floats in (1, 16, 2048, 3 * MAX_FLOATS_PER_STATEMENT):
        batches = [list(batch) for batch in statement_batches(items, floats)]
        assert [x for batch in batches for x in batch] == items
        assert all(1 <= len(batch) <= MAX_ROWS_PER_STATEMENT for batch in batches)
        # The float bound holds unless a single item is already larger than it.
        assert all(len(batch) * floats <= MAX_FLOATS_PER_STATEMENT or len(batch) == 1 for batch in batches)
    assert [len(b) for b in statement_batches(items, 2048)][:2] == [488, 488]  # 1M floats / 2048
    assert list(statement_batches([], 2048)) == []


def test_candidate_counts_over_fetch() -> None:
    assert candidate_count(10) == 40  # k + 30 beats 3k for small k
    assert candidate_count(100) == 300
    assert candidate_count(10, excluded=5) == 45


@pytest.mark.parametrize(("text", "version"), [("5.26.3", (5, 26, 3)), ("2025.10.1", (2025, 10, 1)),
                                               ("5.26.0-aura", (5, 26, 0)), ("5.15.0", (5, 15, 0))])
def test_server_versions_compare_numerically(text: str, version: tuple[int, ...]) -> None:
    assert parse_version(text) == version
    assert (parse_version(text) >= (5, 26)) == (version >= (5, 26))


def test_an_unreachable_server_fails_fast_naming_the_uri(tmp_path: Path) -> None:
    uri = f"bolt://127.0.0.1:{closed_port()}"
    config = make_config(tmp_path, **{"general.store": "neo4j", "neo4j.uri": uri})

    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as raised:
        open_store(config)

    assert time.monotonic() - started < 10
    message = str(raised.value)
    assert uri in message and "neo4j.uri" in message and "\n" not in message


@pytest.mark.parametrize(
    "command", [["status"], ["similar", "/photos/a.jpg"], ["doctor"], ["migrate", "--to", "neo4j"], ["run"]]
)
def test_cli_commands_report_an_unreachable_neo4j_in_one_line(tmp_path: Path, command: list[str]) -> None:
    uri = f"neo4j://127.0.0.1:{closed_port()}"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "IMGWATCH_GENERAL_STORE": "neo4j",
           "IMGWATCH_NEO4J_URI": uri, "IMGWATCH_GENERAL_DATA_DIR": str(tmp_path / "data"),
           "IMGWATCH_QUEUE_REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0"}
    if command == ["run"]:  # with its own embedded queue, so that the store is what fails
        del env["IMGWATCH_QUEUE_REDIS_URL"]
        command = ["run", str(tmp_path), "--weights", "random"]
    if command[0] == "migrate":  # the source (embedded) must exist for the target to be tried
        with open_store(make_config(tmp_path / "data")) as store:
            store.ensure_model("m", 4)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "imgwatch", *command], env=env, capture_output=True,
                            text=True, timeout=60)

    assert time.monotonic() - started < 20
    if command == ["status"]:  # status still reports, with the store marked unavailable
        assert result.returncode == 0 and uri in result.stdout
        return
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if '"event"' not in line]  # run logs JSON first
    assert len(errors) == 1 and errors[0].startswith("imgwatch: error: ")
    assert uri in errors[0] and "Traceback" not in result.stderr


def test_the_neo4j_password_never_comes_from_a_config_file(tmp_path: Path) -> None:
    config_file = tmp_path / "c.toml"
    config_file.write_text('[neo4j]\npassword = "hunter22"\n')
    with pytest.raises(ConfigError, match="IMGWATCH_NEO4J_PASSWORD"):
        load_config(config_file, environ={})


def test_the_neo4j_password_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    config = load_config(overrides={"neo4j.password_file": str(secret)}, environ={})
    assert neo4j_password(config, environ={}) == "from-file"
    assert neo4j_password(config, environ={"IMGWATCH_NEO4J_PASSWORD": "from-env"}) == "from-env"
    assert neo4j_password(load_config(environ={}), environ={}) is None
    config.neo4j.password_file = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match="missing"):
        neo4j_password(config, environ={})


@pytest.mark.parametrize("uri", ["http://localhost:7474", "localhost:7687", "neo4j+x://host"])
def test_uris_the_driver_cannot_use_are_config_errors(uri: str) -> None:
    with pytest.raises(ConfigError, match=r"neo4j\.uri"):
        load_config(overrides={"neo4j.uri": uri}, environ={})
