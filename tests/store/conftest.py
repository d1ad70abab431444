"""Store fixtures: every backend behind the same ``store`` fixture."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from imgwatch.store import GraphStore
from tests.helpers import DIM, MODEL, open_backend


@pytest.fixture(params=["embedded", "neo4j"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GraphStore]:
    """An empty store of each backend, with MODEL/DIM recorded."""
    opened = open_backend(request.param, tmp_path)
    try:
        opened.ensure_model(MODEL, DIM)
        yield opened
    finally:
        opened.close()
