"""Store fixtures: every backend behind the same ``backend_store`` fixture."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from imgwatch.store import GraphStore
from tests.helpers import DIM, MODEL, open_backend


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where a test opens its own EmbeddedGraphStore (none is there yet)."""
    return tmp_path / "store.sqlite3"


@pytest.fixture(params=["embedded", "neo4j"])
def backend_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GraphStore]:
    """An empty store of each backend, with MODEL/DIM recorded."""
    opened = open_backend(request.param, tmp_path)
    try:
        opened.ensure_model(MODEL, DIM)
        yield opened
    finally:
        opened.close()
